"""Backtest benchmark: the published churn figures checked against what happened next, on the real excerpts.

For LastFM-JODIE (3600 s sessions, preset ``lastfm``) and Reddit-JODIE (1800 s, preset ``reddit``) this
runs :func:`thrnn.backtest.run_backtest` (``python -m thrnn backtest``) with the product preset's
default epochs: sessionize the excerpt as of a past run date and in full, train THRNN on the as-of
split, score every user at that date and compare with the sessions that followed. The run date leaves
enough log after it: LastFM at 80 % of its 394-day span (more than 30 days remain, so every horizon
is observable), Reddit at day 4 of its 6.6 days (1 d observable; 7 d and 30 d are not, and are
reported as such).

Writes ``bench/results/backtest.json`` (machine, command, every figure), the command's own files per
dataset under ``bench/results/backtest/<dataset>/`` and ``docs/backtest.md``. Skips with a message when
``../shared/data`` is absent.

    .venv/bin/python bench/backtest.py [--datasets lastfm reddit] [--device auto] [--threads N] [--work DIR]
    .venv/bin/python bench/backtest.py --validation   # the earlier nights where the settings were chosen
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from bench.quality import machine_info
from thrnn.backtest import (
    LAW_ONLY,
    format_markdown,
    horizons_in_order,
    predictors_in_order,
    run_backtest,
    write_outputs,
)
from thrnn.files import write_json_atomic
from thrnn.scoring import run_date_end

REPO = Path(__file__).resolve().parents[1]

log = logging.getLogger("bench.backtest")

SHARED_DATA = REPO.parent / "shared" / "data"
RESULTS = REPO / "bench" / "results"
DOC = REPO / "docs" / "backtest.md"
VALIDATION = RESULTS / "backtest_validation.json"
# the JODIE TSVs: "user \t item \t seconds", no header, read by the generic events format (epoch seconds,
# so the dates fall in 1970)
JODIE_OPTIONS = {"delimiter": "\t", "header": False, "column_names": ("user_id", "item_id", "timestamp"),
                 "input_format": "text"}


@dataclass(frozen=True)
class Dataset:
    name: str
    path: Path
    session_gap_seconds: float
    preset: str
    run_at: float  # the run date's end falls at or just before this share of the log's span
    min_days_after: float  # at least this much log must remain after the end of the run date
    # earlier nights where the settings (the recalibration) were chosen; the report's date is never one
    validation_dates: tuple[str, ...] = ()


DATASETS = {
    "lastfm": Dataset("lastfm", SHARED_DATA / "lastfm-1k-jodie-subset" / "lastfm_jodie_first10pct.tsv.gz",
                      3600, "lastfm", run_at=0.8, min_days_after=30, validation_dates=("1970-08-26", "1970-09-30")),
    # 0.62 of 6.6 days is day 4.1: the run date is the log's fourth day (its end at day 4.0)
    "reddit": Dataset("reddit", SHARED_DATA / "reddit-jodie-subset" / "reddit_jodie_first20pct.tsv.gz",
                      1800, "reddit", run_at=0.62, min_days_after=1, validation_dates=("1970-01-03",)),
}


def choose_run_date(seconds: pd.Series, run_at: float, min_days_after: float) -> dt.date:
    """The latest day whose end is at or before ``run_at`` of the span, moved earlier until at least
    ``min_days_after`` days of log remain after it."""
    start = pd.Timestamp(int(seconds.min()), unit="s", tz="UTC")
    end = pd.Timestamp(int(seconds.max()), unit="s", tz="UTC")
    target = start + run_at * (end - start)
    day = (target.normalize() - pd.Timedelta(days=1)).date()
    while pd.Timestamp(run_date_end(day)) + pd.Timedelta(days=min_days_after) > end:
        day -= dt.timedelta(days=1)
    if pd.Timestamp(run_date_end(day)) <= start:
        raise ValueError(f"the log ({start} to {end}) is too short for {min_days_after} days after a run date")
    return day


def run_dataset(ds: Dataset, work: Path, device: str, threads: int | None, progress: bool) -> dict[str, Any]:
    seconds = pd.read_csv(ds.path, sep="\t", header=None, usecols=[2]).iloc[:, 0]
    run_date = choose_run_date(seconds, ds.run_at, ds.min_days_after)
    log.info("%s: run date %s", ds.name, run_date)
    overrides = {"threads": threads} if threads else {}
    t0 = time.monotonic()
    result = run_backtest([str(ds.path)], "events", run_date, RESULTS / "backtest" / ds.name,
                          session_gap_seconds=ds.session_gap_seconds, format_options=JODIE_OPTIONS, preset=ds.preset,
                          overrides=overrides, device=device, work=work / ds.name / "splits",
                          train_dir=work / ds.name / "run", progress=progress, name=ds.name)
    days = f"{ds.min_days_after:g} day" + ("" if ds.min_days_after == 1 else "s")
    return {"dataset": ds.name, "path": "../" + str(ds.path.relative_to(REPO.parent)),
            "run_date_rule": f"end of the run date at or before {ds.run_at:.0%} of the span, with at least "
                             f"{days} of log after it",
            "wall_seconds": round(time.monotonic() - t0, 1), **result}


HOW_TO_READ = """\
## How to read the figures

