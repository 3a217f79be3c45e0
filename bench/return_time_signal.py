"""How much do simple return-time predictors beat the per-user median? (analysis for docs/quality.md)

The return-time target asks for an MAE 10 % below the best median baseline. This script measures,
on a validation split carved from *train only* (each user's last ``--val-sessions`` training
sessions; test is never read), the MAE of conditional medians that use the signals a richer time
model could add: the hour of day and the day of week at which the previous session ended, the
median of only the user's most recent gaps, and other per-user quantiles. Gaps are capped at 500 h
and masked as in the evaluation protocol (SPEC §5). Writes JSON to ``--out``.

    .venv/bin/python bench/return_time_signal.py --out bench/results/return_time_signal.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from thrnn.data import SessionData, load_sessions, read_jodie_tsv, sessionize_frame  # noqa: E402
from thrnn.io import Split  # noqa: E402

DATA = ROOT.parent / "shared" / "data"
DATASETS = {
    "lastfm": (DATA / "lastfm-1k-jodie-subset" / "lastfm_jodie_first10pct.tsv.gz", 3600),
    "reddit": (DATA / "reddit-jodie-subset" / "reddit_jodie_first20pct.tsv.gz", 1800),
}
CAP_HOURS = 500.0
MIN_GROUP = 5  # a (user, condition) median needs this many training gaps, else the user's median


def predictors(data: SessionData, val_sessions: int) -> dict[str, float]:
    """MAE (hours) on the validation gaps of each predictor fitted on the remaining training gaps."""
    val = data.validation_mask(val_sessions).numpy()
    train = (~data.is_test).numpy() & ~val
    ok = data.time_mask.numpy()
    prev_end = np.r_[np.nan, data.end_seconds.numpy()[:-1]]  # the session before row r (same user when ok)
    frame = pd.DataFrame({
        "user": data.users.numpy(),
        "gap": np.minimum(data.gap_hours.numpy(), CAP_HOURS),
        "hour_block": np.nan_to_num((prev_end / 3600 % 24) // 4),
        "weekday": np.nan_to_num((prev_end / 86400 + 3) % 7 // 1),  # 1970-01-01 was a Thursday
    })
    frame["weekend"] = frame["weekday"] >= 5
    fit, ev = frame[train & ok], frame[val & ok]
    glob = fit["gap"].median()
    user_median = ev["user"].map(fit.groupby("user")["gap"].median()).fillna(glob)

    def mae(pred: pd.Series | np.ndarray) -> float:
        return float(np.abs(ev["gap"].to_numpy() - np.asarray(pred, dtype=float)).mean())

    out = {"n_validation_gaps": int(len(ev)), "global_median": mae(np.full(len(ev), glob)),
           "user_median": mae(user_median)}
    for q in (0.3, 0.4, 0.6):
        out[f"user_quantile_{q}"] = mae(ev["user"].map(fit.groupby("user")["gap"].quantile(q)).fillna(glob))
    for k in (5, 10, 20):
        recent = fit.groupby("user")["gap"].apply(lambda s, k=k: s.iloc[-k:].median())
        out[f"user_median_last_{k}"] = mae(ev["user"].map(recent).fillna(glob))
    for cond in ("hour_block", "weekday", "weekend"):
        g = fit.groupby(["user", cond])["gap"].agg(["median", "size"])
        table = g.loc[g["size"] >= MIN_GROUP, "median"].to_dict()
        pred = [table.get(key, np.nan) for key in zip(ev["user"], ev[cond], strict=True)]
        out[f"user_median_by_{cond}"] = mae(np.where(np.isnan(pred), user_median, pred))
    by_hour = fit.groupby("hour_block")["gap"].median()
    out["global_median_by_hour_block"] = mae(ev["hour_block"].map(by_hour).fillna(glob))
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--datasets", nargs="+", choices=sorted(DATASETS), default=sorted(DATASETS))
    p.add_argument("--val-sessions", type=int, default=10, help="held-out last training sessions per user")
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args(argv)
    results = {}
    for name in args.datasets:
        path, gap = DATASETS[name]
        if not path.exists():
            raise SystemExit(f"{path} is absent (../shared/data must be beside the checkout)")
        data = load_sessions(Split(*sessionize_frame(read_jodie_tsv(str(path)), gap), {}))
        results[name] = predictors(data, args.val_sessions)
        print(name, json.dumps({k: round(v, 2) for k, v in results[name].items()}), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_suffix(".tmp")
    tmp.write_text(json.dumps({"val_sessions": args.val_sessions, "mae_hours": results}, indent=2))
    tmp.replace(args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
