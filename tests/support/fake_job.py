"""The job the launcher tests run (``python -m tests.support.fake_job --marker PATH ...``): it logs two
steps, maybe sleeps, writes its success marker and exits, or gives up with the exit code asked for."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from jobs.cpus import cores


def main() -> int:
    """The job the fake ECS runs: log two steps, maybe sleep, write the marker, exit."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--marker", default="")
    parser.add_argument("--exit", type=int, default=0)
    parser.add_argument("--sleep", type=float, default=0)
    args = parser.parse_args()
    print(f"job: {cores()} threads", flush=True)  # what its pools would be sized to
    print("job: step 1 of 2", flush=True)
    time.sleep(args.sleep)
    print("job: step 2 of 2", flush=True)
    if args.exit:
        print(f"job: giving up with exit code {args.exit}", flush=True)
        return args.exit
    if args.marker:
        Path(args.marker).parent.mkdir(parents=True, exist_ok=True)
        Path(args.marker).write_text("{}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
