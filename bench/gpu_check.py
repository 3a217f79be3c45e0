"""One call on a lent GPU machine: the CUDA tests, then THRNN training speed at full scale (docs/train_speed.md).

What it does, within ``--budget-s`` (default 280 s, so that one ``device`` call of 5 minutes holds it):

1. ``pytest -m gpu`` (the tests marked ``gpu``: CUDA against CPU results), pass/fail counts recorded;
2. a generated full-scale set (default 100,000 users x 10 sessions = 1M sessions, 100k items, the
   session lengths and gaps of ``bench/train_speed.py``'s generator);
3. THRNN of the product preset trained ``--epochs`` epochs on CUDA in fp32, then with bfloat16 autocast
   (``amp``): per epoch the seconds and targets/s, and the peak CUDA memory of each run. A run that
   would not finish inside the budget is skipped and recorded as such.

Results (every figure with the hardware, partial results included) go to ``bench/results/gpu_check.json``.
The target of docs/train_speed.md: one epoch of a full Last.fm-1K-size set under 60 s.

On the GPU machine, from the repository root, with a Python that has a CUDA build of torch and the
packages of requirements.txt that ``thrnn`` imports (pandas, pyarrow, numpy):

    PYTHONPATH=. python bench/gpu_check.py --out "$OUT/gpu_check.json"

Without a GPU, ``--tiny --device cpu`` proves the script in seconds.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from bench.train_speed import ROOT, describe_data, generated_split, hardware
from thrnn.config import config_for
from thrnn.data import load_sessions
from thrnn.train import train_sessions


def write(results: dict[str, Any], out: Path) -> None:
    """Atomic: the file is complete whenever it exists (the budget may end the script between runs)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(results, indent=2))
    tmp.replace(out)


def cuda_tests(timeout_s: float) -> dict[str, Any]:
    """``pytest -m gpu`` in a subprocess: exit code, the summary line and the seconds it took."""
    start = time.perf_counter()
    try:
        done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-m", "gpu", "-p", "no:cacheprovider", "tests"],
                              cwd=ROOT, capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        return {"returncode": None, "summary": f"timed out after {timeout_s:.0f} s", "seconds": timeout_s}
    lines = [ln for ln in done.stdout.strip().splitlines() if ln.strip()]
    return {"returncode": done.returncode, "summary": lines[-1] if lines else "",
            "seconds": round(time.perf_counter() - start, 1),
            "output_tail": done.stdout[-3000:] + done.stderr[-2000:] if done.returncode else ""}


def train_run(data: Any, device: str, epochs: int, amp: bool, preset: str) -> dict[str, Any]:
    """``epochs`` epochs of THRNN; every epoch's seconds and targets/s, the peak memory on CUDA."""
    dev = torch.device(device)
    cfg = config_for(preset, "thrnn", epochs=epochs, device=device, amp=amp, threads=0)
    if dev.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(dev)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as run:
        hist = train_sessions(data, run, cfg, progress=False)
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    total = time.perf_counter() - start
    epochs_out = [{"epoch": i + 1, "seconds": e["seconds"], "targets": e["targets"],
                   "targets_per_s": e["targets_per_s"]} for i, e in enumerate(hist["epochs"])]
    return {
        "model": "thrnn", "preset": preset, "amp": amp, "device": device, "hardware": hardware(dev),
        "epochs": epochs_out,
        # the first epoch includes CUDA/cuDNN warm-up; the last is the steady state
        "last_epoch_seconds": epochs_out[-1]["seconds"],
        "last_epoch_targets_per_s": epochs_out[-1]["targets_per_s"],
        "total_seconds_with_startup": round(total, 2),
        "peak_memory_gib": (torch.cuda.max_memory_allocated(dev) / 2**30) if dev.type == "cuda" else None,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--users", type=int, default=100_000, help="users of the generated set (default 100,000)")
    p.add_argument("--sessions", type=int, default=10, help="sessions per user (default 10: 1M sessions)")
    p.add_argument("--items", type=int, default=100_000, help="catalogue size (default 100,000)")
    p.add_argument("--epochs", type=int, default=2, help="epochs per run; the last one is the steady state")
    p.add_argument("--preset", default="lastfm", help="training preset (default lastfm, the product's)")
    p.add_argument("--device", default="auto", choices=("auto", "cuda", "cpu"), help="default: cuda when present")
    p.add_argument("--budget-s", type=float, default=280.0, help="stop starting new work after this many seconds")
    p.add_argument("--no-tests", action="store_true", help="skip pytest -m gpu")
    p.add_argument("--tiny", action="store_true", help="200 users x 5 sessions, 2,000 items, 1 epoch (seconds)")
    p.add_argument("--out", default=str(ROOT / "bench" / "results" / "gpu_check.json"), help="result JSON")
    args = p.parse_args(argv)
    t0 = time.perf_counter()
    device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    if device == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda but torch sees no CUDA device")
    if args.tiny:
        args.users, args.sessions, args.items, args.epochs = 200, 5, 2000, 1
    out = Path(args.out)
    results: dict[str, Any] = {"created": pd.Timestamp.now(tz="UTC").isoformat(), "argv": sys.argv[1:],
                               "device": device, "hardware": hardware(torch.device(device)), "budget_s": args.budget_s}

    def left() -> float:
        return args.budget_s - (time.perf_counter() - t0)

    if not args.no_tests and device == "cuda":
        results["cuda_tests"] = cuda_tests(timeout_s=min(120.0, max(left() - 60, 10)))
        print(f"pytest -m gpu: {results['cuda_tests']['summary']} ({results['cuda_tests']['seconds']} s)", flush=True)
        write(results, out)

    start = time.perf_counter()
    split = generated_split(args.users, args.sessions, args.items, seed=2, clock_per_user=True)
    data = load_sessions(split)
    results["data"] = {**describe_data(data), "seconds_to_generate_and_load": round(time.perf_counter() - start, 1)}
    print(f"data: {results['data']}", flush=True)
    write(results, out)

    results["runs"] = []
    estimate = None  # seconds of the previous run: the next one is started only if it fits
    for amp in (False, True):
        if amp and device != "cuda":
            results["runs"].append({"amp": True, "skipped": "bfloat16 autocast is CUDA-only in training"})
            continue
        if estimate is not None and estimate > left():
            results["runs"].append({"amp": amp, "skipped": f"{left():.0f} s of the budget left, the previous "
                                                            f"run took {estimate:.0f} s"})
            continue
        r = train_run(data, device, args.epochs, amp, args.preset)
        estimate = r["total_seconds_with_startup"]
        results["runs"].append(r)
        print(f"thrnn {device} amp={amp}: last epoch {r['last_epoch_seconds']:.1f} s, "
              f"{r['last_epoch_targets_per_s']:,.0f} targets/s, peak {r['peak_memory_gib']} GiB", flush=True)
        write(results, out)
    results["seconds"] = round(time.perf_counter() - t0, 1)
    write(results, out)
    print(f"wrote {out} ({results['seconds']} s)")
    failed = results.get("cuda_tests", {}).get("returncode") not in (None, 0)
    return 1 if failed else 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    sys.exit(main())