- **Horizons.** `p_return_1d/7d/30d` is P(back within h | not back during the time already elapsed
  since the last session), measured from the end of the run date. A horizon is *observable* when the
  log runs at least h past the end of the run date; then every scored user has a label (users who
  never come back are 0). A horizon that is not observable has no figures, not zero ones.
- **Base rate vs mean p.** The share of users who did come back within h against the mean predicted
  probability: a model that is right on average has them close.
- **Brier** is the mean squared error of the probabilities (lower is better; always predicting the
  base rate b scores b(1 - b)). **ECE** is the count-weighted gap between predicted and observed
  frequency over 10 equal-width bins (0 is perfectly calibrated); the reliability plot shows the bins.
  **ECE if calibrated** is the ECE that perfectly calibrated predictions would still show on this
  many users (the mean over 200 outcome sets drawn from the predictions themselves): an ECE near it
  is sampling noise. On 181 users it is 0.05–0.07, above the 0.03 the project aims for.
- **Recalibration.** THRNN's `p_return_*` (and `churn_risk`) are recalibrated at scoring on the four
  weeks before the night (docs/return_time.md): the "THRNN, law only" rows show what the law alone
  would publish, on the same model and users.
- **AUC** ranks users: the chance that a user who did *not* come back scores above one who did (0.5 is
  chance). The headline uses `churn_risk` and 30 days; the per-horizon AUC uses 1 - p_return_h (the
  median baseline ranks by elapsed time / median gap), which is what remains where 30 d is not
  observable.
- **Risk buckets.** The nightly's low/medium/high buckets of `churn_risk` (thresholds 0.3 and 0.7)
  with the observed 30-day no-return rate: a useful risk score has rates that climb from low to high
  and sit near each bucket's mean churn risk.
- **MAE** of `median_return_hours` against the actual hours from the last session to the return,
  both capped at 500 h as in every return-time MAE of the project, over the users who returned
  before the log end (those who did not have no actual time).
