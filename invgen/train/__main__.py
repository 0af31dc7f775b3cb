"""`accelerate launch -m invgen.train JOB --config FILE [--resume] [key.sub=value ...]`."""

from __future__ import annotations

import argparse
import sys

from invgen.errors import InvgenError, one_line


def _jobs():
    from invgen.train.jobs import JOBS

    return JOBS


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m invgen.train", description=__doc__)
    jobs = ["base", "groups", "invdiff", "evaluate", "cdvg", "translator"]
    parser.add_argument("job", choices=jobs, help="what to run")
    parser.add_argument("--config", help="YAML config file")
    parser.add_argument("--resume", action="store_true", help="continue from the newest checkpoint")
    parser.add_argument("overrides", nargs="*", help="config overrides such as train.steps=100")
    # Intermixed: overrides may come after --config, as the README shows.
    args = parser.parse_intermixed_args(argv)
    try:
        out = _jobs()[args.job](args.config, args.overrides, args.resume)
    except InvgenError as e:
        print(f"error: {one_line(e)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: resume with --resume", file=sys.stderr)
        return 130
    if out is not None:
        print(f"{args.job}: wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
