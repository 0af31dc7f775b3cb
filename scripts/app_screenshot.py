"""Screenshot of the app with real content for the README (docs/images/app.png).

    python scripts/app_screenshot.py --pipeline runs/demo/base --adapter runs/demo/invdiff

Serves the app, fills in the prompts, clicks Generate in headless Chromium (Debian's `chromium`), waits
for both grids and the plots, and saves a full-page screenshot.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from invgen.app import launch

CHROMIUM = "/usr/bin/chromium"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", default="runs")
    ap.add_argument("--pipeline", default="runs/demo/base")
    ap.add_argument("--adapter", default="runs/demo/invdiff")
    ap.add_argument("--prompts", default="a photo of the digit 0\na photo of the digit 3\na photo of the digit 7")
    ap.add_argument("--per-prompt", type=int, default=16)
    ap.add_argument("--out", type=Path, default=Path("docs/images/app.png"))
    ap.add_argument("--width", type=int, default=1400)
    args = ap.parse_args()

    from playwright.sync_api import sync_playwright

    demo = launch(args.runs, pipeline=args.pipeline, adapter=args.adapter, block=False)
    n = args.per_prompt * len([p for p in args.prompts.splitlines() if p.strip()])
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
            page = browser.new_page(viewport={"width": args.width, "height": 1000})
            page.goto(demo.local_url, wait_until="networkidle")
            page.fill("#prompts textarea", args.prompts)
            page.locator("input[aria-label='number input for Images per prompt']").fill(str(args.per_prompt))
            page.keyboard.press("Tab")
            page.click("#generate")
            for gallery in ("#base-gallery", "#debiased-gallery"):
                page.wait_for_function(f"document.querySelectorAll('{gallery} img').length >= {n}",
                                       timeout=300_000)
            page.wait_for_timeout(1500)  # let the plot images finish loading
            args.out.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(args.out), full_page=True)
            browser.close()
    finally:
        demo.close()
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
