"""Return time on the raw Last.fm-1K excerpt: THRNN against the per-user baselines.

``../shared/data/lastfm-1k/`` holds one user's complete raw history (user_000001, 2006-2009, in the
original Last.fm-1K layout): the one real data set with timestamps besides the two JODIE excerpts of
``bench/quality.py``. This runs the product path on it as a new user would (the Spark job with the
``lastfm`` format and its 3600 s sessions, ``thrnn train`` with the format's preset, ``thrnn
evaluate``, the return-time baselines) and writes ``bench/results/return_time_lastfm1k.json``: the MAE
of the median return time and the calibration figures of THRNN beside the global and per-user median,
Hawkes and the shrunk per-user log-normal. One user means the per-user and the global median are the
same baseline. Skips with a message when ``../shared/data`` is absent.

    .venv/bin/python bench/return_time_lastfm1k.py [--seed 42] [--work DIR]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.quality import machine_info
from thrnn.files import write_json_atomic

REPO = Path(__file__).resolve().parents[1]

RAW = REPO.parent / "shared" / "data" / "lastfm-1k" / "user_000001_full_history.tsv.gz"
OUT = REPO / "bench" / "results" / "return_time_lastfm1k.json"
TIME_BASELINES = ("median_global", "median_user", "hawkes", "lognormal_user")
FIGURES = ("mae_hours", "nll_per_gap", "ece_1d", "ece_7d", "ece_30d", "brier_1d", "n_gaps")


def run(work: Path, seed: int) -> dict[str, Any]:
    from jobs.sessionize import run as sessionize
    from jobs.spark import build_spark
    from thrnn.baselines import non_neural_baselines
    from thrnn.checkpoint import load_run
    from thrnn.config import config_for
    from thrnn.data import load_sessions
    from thrnn.evaluate import metrics_from_predictions
    from thrnn.inference import predict_test
    from thrnn.io import read_split
    from thrnn.train import train_sessions

    spark = build_spark("bench-return-time-lastfm1k", conf={"spark.ui.enabled": "false"})
    try:
        stats = sessionize(spark, "lastfm", [str(RAW)], work / "split")
    finally:
        spark.stop()
    split = read_split(work / "split")
    data = load_sessions(split)
    cfg = config_for("lastfm", "thrnn", seed=seed, device="cpu")
    t0 = time.monotonic()
    train_sessions(data, work / "run", cfg, progress=False)
    model, cfg = load_run(work / "run")
    thrnn = metrics_from_predictions(predict_test(model, data, cfg))
    base = non_neural_baselines(split, session_aware=False)
    return {
        "sessions": stats.get("sessions"), "users": stats.get("users"),
        "train_seconds": round(time.monotonic() - t0, 1), "seed": seed,
        "thrnn": {k: thrnn.get(k) for k in FIGURES},
        "baselines": {name: {k: base[name].get(k) for k in FIGURES} for name in TIME_BASELINES},
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--work", type=Path, default=None, help="folder for the split and the run (default: temporary)")
    args = p.parse_args(argv)
    if not RAW.exists():
        print(f"bench/return_time_lastfm1k.py: skipped, {RAW} is absent (../shared/data must be beside the checkout)")
        return 0
    work = args.work or Path(tempfile.mkdtemp(prefix="bench-rt-lastfm1k-"))
    try:
        result = run(work, args.seed)
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)
    command = ("python bench/return_time_lastfm1k.py " + " ".join(sys.argv[1:] if argv is None else argv)).strip()
    write_json_atomic({"command": command, "machine": machine_info("cpu"), **result}, OUT)
    print(json.dumps({"thrnn": result["thrnn"]["mae_hours"],
                      **{k: v["mae_hours"] for k, v in result["baselines"].items()}}, indent=1))
    print(f"-> {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
