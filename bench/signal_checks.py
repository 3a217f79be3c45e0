"""Where is the signal? Simple predictors on a validation split (analysis for docs/quality.md).

Measured on a validation split carved from *train only* (each user's last ``--val-sessions``
training sessions; test is never read), with the protocol of docs/design.md §5:

- return time: MAE of conditional medians that use the signals a richer time model could add (hour
  of day and day of week at which the previous session ended, the median of only the user's most
  recent gaps, other per-user quantiles), against the per-user and global medians; gaps capped at
  500 h;
- next item: Recall@20 / MRR@20 of Markov-1 on global transitions and of a blend with the user's
  own transitions (``p_global(b|a) + lam * p_user(b|a)``), ties counted against the model.

    .venv/bin/python bench/signal_checks.py --out bench/results/signal_checks.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from contract.reference import sessionize_frame
from thrnn.data import SessionData, load_sessions, read_jodie_tsv
from thrnn.io import Split

ROOT = Path(__file__).resolve().parents[1]

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


def transitions(data: SessionData, val_sessions: int, lams: tuple[float, ...] = (0.0, 1.0, 3.0)) -> dict:
    """Recall@20 / MRR@20 on the validation targets of global Markov-1 blended with per-user Markov-1."""
    val = data.validation_mask(val_sessions)
    train = ~data.is_test & ~val
    n = data.n_items + 1

    def pairs(mask: torch.Tensor) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        rows = torch.nonzero(mask).squeeze(1)
        x, lengths = data.items[rows], data.lengths[rows]
        valid = torch.arange(x.shape[1] - 1)[None] < (lengths - 1)[:, None]
        users = data.users[rows][:, None].expand(-1, x.shape[1] - 1)
        return users[valid].numpy(), x[:, :-1][valid].numpy(), x[:, 1:][valid].numpy()

    tu, ta, tb = pairs(train)
    vu, va, vb = pairs(val)
    glob = np.zeros((n, n))
    np.add.at(glob, (ta, tb), 1.0)
    pop = np.bincount(ta, minlength=n) + np.bincount(tb, minlength=n)
    glob_p = glob / np.maximum(glob.sum(1, keepdims=True), 1.0)
    user_counts = pd.DataFrame({"u": tu, "a": ta, "b": tb}).value_counts().rename("c").reset_index()
    user_counts["p"] = user_counts["c"] / user_counts.groupby(["u", "a"])["c"].transform("sum")
    personal = {k: g for k, g in user_counts.groupby(["u", "a"])}
    out = {"n_validation_targets": int(len(vb))}
    for lam in lams:
        ranks = np.empty(len(vb), dtype=np.int64)
        for i, (u, a, b) in enumerate(zip(vu, va, vb, strict=True)):
            s = glob_p[a] + pop * 1e-9  # popularity breaks ties, and ranks items after an unseen a
            if lam and (u, a) in personal:
                g = personal[(u, a)]
                s = s.copy()
                s[g["b"].to_numpy()] += lam * g["p"].to_numpy()
            s[0] = -np.inf
            ranks[i] = 1 + int((s > s[b]).sum()) + int((s == s[b]).sum()) - 1
        hit = ranks <= 20
        out[f"markov1_user_blend_{lam:g}"] = {"recall@20": float(hit.mean()),
                                              "mrr@20": float(np.where(hit, 1.0 / ranks, 0.0).mean())}
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
        results[name] = {"return_time_mae_hours": predictors(data, args.val_sessions),
                         "next_item": transitions(data, args.val_sessions)}
        print(name, json.dumps(results[name]), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_suffix(".tmp")
    tmp.write_text(json.dumps({"val_sessions": args.val_sessions, "results": results}, indent=2))
    tmp.replace(args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
