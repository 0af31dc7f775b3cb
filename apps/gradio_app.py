"""The invgen demo app: `python apps/gradio_app.py [--runs runs/] [--port N]` (same as `invgen app`).

Everything is in `invgen.app`; this file only exists so the app can be started (or deployed, e.g. as a
Hugging Face Space) without the `invgen` command.
"""

import sys

from invgen.cli import main

if __name__ == "__main__":
    sys.exit(main(["app", *sys.argv[1:]]))
