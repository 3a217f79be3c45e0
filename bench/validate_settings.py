"""Settings compared on a validation split carved from train (never test), as docs/quality.md reports.

For each excerpt: the split of ``bench/quality.py`` (pandas sessionizer), its validation split (per
user the last 20 % of the training sessions, ``bench.quality.validation_split``), the non-neural
baselines on it (blend and sknn tuned on a further validation split inside it) and THRNN trained on
it with the product preset plus each override set given, seed 42, 1 torch thread. One JSON line per
row in ``bench/results/validate_settings.jsonl``::

    .venv/bin/python bench/validate_settings.py --datasets lastfm reddit \\
        --overrides '{}' '{"epochs": 20}' '{"epochs": 40}' '{"mixture": false, "epochs": 40}'
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from bench import quality as Q

REPO = Path(__file__).resolve().parents[1]

FIGURES = ("recall@20", "mrr@20", "first_item_recall@20", "first_item_mrr@20", "mae_hours")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--datasets", nargs="+", choices=sorted(Q.DATASETS), default=["lastfm", "reddit"])
    p.add_argument("--overrides", nargs="+", default=["{}"], help="JSON TrainConfig overrides, one set per run")
    p.add_argument("--no-baselines", action="store_true", help="skip the non-neural baselines")
    p.add_argument("--work", type=Path, default=None, help="folder for splits and runs (default: temporary)")
    p.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "validate_settings.jsonl")
    args = p.parse_args(argv)
    from thrnn.baselines import non_neural_baselines

    work = args.work or Path(tempfile.mkdtemp(prefix="thrnn-validate-"))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with args.out.open("a") as out:
        for name in args.datasets:
            ds = Q.DATASETS[name]
            split = Q.build_split(ds, work / "splits" / name, "pandas", None)
            val_dir = work / "splits" / f"{name}-validation"
            val = Q.validation_split(split, val_dir)
            rows = []
            if not args.no_baselines:
                for base, m in non_neural_baselines(val).items():
                    if m.get("recall@20") is not None:
                        rows.append({"model": base, **{k: m.get(k) for k in FIGURES}})
            for i, text in enumerate(args.overrides):
                ov = {"threads": 1, **json.loads(text)}
                m = Q.train_and_evaluate(val_dir, work / "runs" / name / f"run-{i}", "thrnn", ds.preset, 42, "cpu", ov)
                rows.append({"model": "thrnn", "overrides": json.loads(text), "epochs_run": m["epochs_run"],
                             **{k: m.get(k) for k in FIGURES}})
            for row in rows:
                row.update(dataset=name, split="validation", date_utc=time.strftime("%Y-%m-%d %H:%M", time.gmtime()))
                out.write(json.dumps(row, sort_keys=True) + "\n")
                print(json.dumps(row), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
