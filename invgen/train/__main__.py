"""`accelerate launch -m invgen.train JOB --config FILE [--resume] [key.sub=value ...]`."""

from __future__ import annotations

import argparse
import sys

from invgen.errors import InvgenError, one_line


def main(argv: list[str] | None = None) -> int:
    from invgen.train.jobs import JOBS

    parser = argparse.ArgumentParser(prog="python -m invgen.train", description=__doc__)
    parser.add_argument("job", choices=JOBS.names(), help="; ".join(f"{e.name}: {e.help}" for e in JOBS))
    parser.add_argument("--config", help="YAML config file")
    parser.add_argument("--resume", action="store_true", help="continue from the newest checkpoint")
    parser.add_argument("overrides", nargs="*", help="config overrides such as train.steps=100")
    # Intermixed: overrides may come after --config, as the README shows.
    args = parser.parse_intermixed_args(argv)
    try:
        out = JOBS.resolve(args.job)(args.config, args.overrides, args.resume)
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
