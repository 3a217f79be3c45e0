"""Validation learning curves: how a model improves with epochs under a few hyper-parameter settings.

Tuning for ``bench/quality.py --overrides``: each setting trains on the *training* split minus each
user's last ``--val-sessions`` training sessions and is scored on those held-out sessions at the
given epochs (Recall@20, MRR@20, return-time MAE). Test sessions are never read. One JSON line per
(setting, epoch) goes to ``--out``; the best line per model is the setting to use.

    .venv/bin/python bench/tune_curves.py --model thrnn --epochs 8,16,24,32,40 \\
        --grid '[{}, {"item_embedding": 200}, {"tie_embeddings": true}]' \\
        --out bench/results/lastfm/tune_curves.jsonl

Each setting costs about as much as one training run of the last epoch count plus one validation
replay per checkpoint epoch; settings run one after another on one thread (``--threads``).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from contract.reference import sessionize_frame
from thrnn.config import config_for
from thrnn.data import SessionData, load_sessions, read_jodie_tsv
from thrnn.io import Split, read_split
from thrnn.train import train_sessions

ROOT = Path(__file__).resolve().parents[1]

JODIE = ROOT.parent / "shared" / "data" / "lastfm-1k-jodie-subset" / "lastfm_jodie_first10pct.tsv.gz"


def curves(data: SessionData, dataset: str, model: str, grid: list[dict], checks: list[int], val_sessions: int,
           seed: int, threads: int, device: str = "cpu"):
    """Yield one record per (setting, checkpoint epoch) with the validation metrics."""
    val = data.validation_mask(val_sessions)
    if not bool(val.any()):
        raise ValueError("no validation sessions: every user has a single training session")
    for overrides in grid:
        cfg = config_for(dataset, model, epochs=max(checks), seed=seed, device=device, threads=threads,
                         val_sessions=val_sessions, **overrides)
        start = time.perf_counter()
        seen: list[dict] = []

        def on_epoch(epoch: int, rec: dict, overrides: dict = overrides, seen: list = seen,
                     start: float = start) -> None:
            if epoch in checks:
                seen.append({"dataset": dataset, "model": model, "overrides": overrides, "epoch": epoch,
                             "seed": seed, "val_sessions": val_sessions, "loss": rec["loss"],
                             "val_recall@20": rec["val_recall@20"], "val_mrr@20": rec["val_mrr@20"],
                             "val_mae_hours": rec.get("val_mae_hours"),
                             "seconds": round(time.perf_counter() - start, 1)})

        with tempfile.TemporaryDirectory(prefix="tune-curves-") as run:
            train_sessions(data, run, cfg, progress=False, on_epoch=on_epoch, validate_at=checks)
        yield from seen


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=None, help="sessionize output folder (default: the LastFM-JODIE excerpt, "
                                                "sessionized with the pandas reference at 3600 s)")
    p.add_argument("--dataset", default="lastfm", help="preset of the paper's defaults (lastfm or reddit)")
    p.add_argument("--model", default="thrnn", choices=("thrnn", "hrnn", "gru4rec"))
    p.add_argument("--grid", default="[{}]", help="JSON list of TrainConfig overrides, one setting each")
    p.add_argument("--epochs", default="8,16,24,32,40", help="comma-separated epochs to validate at")
    p.add_argument("--val-sessions", type=int, default=10, help="held-out last training sessions per user")
    p.add_argument("--seed", type=int, default=42, help="training seed (default 42, TrainConfig's default)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", type=Path, required=True, help="JSON lines, appended")
    args = p.parse_args(argv)
    if args.data:
        split = read_split(args.data)
    else:
        split = Split(*sessionize_frame(read_jodie_tsv(str(JODIE)), 3600), {})
    data = load_sessions(split)
    checks = sorted({int(e) for e in args.epochs.split(",") if e})
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with args.out.open("a") as f:
        for rec in curves(data, args.dataset, args.model, json.loads(args.grid), checks, args.val_sessions,
                          args.seed, args.threads, args.device):
            print(json.dumps(rec), flush=True)
            f.write(json.dumps(rec) + "\n")
            f.flush()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
