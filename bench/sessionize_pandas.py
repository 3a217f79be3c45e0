"""The single-process side of ``bench/sessionize.py``: the pandas reference of the sessionize job
(``contract.reference``, docs/design.md §3) on raw text inputs, printing the stats.json figures.

    python bench/sessionize_pandas.py --format lastfm --input var/bench/lastfm_1000000.tsv.gz
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from contract import reference
from contract.constants import DEFAULT_GAP_SECONDS, TEXT_LOG_FORMATS


def sessionize_pandas(
    fmt: str, inputs: list[str], session_gap_seconds: float | None = None, run_date: str | None = None
) -> dict[str, Any]:
    """stats.json of the job for raw ``inputs`` of ``fmt`` (no bad-row gate: the benchmark measures)."""
    out = reference.sessionize_files(fmt, inputs, session_gap_seconds, run_date, max_bad_fraction=1.0)
    return out.stats


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--format", required=True, choices=TEXT_LOG_FORMATS, help="raw input layout")
    parser.add_argument("--input", required=True, action="append", dest="inputs", help="input file (repeatable)")
    parser.add_argument("--session-gap-seconds", type=float, default=None,
                        help=f"session gap (default per format: {DEFAULT_GAP_SECONDS})")  # fmt: skip
    parser.add_argument("--run-date", default=None, help="leave out events after this UTC day (YYYY-MM-DD)")
    args = parser.parse_args(argv)
    t0 = time.perf_counter()
    stats = sessionize_pandas(args.format, args.inputs, args.session_gap_seconds, args.run_date)
    stats["elapsed_seconds"] = round(time.perf_counter() - t0, 3)
    json.dump(stats, sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
