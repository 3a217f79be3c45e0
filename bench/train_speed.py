"""Training and evaluation speed of THRNN, HRNN and the GRU4Rec-style GRU (docs/train_speed.md).

Measures, on CPU with 1 and 2 threads, training targets/s (next-item targets of one training epoch
divided by its wall time, FIFO bookkeeping and optimizer included) and evaluation targets/s (test
targets divided by the wall time of ``predict_test``, which replays every user's training history
first and ranks each target against the full catalogue) on:

- LastFM-JODIE (the ../shared/data excerpt, sessionized with the pandas reference of docs/design.md
  §3, with the Spark job ``jobs.sessionize`` when ``--spark`` is given, or a sessionize output folder given
  with ``--data``);
- a generated catalogue of 100k items (sampled softmax in training, full ranking in evaluation);
- on CUDA when present: a few epochs of THRNN on a generated 94k-item, million-event dataset;
- with ``--ddp 2``: LastFM-JODIE trained data-parallel by 2 one-thread processes under torchrun.

Every figure records the hardware it was measured on, and the load average when it started (the
development machine is shared). Results go to ``bench/results/train_speed.json``.

Full run (minutes; run when the machine is otherwise idle):

    .venv/bin/python bench/train_speed.py

Tiny run (proves the script works, seconds):

    .venv/bin/python bench/train_speed.py --tiny --out bench/results/tmp/train_speed_tiny.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from contract import columns as C
from contract.reference import sessionize_frame
from thrnn.checkpoint import load_run
from thrnn.config import config_for
from thrnn.data import SessionData, load_sessions, read_jodie_tsv
from thrnn.inference import predict_test
from thrnn.io import Split, read_split
from thrnn.train import train_sessions

ROOT = Path(__file__).resolve().parents[1]

JODIE = ROOT.parent / "shared" / "data" / "lastfm-1k-jodie-subset" / "lastfm_jodie_first10pct.tsv.gz"


def hardware(device: torch.device) -> dict[str, Any]:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info: dict[str, Any] = {
        "cpu_model": cpu,
        "logical_cpus": os.cpu_count(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "device": device.type,
        "load_average_1m": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
    }
    if device.type == "cuda":
        info["cuda_device"] = torch.cuda.get_device_name(device)
    return info


def generated_split(n_users: int, sessions_per_user: int, n_items: int, seed: int = 0,
                    clock_per_user: bool = False) -> Split:
    """Random sessions (lengths 2..20, geometric-ish; Zipf-like item popularity; gaps 1..300 h).

    By default the users follow one another on one clock (the CPU benchmarks' sets); past ~50,000
    sessions that clock runs beyond pandas' year 2262, so large sets give every user a clock of their
    own from the same start (``clock_per_user``): the same gaps, overlapping users.
    """
    rng = np.random.default_rng(seed)
    n_sess = n_users * sessions_per_user
    lengths = np.clip(rng.geometric(0.25, n_sess) + 1, 2, C.MAX_SESSION_LENGTH)
    users = np.repeat(np.arange(n_users), sessions_per_user)
    s_idx = np.tile(np.arange(sessions_per_user), n_users)
    gaps = rng.uniform(1, 300, n_sess) * 3600.0
    starts = np.cumsum(gaps + lengths * 60.0)
    if clock_per_user:
        per_user = (gaps + lengths * 60.0).reshape(n_users, sessions_per_user)
        starts = np.cumsum(per_user, axis=1).ravel()
    ev_sess = np.repeat(np.arange(n_sess), lengths)
    first = np.repeat(np.cumsum(lengths) - lengths, lengths)
    pos = np.arange(len(ev_sess)) - first
    pop = 1.0 / np.arange(1, n_items + 1) ** 0.8
    items = rng.choice(np.arange(1, n_items + 1), size=len(ev_sess), p=pop / pop.sum())
    t = starts[ev_sess] + pos * 60.0
    prev_end = np.r_[np.nan, (starts + (lengths - 1) * 60.0)[:-1]]
    gap_before = np.where(s_idx == 0, np.nan, starts - prev_end)
    n_train = np.floor(0.8 * sessions_per_user)
    ev = pd.DataFrame({
        C.USER_ID: users[ev_sess].astype(np.int32),
        C.SESSION_ID: ev_sess.astype(np.int64),
        C.SESSION_INDEX: s_idx[ev_sess].astype(np.int32),
        C.POSITION: pos.astype(np.int16),
        C.ITEM_ID: items.astype(np.int32),
        C.EVENT_TIME: pd.to_datetime(1.2e9 + t, unit="s", utc=True),
        C.GAP_BEFORE_SECONDS: gap_before[ev_sess],
        C.IS_CONTINUATION: np.zeros(len(ev_sess), dtype=bool),
    })
    is_train = s_idx[ev_sess] < n_train
    counts = np.bincount(items[is_train], minlength=n_items + 1)
    item_frame = pd.DataFrame({C.ITEM_ID: np.arange(1, n_items + 1, dtype=np.int32),
                               C.ITEM_KEY: [str(i) for i in range(1, n_items + 1)],
                               C.ITEM_NAME: [str(i) for i in range(1, n_items + 1)],
                               C.TRAIN_COUNT: counts[1:]})
    user_frame = pd.DataFrame({C.USER_ID: np.arange(n_users, dtype=np.int32),
                               C.USER_KEY: [str(u) for u in range(n_users)]})
    return Split(ev[is_train].reset_index(drop=True), ev[~is_train].reset_index(drop=True), item_frame,
                 user_frame, {})


def spark_split(path: str) -> Split:
    """Sessionize a JODIE TSV (user, item, seconds; no header) with the Spark job into a temp folder."""
    from jobs.sessionize import run
    from jobs.spark import build_spark

    spark = build_spark("thrnn-bench-sessionize", "local[2]", {"spark.ui.enabled": "false"})
    with tempfile.TemporaryDirectory() as tmp:
        run(spark, "events", [path], Path(tmp) / "split", session_gap_seconds=3600, input_format="text",
            delimiter="\t", header=False, column_names=("user_id", "item_id", "timestamp"))
        return read_split(Path(tmp) / "split")


def measure(data: SessionData, model: str, dataset: str, threads: int, device: str, epochs: int,
            **overrides: Any) -> dict[str, Any]:
    """Train ``epochs`` epochs (the last one is timed) and time one evaluation pass."""
    cfg = config_for(dataset, model, epochs=epochs, threads=threads, device=device, **overrides)
    if threads:
        torch.set_num_threads(threads)
    dev = torch.device("cuda" if device == "cuda" else "cpu")
    with tempfile.TemporaryDirectory() as run:
        hist = train_sessions(data, run, cfg, progress=False)
        net, cfg = load_run(run, dev)
    last = hist["epochs"][-1]
    start = time.perf_counter()
    pred = predict_test(net, data, cfg, device=dev)
    if dev.type == "cuda":
        torch.cuda.synchronize()
    eval_s = time.perf_counter() - start
    return {
        "model": model,
        "threads": threads if dev.type == "cpu" else None,
        "hardware": hardware(dev),
        "config": {k: v for k, v in cfg.to_dict().items()
                   if k in ("item_embedding", "batch_size", "sampled_softmax", "amp", "epochs")},
        "train_targets_per_epoch": last["targets"],
        "train_seconds_last_epoch": last["seconds"],
        "train_targets_per_s": last["targets_per_s"],
        "train_targets_per_s_by_epoch": [e["targets_per_s"] for e in hist["epochs"]],
        "eval_targets": int(len(pred.next_item_ranks)),
        "eval_seconds": eval_s,
        "eval_targets_per_s": len(pred.next_item_ranks) / eval_s if eval_s > 0 else None,
    }


def measure_ddp(split: Split, model: str, dataset: str, nproc: int, epochs: int) -> dict[str, Any]:
    """Train ``epochs`` epochs with ``nproc`` data-parallel CPU processes of 1 thread each under torchrun
    (:mod:`thrnn.distributed`, the path of ``THRNN_TRAIN_NPROC``); the last epoch is timed by rank 0 over
    the whole step's targets. No evaluation (that is single-process)."""
    import subprocess

    from thrnn.io import write_split
    from thrnn.launch import torchrun_command

    cfg = config_for(dataset, model, epochs=epochs, threads=1, device="cpu")
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = write_split(Path(tmp) / "split", split.train, split.test, split.items, split.users)
        config_file = Path(tmp) / "config.json"
        config_file.write_text(json.dumps(cfg.to_dict()))
        run = Path(tmp) / "run"
        env = {**os.environ, "OMP_NUM_THREADS": "1",
               "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
        done = subprocess.run(torchrun_command(data_dir, run, config_file, nproc), env=env, capture_output=True,
                              text=True)
        if done.returncode:
            raise RuntimeError(f"torchrun training failed:\n{done.stdout[-2000:]}{done.stderr[-4000:]}")
        hist = json.loads((run / "history.json").read_text())
    last = hist["epochs"][-1]
    return {
        "model": model, "processes": nproc, "threads": 1, "hardware": hardware(torch.device("cpu")),
        "train_targets_per_epoch": last["targets"], "train_seconds_last_epoch": last["seconds"],
        "train_targets_per_s": last["targets_per_s"],
        "train_targets_per_s_by_epoch": [e["targets_per_s"] for e in hist["epochs"]],
        "eval_seconds": None, "eval_targets_per_s": None,
    }


def repeated(run: Any, repeats: int) -> dict[str, Any]:
    """``run()`` ``repeats`` times: the first record with the medians of the speed figures and every
    run's figures and load average at its start under ``repeats`` (a figure taken while other work
    runs is not a result: the loads say whether the machine was idle)."""
    records = [run() for _ in range(max(1, repeats))]
    out = dict(records[0])
    for key in ("train_targets_per_s", "train_seconds_last_epoch", "eval_seconds", "eval_targets_per_s"):
        values = [r[key] for r in records if r[key] is not None]
        out[key] = float(np.median(values)) if values else None
    out["repeats"] = [{"train_targets_per_s": r["train_targets_per_s"], "eval_targets_per_s": r["eval_targets_per_s"],
                       "load_average_1m": r["hardware"]["load_average_1m"]} for r in records]
    return out


def describe_data(data: SessionData) -> dict[str, Any]:
    train = ~data.is_test
    return {"users": data.n_users, "items": data.n_items, "sessions": data.n_sessions,
            "train_targets": data.n_targets(train), "test_targets": data.n_targets(data.is_test)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--jodie", default=str(JODIE), help="LastFM-JODIE TSV excerpt (user, item, seconds)")
    p.add_argument("--data", default=None, help="use this sessionize output folder instead of --jodie")
    p.add_argument("--spark", action="store_true",
                   help="sessionize --jodie with the Spark job (jobs.sessionize, local[2]) instead of pandas")
    p.add_argument("--max-rows", type=int, default=None, help="read only the first N rows of --jodie (pandas only)")
    p.add_argument("--models", default="thrnn,hrnn,gru4rec", help="comma-separated models")
    p.add_argument("--threads", default="1,2", help="comma-separated CPU thread counts")
    p.add_argument("--epochs", type=int, default=2, help="epochs per run; the last one is timed (default 2)")
    p.add_argument("--big-items", type=int, default=100_000, help="catalogue of the generated CPU dataset")
    p.add_argument("--big-users", type=int, default=1_000, help="users of the generated CPU dataset")
    p.add_argument("--big-sessions", type=int, default=10, help="sessions per user of the generated CPU dataset")
    p.add_argument("--sampled", type=int, default=2048, help="sampled-softmax size for the generated catalogue")
    p.add_argument("--gpu-items", type=int, default=94_000, help="catalogue of the generated GPU dataset")
    p.add_argument("--gpu-users", type=int, default=20_000, help="users of the generated GPU dataset")
    p.add_argument("--gpu-sessions", type=int, default=10, help="sessions per user of the generated GPU dataset")
    p.add_argument("--gpu-epochs", type=int, default=3, help="THRNN epochs on the GPU dataset")
    p.add_argument("--no-gpu", action="store_true", help="skip the CUDA run even when a GPU is present")
    p.add_argument("--repeats", type=int, default=3,
                   help="runs per LastFM-JODIE setting; the figures are their medians (default 3)")
    p.add_argument("--no-generated", action="store_true", help="skip the generated 100k-item CPU set")
    p.add_argument("--ddp", default="",
                   help="comma-separated process counts (e.g. 2): also train each model data-parallel with that "
                        "many 1-thread processes under torchrun on LastFM-JODIE (medians of --repeats)")
    p.add_argument("--preset", default="lastfm",
                   help="training preset of every run (default lastfm, the product's; paper-lastfm is the paper's)")
    p.add_argument("--tiny", action="store_true",
                   help="a seconds-long smoke version: 3000 JODIE rows, 1 epoch, small generated sets")
    p.add_argument("--out", default=str(ROOT / "bench" / "results" / "train_speed.json"), help="result JSON")
    args = p.parse_args(argv)
    load_at_start = os.getloadavg()[0] if hasattr(os, "getloadavg") else None  # before this run adds its own
    if args.tiny:
        args.max_rows, args.epochs = args.max_rows or 3000, 1
        args.big_items, args.big_users, args.big_sessions = 5000, 50, 5
        args.gpu_items, args.gpu_users, args.gpu_sessions, args.gpu_epochs = 5000, 200, 5, 1
    models = [m for m in args.models.split(",") if m]
    threads = [int(t) for t in args.threads.split(",") if t]

    if args.data:
        split, source = read_split(args.data), f"sessionize output {args.data}"
    elif args.spark:
        split, source = spark_split(args.jodie), f"{args.jodie}, jobs.sessionize (Spark), 3600 s gap"
    else:
        events = read_jodie_tsv(args.jodie, max_rows=args.max_rows)
        split = Split(*sessionize_frame(events, 3600), {})
        source = f"{args.jodie} (first {args.max_rows or 'all'} rows), pandas sessionizer, 3600 s gap"
    jodie = load_sessions(split)
    results: dict[str, Any] = {"created": pd.Timestamp.now(tz="UTC").isoformat(), "argv": sys.argv[1:],
                               "preset": args.preset,
                               "load_average_1m_at_start": load_at_start,
                               "lastfm_jodie": {"source": source, "data": describe_data(jodie), "runs": []}}
    for t in threads:
        for m in models:
            r = repeated(lambda m=m, t=t: measure(jodie, m, args.preset, t, "cpu", args.epochs), args.repeats)
            results["lastfm_jodie"]["runs"].append(r)
            print(f"lastfm-jodie {m:8s} {t} thread(s): train {r['train_targets_per_s']:8.0f} tgt/s, "
                  f"eval {r['eval_targets_per_s']:8.0f} tgt/s (median of {args.repeats}; load at the starts "
                  f"{[x['load_average_1m'] for x in r['repeats']]})", flush=True)

    results["lastfm_jodie"]["ddp"] = []
    for nproc in [int(n) for n in args.ddp.split(",") if n]:
        for m in models:
            r = repeated(lambda m=m, n=nproc: measure_ddp(split, m, args.preset, n, args.epochs), args.repeats)
            results["lastfm_jodie"]["ddp"].append(r)
            print(f"lastfm-jodie {m:8s} {nproc} processes x 1 thread: train {r['train_targets_per_s']:8.0f} tgt/s "
                  f"(median of {args.repeats}; load at the starts {[x['load_average_1m'] for x in r['repeats']]})",
                  flush=True)

    big = load_sessions(generated_split(args.big_users, args.big_sessions, args.big_items, seed=1))
    results["generated_cpu"] = {"data": describe_data(big), "runs": []}
    for m in [] if args.no_generated else models:
        # sampled softmax needs the plain output layer (the personal-history mixture ranks every item)
        r = measure(big, m, args.preset, threads[0], "cpu", args.epochs, sampled_softmax=args.sampled, mixture=False)
        results["generated_cpu"]["runs"].append(r)
        print(f"generated {args.big_items} items {m:8s}: train {r['train_targets_per_s']:8.0f} tgt/s "
              f"(sampled softmax {args.sampled}), eval {r['eval_targets_per_s']:8.0f} tgt/s", flush=True)

    if torch.cuda.is_available() and not args.no_gpu:
        gpu = load_sessions(generated_split(args.gpu_users, args.gpu_sessions, args.gpu_items, seed=2,
                                            clock_per_user=True))
        results["generated_gpu"] = {"data": describe_data(gpu), "runs": []}
        for amp in (False, True):
            r = measure(gpu, "thrnn", args.preset, 0, "cuda", args.gpu_epochs, amp=amp)
            results["generated_gpu"]["runs"].append(r)
            print(f"GPU {r['hardware'].get('cuda_device')} thrnn amp={amp}: train {r['train_targets_per_s']:8.0f} "
                  f"tgt/s, eval {r['eval_targets_per_s']:8.0f} tgt/s", flush=True)
    else:
        results["generated_gpu"] = {"skipped": "no CUDA device" if not args.no_gpu else "--no-gpu"}

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(results, indent=2))
    tmp.replace(out)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