- **Baselines** on the same users and outcomes: `user_median` predicts the user's median gap as of the
  run date (the global median without gaps) and ranks by elapsed / median; `empirical` estimates
  P(back within h | elapsed e) from the user's own gaps, shrunk toward everyone's gaps with weight
  k = 5: (#own gaps in (e, e+h] + k · global share in (e, e+h]) / (#own gaps > e + k · global share > e).
  The model is worth its keep where it beats both.
- A single run date and a single seed: the figures carry sampling noise, mostly at small n (risk
  buckets with few users, 1 d on a short log).
"""


def findings(res: dict[str, Any]) -> list[str]:
    """Which predictor did best on each figure (read off the figures, so a re-run keeps them true)."""
    preds = dict(predictors_in_order(res))
    out = []
    for lab, h in horizons_in_order(res["model"]):
        if not h["observable"]:
            out.append(f"{lab}: not observable ({res['days_after_run_date']:.1f} days of log after the run date).")
            continue
        briers = {n: f["horizons"][lab]["brier"] for n, f in preds.items() if f["horizons"][lab]["brier"] is not None}
        aucs = {n: f["horizons"][lab]["auc_no_return"] for n, f in preds.items()
                if f["horizons"][lab]["auc_no_return"] is not None}
        best_b = min(briers, key=briers.get)
        text = (f"{lab}: THRNN predicts {h['mean_p']:.3f} on average where {h['base_rate']:.3f} came back; "
                f"lowest Brier {best_b} ({briers[best_b]:.3f})")
        if aucs:
            best_a = max(aucs, key=aucs.get)
            text += f", highest AUC {best_a} ({aucs[best_a]:.3f})"
        out.append(text + ".")
    maes = {n: f["mae_hours"] for n, f in preds.items() if f["mae_hours"] is not None}
    if maes:
        best = min(maes, key=maes.get)
        out.append(f"Return time: lowest MAE {best} ({maes[best]:.1f} h over {preds[best]['mae_n']} returns).")
    return [f"- {line}" for line in out]


def write_doc(results: dict[str, Any]) -> Path:
    from thrnn.files import atomic_write

    m = results["machine"]
    lines = [
        "# Backtest: churn figures against what happened next",
        "",
        "Generated by `bench/backtest.py`. The nightly publishes, per user, the median and mean return time, "
        "P(return within 1/7/30 days | not back yet), `p_no_return`, `churn_risk` = 1 - P(return within 30 days) "
        "and a risk bucket. `python -m thrnn backtest` checks them on a past run date D: it sessionizes the raw "
        "log as of D (the events up to the end of D's UTC day) and in full, trains THRNN on the as-of split as "
        "the nightly does, scores every user at D, and joins users on their original key to find each one's "
        "first kept session starting after the end of D (a continuation chunk of a session already running is "
        "no return). The log end is the latest kept event of the full split.",
        "",
        f"Machine: {m['cpu_count']} CPU cores, {m['device']}, {m['platform']}, python {m['python']}, "
        f"torch {m['torch']}, {m['date_utc']} UTC.",
        "",
        f"Command: `{results['command']}`",
        "",
        HOW_TO_READ,
    ]
    for name, res in results["datasets"].items():
        body = format_markdown(res).replace("# Backtest of", "## Backtest of", 1)
        cfg = res["config"]
        lines += [body.rstrip("\n"), "", *findings(res), "",
                  f"Excerpt `{res['path']}`, sessions split at {res['session_gap_seconds']:g} s gaps; "
                  f"{res['run_date_rule']}. As-of split: {res['splits']['as_of']['users']} users, "
                  f"{res['splits']['as_of']['sessions']} sessions; full split: {res['splits']['full']['users']} users. "
                  f"THRNN preset settings, {cfg['epochs']} epochs, seed {cfg['seed']}, time head "
                  f"`{cfg.get('time_head', 'rmtpp')}`; {res['wall_seconds']:.0f} s in all.",
                  "", f"![reliability]({'../bench/results/backtest/' + name + '/reliability.png'})", ""]
    if VALIDATION.exists():
        lines += validation_markdown(json.loads(VALIDATION.read_text()))
    text = "\n".join(lines).rstrip("\n") + "\n"
    return atomic_write(DOC, lambda f: f.write(text.encode()))


def validation_rows(res: dict[str, Any]) -> list[dict[str, Any]]:
    """Per observable horizon: Brier and ECE of THRNN as published (recalibrated) and of its law alone."""
    law = res["baselines"].get(LAW_ONLY)
    rows = []
    for lab, h in horizons_in_order(res["model"]):
        if not h["observable"] or law is None:
            continue
        raw = law["horizons"][lab]
        rows.append({"dataset": res["name"], "run_date": res["run_date"], "horizon": lab, "users": h["n"],
                     "base_rate": h["base_rate"], "brier_law": raw["brier"], "brier_recalibrated": h["brier"],
                     "ece_law": raw["ece"], "ece_recalibrated": h["ece"], "ece_if_calibrated": h["ece_if_calibrated"]})
    return rows


def run_validation(names: list[str], work: Path, device: str, threads: int | None, progress: bool) -> list[dict]:
    """The backtest at each dataset's validation dates; one row per (date, horizon)."""
    rows = []
    overrides = {"threads": threads} if threads else {}
    for name in names:
        ds = DATASETS[name]
        for day in ds.validation_dates:
            res = run_backtest([str(ds.path)], "events", dt.date.fromisoformat(day),
                               work / f"{name}-{day}", session_gap_seconds=ds.session_gap_seconds,
                               format_options=JODIE_OPTIONS, preset=ds.preset, overrides=overrides, device=device,
                               work=work / f"{name}-{day}" / "splits", progress=progress, name=name)
            rows += validation_rows(res)
    return rows


def validation_markdown(validation: dict[str, Any]) -> list[str]:
    lines = ["## Validation nights: law alone against recalibrated", "",
             "The recalibration of `p_return_*` (docs/return_time.md) was chosen on these earlier nights, "
             f"never on the report's (`{validation['command']}`). Lower is better; *ECE if calibrated* is the "
             "noise level.", "",
             "| data | run date | horizon | users | base rate | Brier, law | Brier, recalibrated | ECE, law | "
             "ECE, recalibrated | ECE if calibrated |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in validation["rows"]:
        lines.append(f"| {r['dataset']} | {r['run_date']} | {r['horizon']} | {r['users']} | {r['base_rate']:.3f} | "
                     f"{r['brier_law']:.4f} | {r['brier_recalibrated']:.4f} | {r['ece_law']:.3f} | "
                     f"{r['ece_recalibrated']:.3f} | {r['ece_if_calibrated']:.3f} |")
    return lines + [""]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--datasets", nargs="+", choices=list(DATASETS), default=list(DATASETS))
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    p.add_argument("--work", default=None, help="folder for the splits and model runs (default: temporary)")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--validation", action="store_true",
                   help="run the validation nights instead (bench/results/backtest_validation.json), then re-render")
    p.add_argument("--render-only", action="store_true",
                   help="re-write the reports and docs/backtest.md from bench/results/backtest.json, run nothing")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.render_only:
        results = json.loads((RESULTS / "backtest.json").read_text())
        for name, res in results["datasets"].items():
            write_outputs(res, RESULTS / "backtest" / name)
        print(f"-> {write_doc(results)}")
        return 0
    missing = [str(DATASETS[n].path) for n in args.datasets if not DATASETS[n].path.exists()]
    if missing:
        print(f"bench/backtest.py: skipped, the real excerpts are absent ({', '.join(missing)}; "
              "../shared/data must be beside the checkout)")
        return 0
    command = ("python bench/backtest.py " + " ".join(sys.argv[1:] if argv is None else argv)).strip()
    results: dict[str, Any] = {"command": command, "machine": machine_info(args.device), "datasets": {}}
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="bench-backtest-"))
    if args.validation:
        try:
            rows = run_validation(args.datasets, work, args.device, args.threads, not args.no_progress)
        finally:
            if not args.work:
                shutil.rmtree(work, ignore_errors=True)
        write_json_atomic({"command": command, "machine": results["machine"], "rows": rows}, VALIDATION)
        if (RESULTS / "backtest.json").exists():
            write_doc(json.loads((RESULTS / "backtest.json").read_text()))
        print(f"-> {VALIDATION}, {DOC}")
        return 0
    try:
        for name in args.datasets:
            results["datasets"][name] = run_dataset(DATASETS[name], work, args.device, args.threads,
                                                    not args.no_progress)
    finally:
        if not args.work:
            shutil.rmtree(work, ignore_errors=True)
    write_json_atomic(results, RESULTS / "backtest.json")
    write_doc(results)
    for res in results["datasets"].values():
        h = res["model"]["horizons"]
        print(f"{res['dataset']} at {res['run_date']}: {res['users_scored']} users; "
              + "; ".join(f"{lab} Brier {h[lab]['brier']:.3f} ECE {h[lab]['ece']:.3f}" if h[lab]["observable"]
                          else f"{lab} not observable" for lab in h)
              + f"; AUC 30 d {res['model']['auc_no_return_30d']}; MAE {res['model']['mae_hours']}")
    print(f"-> {RESULTS / 'backtest.json'}, {DOC}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
