"""Evaluation and nightly-scoring speed with a 100k-item catalogue on CPU (docs/eval_speed.md).

Measures, with 1 and 2 torch threads:

- evaluation targets/s: next-item test targets / wall time of ``thrnn.inference.predict_test`` (it
  replays every user's history, ranks every next-item and first-item test target against the whole
  catalogue and predicts every test gap), as ``bench/train_speed.py`` counts it;
- scoring users/s: users / wall time of ``thrnn.scoring.score_users`` (the nightly top-20 per user and
  the churn figures, recalibration included);

with a THRNN of the product preset (the personal-history mixture, the log-normal head, tied
embeddings) with random weights (the speed does not depend on what the weights are) on:

- ``--data generated`` (default): the generated 100k-item set of docs/train_speed.md
  (``bench.train_speed.generated_split``: 1,000 users x 10 sessions, Zipf-like item popularity);
- ``--data synth``: a Last.fm-format log from the project's generator (docs/synthetic_data.md) with a
  100k-item catalogue, sessionized by the reference sessionizer; the model scores all ``--items``.

Every measurement runs in a fresh subprocess. ``--compare-src DIR`` measures another checkout of the
package too (e.g. ``git worktree add /tmp/base HEAD~1``), interleaved with this one (A B, then B A, ...)
so that both see the same load, and reports the ratio of each pair and their median: on a shared
machine only such ratios are results. The 1-minute load average is recorded at every start, with each
run's process CPU time (pairs are also compared by CPU time, which other processes disturb less than the
wall time) and hashes of its ranks and recommendations (``same_results`` per pair).

    .venv/bin/python bench/eval_speed.py --repeats 3                           # this checkout
    .venv/bin/python bench/eval_speed.py --repeats 3 --compare-src /tmp/base   # A/B
    .venv/bin/python bench/eval_speed.py --tiny                                # smoke run, bench/results/tmp/
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def load_average() -> float | None:
    return os.getloadavg()[0] if hasattr(os, "getloadavg") else None


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


# ----------------------------------------------------------------------------------------- worker


def worker(args: argparse.Namespace) -> dict[str, Any]:
    """One measurement with the ``thrnn`` found on ``sys.path`` (PYTHONPATH picks the checkout)."""
    import pandas as pd
    import torch
    import torch._dynamo  # noqa: F401  (imported on first use by the recalibration's LBFGS: seconds, once a process)

    import thrnn
    from thrnn.config import config_for
    from thrnn.data import load_sessions
    from thrnn.inference import predict_test
    from thrnn.io import read_split
    from thrnn.models import build_model
    from thrnn.scoring import score_users

    torch.set_num_threads(args.threads)
    split = read_split(args.split_dir)
    data = load_sessions(split)
    cfg = config_for(args.preset, args.model, device="cpu")
    torch.manual_seed(args.seed)
    model = build_model(cfg, max(args.items, data.n_items), data.n_users).eval()
    out: dict[str, Any] = {"thrnn": str(Path(thrnn.__file__).parent), "threads": args.threads,
                           "load_average_1m": load_average(), "model_items": model.n_items,
                           "mixture": cfg.mixture, "time_head": cfg.time_head}
    start, cpu = time.perf_counter(), time.process_time()
    pred = predict_test(model, data, cfg, device="cpu")
    eval_s = time.perf_counter() - start
    out.update(eval_seconds=eval_s, eval_cpu_seconds=time.process_time() - cpu,
               eval_targets=int(len(pred.next_item_ranks)),
               eval_first_targets=int(len(pred.first_item_ranks)) if pred.first_item_ranks is not None else 0,
               eval_targets_per_s=len(pred.next_item_ranks) / eval_s,
               recall_at_20=float(np.mean(pred.next_item_ranks <= 20)),
               ranks_sha1=hashlib.sha1(np.ascontiguousarray(pred.next_item_ranks, dtype=np.int64)).hexdigest())
    day = (pd.to_datetime(split.test["event_time"]).max() + pd.Timedelta(days=1)).date()
    start, cpu = time.perf_counter(), time.process_time()
    recs, churn = score_users(model, split, cfg, run_date=day, top_k=20, device="cpu")
    score_s = time.perf_counter() - start
    out.update(score_seconds=score_s, score_cpu_seconds=time.process_time() - cpu, score_users=int(len(churn)),
               score_users_per_s=len(churn) / score_s,
               recommendations=int(len(recs)),
               recommendations_sha1=hashlib.sha1(pd.util.hash_pandas_object(recs, index=False).to_numpy()).hexdigest())
    return out


# ----------------------------------------------------------------------------------------- parent


def make_split(args: argparse.Namespace, folder: Path) -> dict[str, Any]:
    """Write the benchmark split to ``folder`` and describe it."""
    from thrnn.io import Split, write_split

    if args.data == "generated":
        sys.path.insert(0, str(ROOT / "bench"))
        from train_speed import generated_split

        split = generated_split(args.users, args.sessions, args.items, seed=args.seed)
        source = (f"bench.train_speed.generated_split({args.users} users, {args.sessions} sessions, "
                  f"{args.items} items, seed {args.seed})")
    else:
        from contract.reference import sessionize_files
        from synth import generate

        raw = folder.parent / "raw.tsv"
        generate("lastfm", args.events, raw, seed=args.seed, items=args.items, users=max(10, args.events // 400))
        o = sessionize_files("lastfm", str(raw))
        split = Split(o.train, o.test, o.items, o.users, {})
        source = f"synth.generate('lastfm', {args.events} events, items={args.items}, seed {args.seed}), reference sessionizer"
    # the split layout stores microseconds; the generated times carry nanoseconds
    train, test = (f.assign(event_time=f["event_time"].dt.floor("us")) for f in (split.train, split.test))
    write_split(folder, train, test, split.items, split.users)
    return {"source": source, "users": int(split.n_users), "split_items": int(split.n_items),
            "train_events": len(split.train), "test_events": len(split.test)}


def run_worker(src: str | None, split_dir: Path, threads: int, args: argparse.Namespace) -> dict[str, Any]:
    env = dict(os.environ)
    if src:
        env["PYTHONPATH"] = os.pathsep.join([str(Path(src).resolve()), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", "--split-dir", str(split_dir),
           "--threads", str(threads), "--items", str(args.items), "--seed", str(args.seed),
           "--preset", args.preset, "--model", args.model]
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if res.returncode:
        raise RuntimeError(f"worker failed ({src or 'this checkout'}):\n{res.stderr[-4000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def _median(records: list[dict[str, Any]], key: str) -> float:
    return float(np.median([r[key] for r in records]))


def summarise(records: list[dict[str, Any]]) -> dict[str, Any]:
    return {"eval_targets_per_s": _median(records, "eval_targets_per_s"),
            "score_users_per_s": _median(records, "score_users_per_s"),
            "runs": records}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", choices=("generated", "synth"), default="generated", help="benchmark data (see above)")
    p.add_argument("--items", type=int, default=100_000, help="catalogue size (default 100000)")
    p.add_argument("--users", type=int, default=1_000, help="users of the generated set (default 1000)")
    p.add_argument("--sessions", type=int, default=10, help="sessions per user of the generated set (default 10)")
    p.add_argument("--events", type=int, default=200_000, help="events of the synth log (default 200000)")
    p.add_argument("--preset", default="lastfm", help="training preset of the model (default lastfm, the product's)")
    p.add_argument("--model", default="thrnn", help="thrnn, hrnn or gru4rec (default thrnn)")
    p.add_argument("--threads", default="1,2", help="comma-separated torch thread counts (default 1,2)")
    p.add_argument("--repeats", type=int, default=3, help="runs per setting; figures are medians (default 3)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--compare-src", default=None,
                   help="another checkout's root (holding thrnn/): measured interleaved with this one")
    p.add_argument("--tiny", action="store_true", help="seconds-long smoke run: 5k items, 60 users, 1 repeat")
    p.add_argument("--out", default=None,
                   help="result JSON (default bench/results/eval_speed.json; with --tiny bench/results/tmp/)")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--split-dir", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        args.threads = int(args.threads)
        print(json.dumps(worker(args)))
        return 0
    load_at_start = load_average()
    if args.tiny:
        args.items, args.users, args.events, args.repeats = 5_000, 60, 20_000, 1
    results_dir = ROOT / "bench" / "results"
    args.out = args.out or str(results_dir / "tmp" / "eval_speed_tiny.json" if args.tiny else results_dir / "eval_speed.json")
    threads = [int(t) for t in str(args.threads).split(",") if t]
    sides = {"this": None} if not args.compare_src else {"this": None, "compare": args.compare_src}
    results: dict[str, Any] = {
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "argv": sys.argv[1:],
        "load_average_1m_at_start": load_at_start,
        "hardware": {"cpu_model": _cpu_model(), "logical_cpus": os.cpu_count(), "python": platform.python_version()},
        "preset": args.preset, "model": args.model, "repeats": args.repeats,
        "compare_src": args.compare_src,
    }
    with tempfile.TemporaryDirectory() as tmp:
        split_dir = Path(tmp) / "split"
        results["data"] = make_split(args, split_dir)
        print(f"data: {results['data']}", flush=True)
        by: dict[tuple[str, int], list[dict[str, Any]]] = {(s, t): [] for s in sides for t in threads}
        ratios: dict[int, list[dict[str, float]]] = {t: [] for t in threads}
        for rep in range(args.repeats):
            for t in threads:
                order = list(sides) if rep % 2 == 0 else list(reversed(sides))
                pair = {}
                for side in order:
                    r = run_worker(sides[side], split_dir, t, args)
                    by[(side, t)].append(r)
                    pair[side] = r
                    print(f"repeat {rep} {side:7s} {t} thread(s): eval {r['eval_targets_per_s']:8.0f} targets/s "
                          f"({r['eval_targets']} targets, {r['eval_seconds']:.1f} s, CPU {r['eval_cpu_seconds']:.1f} s), scoring "
                          f"{r['score_users_per_s']:7.0f} users/s ({r['score_users']} users, {r['score_seconds']:.1f} s, "
                          f"CPU {r['score_cpu_seconds']:.1f} s); "
                          f"load {r['load_average_1m']:.2f}", flush=True)
                if "compare" in pair:
                    ratio = {k: pair["this"][k] / pair["compare"][k] for k in ("eval_targets_per_s", "score_users_per_s")}
                    # CPU seconds of the other side over this one's: the speed-up by CPU time, which other
                    # processes on a loaded machine disturb less than the wall time
                    ratio.update({f"{k}_cpu": pair["compare"][k] / pair["this"][k]
                                  for k in ("eval_cpu_seconds", "score_cpu_seconds") if k in pair["compare"]})
                    ratio["same_results"] = all(pair["this"].get(k) == pair["compare"].get(k)
                                                for k in ("ranks_sha1", "recommendations_sha1"))
                    ratios[t].append(ratio)
    results["runs"] = {side: {str(t): summarise(by[(side, t)]) for t in threads} for side in sides}
    if args.compare_src:
        results["ratios_this_over_compare"] = {
            str(t): {**{k: float(np.median([r[k] for r in ratios[t]])) for k in ratios[t][0] if k != "same_results"},
                     "pairs": ratios[t]} for t in threads}
    for side in sides:
        for t in threads:
            s = results["runs"][side][str(t)]
            print(f"{side:7s} {t} thread(s): eval {s['eval_targets_per_s']:8.0f} targets/s, "
                  f"scoring {s['score_users_per_s']:7.0f} users/s (medians of {args.repeats})")
    if args.compare_src:
        for t in threads:
            r = results["ratios_this_over_compare"][str(t)]
            cpu = (f"; by CPU time eval x{r['eval_cpu_seconds_cpu']:.2f}, scoring x{r['score_cpu_seconds_cpu']:.2f}"
                   if "eval_cpu_seconds_cpu" in r else "")
            print(f"this / compare, {t} thread(s): eval x{r['eval_targets_per_s']:.2f}, "
                  f"scoring x{r['score_users_per_s']:.2f}{cpu} (median of {args.repeats} interleaved pairs)")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp_out = out.with_suffix(".json.tmp")
    tmp_out.write_text(json.dumps(results, indent=2))
    tmp_out.replace(out)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
