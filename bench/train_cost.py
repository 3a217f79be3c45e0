"""Why THRNN trains at the speed it does on CPU: the work of one epoch and what one core delivers.

Counts, for the LastFM-JODIE training split (pandas sessionizer, 3600 s) and the paper's sizes
(hidden 100, user embedding 10, gap embedding 5, 15 earlier sessions, batch 100 users):

- GRU row-steps per epoch at each level without padding, the forward FLOPs of the GRUs and of the
  two item output layers (next item, first item), and forward + backward ~ 3x forward (also for a
  session GRU alone, the GRU4Rec-style model);
- the user-parallel batches: how many there are (at least the heaviest user's session count, since a
  user's sessions are sequential) and how many users and targets they hold;

and times, on one torch thread, the operators a training step is made of: the per-step GRU matrix
product at batch 5 and 100, an element-wise op, and the largest weight-gradient product of an
epoch. Results go to ``--out`` (JSON) and are summarised in docs/train_speed.md.

    .venv/bin/python bench/train_cost.py --out bench/results/train_cost.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from bench.train_speed import JODIE, hardware
from contract.reference import sessionize_frame
from thrnn.data import load_sessions, read_jodie_tsv, user_parallel_batches
from thrnn.io import Split

ROOT = Path(__file__).resolve().parents[1]


def _time(fn, repeat: int) -> float:
    for _ in range(max(10, repeat // 10)):
        fn()
    start = time.perf_counter()
    for _ in range(repeat):
        fn()
    return (time.perf_counter() - start) / repeat


def work(hidden: int = 100, user_emb: int = 10, gap_emb: int = 5, history: int = 15, batch: int = 100) -> dict:
    data = load_sessions(Split(*sessionize_frame(read_jodie_tsv(str(JODIE)), 3600), {}))
    train = ~data.is_test
    users = data.users[train].numpy()
    lengths = data.lengths[train].numpy()
    # index of each session within its user (rows are sorted by user, then time)
    start = np.r_[0, np.flatnonzero(np.diff(users)) + 1]
    index = np.arange(len(users)) - np.repeat(start, np.diff(np.r_[start, len(users)]))
    inter_steps = int(np.maximum(1, np.minimum(index, history)).sum())
    targets = int((lengths - 1).sum())
    gru = lambda i: 2 * 3 * hidden * (i + hidden)  # noqa: E731 - forward FLOPs of one GRU row-step
    fwd_gru = inter_steps * gru(hidden + user_emb + gap_emb) + targets * gru(hidden)
    fwd_out = 2 * hidden * data.n_items * (targets + len(users))
    batches = user_parallel_batches(data, train, batch)
    sizes = np.array([len(b) for b in batches])
    per_batch = np.array([int((data.lengths[torch.from_numpy(b)] - 1).sum()) for b in batches])
    return {
        "sessions": len(users), "targets": targets, "items": data.n_items,
        "inter_row_steps": inter_steps, "intra_row_steps": targets,
        "forward_gflop_gru": fwd_gru / 1e9, "forward_gflop_output": fwd_out / 1e9,
        "train_gflop_per_epoch": 3 * (fwd_gru + fwd_out) / 1e9,
        "train_gflop_per_epoch_session_gru_only": 3 * (targets * gru(hidden) + 2 * hidden * data.n_items * targets) / 1e9,
        "gflop_per_s_for_20k_targets_per_s": 3 * (fwd_gru + fwd_out) / 1e9 / (targets / 20_000),
        "batches": len(batches), "heaviest_user_sessions": int(np.bincount(users).max()),
        "full_batches": int((sizes == batch).sum()),
        "batch_users_p10_p50_p90": np.percentile(sizes, [10, 50, 90]).tolist(),
        "batch_targets_p10_p50_p90": np.percentile(per_batch, [10, 50, 90]).tolist(),
    }


def operators(hidden: int = 100, repeat: int = 2000) -> dict:
    torch.set_num_threads(1)
    w = torch.randn(3 * hidden, hidden)
    out: dict = {}
    for b in (5, 100):
        h, bias = torch.randn(b, hidden), torch.randn(3 * hidden)
        s = _time(lambda h=h, bias=bias: torch.addmm(bias, h, w.t()), repeat)
        out[f"gru_step_addmm_batch{b}_us"] = s * 1e6
        out[f"gru_step_addmm_batch{b}_gflop_per_s"] = 2 * b * hidden * 3 * hidden / s / 1e9
    a = torch.randn(5, 3 * hidden)
    out["elementwise_add_batch5_us"] = _time(lambda: a + a, repeat) * 1e6
    g, x = torch.randn(3 * hidden, 1900), torch.randn(1900, hidden)  # 100 users x 19 steps
    s = _time(lambda: g @ x, max(20, repeat // 50))
    out["weight_grad_300x1900x100_ms"] = s * 1e3
    out["weight_grad_300x1900x100_gflop_per_s"] = 2 * 3 * hidden * 1900 * hidden / s / 1e9
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args(argv)
    if not JODIE.exists():
        raise SystemExit(f"{JODIE} is absent (../shared/data must be beside the checkout)")
    result = {"hardware": hardware(torch.device("cpu")), "threads": 1, "work": work(), "operators": operators()}
    print(json.dumps(result, indent=1))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_suffix(".tmp")
    tmp.write_text(json.dumps(result, indent=2))
    tmp.replace(args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
