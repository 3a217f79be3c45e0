"""What the repeat-aware mixture costs per training epoch (docs/model.md, "Cost").

THRNN with the product preset of LastFM (mixture on) against the same settings with ``mixture=False``
on the LastFM-JODIE excerpt (pandas sessionizer), 1 torch thread, alternating runs so both see the
same machine state. Per run: the seconds of every epoch, and for the mixture the one-off
precomputation of the training targets' component probabilities (run wall time minus epochs minus the
plain run's set-up). The load average at the start of every run is recorded: run it alone on an idle
machine (load below 0.5). Results: ``bench/results/mixture_cost.json``::

    .venv/bin/python bench/mixture_cost.py --repeats 3 --epochs 3
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch

from contract.reference import sessionize_frame
from thrnn.config import config_for
from thrnn.data import load_sessions, read_jodie_tsv
from thrnn.files import write_json_atomic
from thrnn.io import Split
from thrnn.train import train_sessions

REPO = Path(__file__).resolve().parents[1]

JODIE = REPO.parent / "shared" / "data" / "lastfm-1k-jodie-subset" / "lastfm_jodie_first10pct.tsv.gz"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--jodie", type=Path, default=JODIE, help="LastFM-JODIE TSV excerpt (user, item, seconds)")
    p.add_argument("--repeats", type=int, default=3, help="runs per setting (the median is reported)")
    p.add_argument("--epochs", type=int, default=3, help="epochs per run")
    p.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "mixture_cost.json")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    train, test, items, users = sessionize_frame(read_jodie_tsv(str(args.jodie)), 3600)
    data = load_sessions(Split(train, test, items, users, {}))
    runs: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.repeats):
            for mixture in (False, True):
                cfg = config_for("lastfm", "thrnn", epochs=args.epochs, device="cpu", threads=1, mixture=mixture)
                load = os.getloadavg()[0]
                t0 = time.perf_counter()
                history = train_sessions(data, Path(tmp) / f"{mixture}-{r}", cfg, progress=False)
                wall = time.perf_counter() - t0
                epochs = [e["seconds"] for e in history["epochs"]]
                runs.append({"mixture": mixture, "repeat": r, "load_avg_1m": load, "wall_s": wall,
                             "epoch_s": epochs, "targets": history["epochs"][0]["targets"]})
                print(f"mixture={mixture} run {r}: load {load:.2f}, epochs {[round(e, 2) for e in epochs]} s, "
                      f"wall {wall:.1f} s", flush=True)
    summary = {}
    for mixture in (False, True):
        mine = [x for x in runs if x["mixture"] == mixture]
        epoch = statistics.median(e for x in mine for e in x["epoch_s"])
        summary["mixture" if mixture else "plain"] = {
            "median_epoch_s": epoch, "targets_per_s": mine[0]["targets"] / epoch,
            "median_overhead_s": statistics.median(x["wall_s"] - sum(x["epoch_s"]) for x in mine)}
    summary["epoch_ratio"] = summary["mixture"]["median_epoch_s"] / summary["plain"]["median_epoch_s"]
    out = {"summary": summary, "runs": runs, "machine": {
        "platform": platform.platform(), "cpu_count": os.cpu_count(), "torch": torch.__version__,
        "date_utc": time.strftime("%Y-%m-%d %H:%M", time.gmtime())}, "command": " ".join(["bench/mixture_cost.py",
                                                                                          *(argv or [])])}
    write_json_atomic(out, args.out)
    print(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
