"""``python -m thrnn baselines``: every baseline on one split (the protocol of ``thrnn evaluate``), with a report.

Non-neural baselines (deterministic): ``most_popular``, ``markov1`` (next item and first item),
the session-aware ones of :mod:`thrnn.baselines.session_aware` — ``repeat_last``, ``user_recency``,
``user_decay``, ``user_markov1``, ``blend`` and ``sknn`` (next item and first item; ``blend`` and
``sknn`` tuned on a validation split carved from train, their choice in the metrics' ``params``) —
and ``median_global``, ``median_user``, ``lognormal_user`` (the shrunk per-user log-normal,
:mod:`thrnn.baselines.lognormal`) and ``hawkes`` (return time). With ``--neural-epochs N`` > 0
the GRU4Rec-style session GRU (``gru4rec``) and ``hrnn`` are trained with ``thrnn.train.train`` and
evaluated with ``thrnn.evaluate.evaluate_run`` on the same split.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from thrnn.baselines import hawkes, lognormal, median, ranking
from thrnn.baselines import session_aware as sa
from thrnn.baselines.protocol import BaselinePredictions, session_table, targets_from_split, train_gap_hours
from thrnn.evaluate import format_summary, metrics_from_predictions
from thrnn.files import write_json_atomic
from thrnn.io import Split, read_split

log = logging.getLogger(__name__)

BASELINES_FILE = "baselines.json"
NEURAL_BASELINES = ("gru4rec", "hrnn")


def non_neural_baselines(split: Split, *, cap_hours: float = 500.0, hawkes_min_events: int = 5,
                         progress: bool = False, session_aware: bool = True,
                         validation_sessions: int | None = None) -> dict[str, dict[str, Any]]:
    """Metrics of most-popular, Markov-1, the session-aware baselines, global/per-user median gap and
    per-user Hawkes on ``split``.

    Session-aware entries carry ``params`` (what was chosen on validation, or the fixed defaults) and
    ``validation`` (their figures on the validation split of ``validation_sessions`` sessions per
    user; default: the mean number of test sessions per user).
    """
    t = targets_from_split(split)
    pop = ranking.item_popularity(split)
    inner, between = ranking.transition_matrix(split)
    results: dict[str, dict[str, Any]] = {}

    def add(name: str, pred: BaselinePredictions, seconds: float, **extra: Any) -> None:
        m = metrics_from_predictions(pred)
        m.update(model=name, fit_seconds=round(seconds, 3), **extra)
        results[name] = m

    t0 = time.perf_counter()
    add("most_popular", BaselinePredictions(ranking.popularity_ranks(pop, t.next_items),
                                            ranking.popularity_ranks(pop, t.first_items), t.gap_true_hours),
        time.perf_counter() - t0)
    t0 = time.perf_counter()
    add("markov1", BaselinePredictions(ranking.markov_ranks(inner, pop, t.next_prev_items, t.next_items),
                                       ranking.markov_ranks(between, pop, t.first_prev_items, t.first_items),
                                       t.gap_true_hours),
        time.perf_counter() - t0)

    if session_aware:
        for name, r in sa.evaluate(split, validation_sessions=validation_sessions).items():
            if len(r.next_ranks) != len(t.next_items) or len(r.first_ranks) != len(t.first_items):
                raise AssertionError(f"{name}: targets differ from the protocol's targets")
            add(name, BaselinePredictions(r.next_ranks, r.first_ranks, t.gap_true_hours), r.seconds,
                params=r.params, validation=r.validation)

    gaps = train_gap_hours(split)
    t0 = time.perf_counter()
    glob = median.global_median_hours(gaps)
    add("median_global", BaselinePredictions(None, None, t.gap_true_hours, np.full(len(t.gap_true_hours), glob)),
        time.perf_counter() - t0, median_hours=glob)
    t0 = time.perf_counter()
    add("median_user", BaselinePredictions(None, None, t.gap_true_hours,
                                           median.user_median_predictions(gaps, t.gap_users)),
        time.perf_counter() - t0)
    t0 = time.perf_counter()
    pred, users = lognormal.shrunk_lognormal_predictions(split, upper_hours=cap_hours)
    if not np.array_equal(users, t.gap_users):
        raise AssertionError("log-normal gap targets differ from the protocol's gap targets")
    add("lognormal_user", pred, time.perf_counter() - t0)
    t0 = time.perf_counter()
    pred, users, info = hawkes.hawkes_predictions(session_table(split), glob, cap_hours=cap_hours,
                                                  min_events=hawkes_min_events, progress=progress)
    if not np.array_equal(users, t.gap_users):
        raise AssertionError("Hawkes gap targets differ from the protocol's gap targets")
    add("hawkes", BaselinePredictions(None, None, t.gap_true_hours, pred), time.perf_counter() - t0, **info)
    return results


def neural_baselines(data_dir: str | Path, out_dir: str | Path, *, epochs: int, seed: int, dataset: str,
                     device: str = "cpu", models: tuple[str, ...] = NEURAL_BASELINES,
                     progress: bool = False, **overrides: Any) -> dict[str, dict[str, Any]]:
    """Train and evaluate the neural baselines; run folders go to ``out_dir/runs/<model>``."""
    from thrnn.config import config_for
    from thrnn.evaluate import evaluate_run
    from thrnn.train import train

    results = {}
    for model in models:
        cfg = config_for(dataset, model, epochs=epochs, seed=seed, device=device, **overrides)
        run_dir = Path(out_dir) / "runs" / model
        t0 = time.perf_counter()
        train(data_dir, run_dir, cfg, progress=progress)
        m = evaluate_run(data_dir, run_dir, device=device)
        m["fit_seconds"] = round(time.perf_counter() - t0, 3)
        results[model] = m
    return results


def run_baselines(data_dir: str | Path, out_dir: str | Path, *, neural_epochs: int = 0, seed: int = 42,
                  dataset: str = "lastfm", device: str = "cpu", progress: bool = False,
                  session_aware: bool = True, validation_sessions: int | None = None) -> dict[str, dict[str, Any]]:
    """All baselines on one split; writes ``baselines.json``, ``report.md`` and plots into ``out_dir``."""
    from thrnn.report import write_report

    split = read_split(data_dir)
    results = non_neural_baselines(split, progress=progress, session_aware=session_aware,
                                   validation_sessions=validation_sessions)
    if neural_epochs > 0:
        results.update(neural_baselines(data_dir, out_dir, epochs=neural_epochs, seed=seed, dataset=dataset,
                                        device=device, progress=progress))
    out = Path(out_dir)
    write_json_atomic(results, out / BASELINES_FILE)
    write_report(results, out, title=f"Baselines on {Path(data_dir).name}")
    return results


def configure_parser(p: argparse.ArgumentParser) -> None:
    p.description = ("Evaluate the baselines on one split (the protocol of thrnn evaluate): most-popular, Markov-1, the session-aware "
                     "ones (repeat_last, user_recency, user_decay, user_markov1, blend and sknn; blend and sknn "
                     "tuned on a validation split carved from train), median gaps, per-user Hawkes; optionally "
                     "the GRU4Rec-style GRU and HRNN.")
    p.add_argument("--data", required=True, help="sessionize output folder (train/, test/, items/, users/)")
    p.add_argument("--out", required=True, help="folder for baselines.json, report.md and the plots")
    p.add_argument("--neural-epochs", type=int, default=0,
                   help="train gru4rec and hrnn for this many epochs and evaluate them (0 = skip; default 0)")
    p.add_argument("--seed", type=int, default=42, help="seed of the neural baselines (default 42)")
    p.add_argument("--dataset", default="lastfm",
                   help="preset of the neural baselines' hyper-parameters: lastfm or reddit (default lastfm)")
    p.add_argument("--device", default="cpu", help="cpu, cuda or auto for the neural baselines (default cpu)")
    p.add_argument("--validation-sessions", type=int, default=None,
                   help="training sessions per user moved to the validation split that tunes blend and sknn "
                        "(default: the mean number of test sessions per user)")
    p.add_argument("--no-session-aware", action="store_true",
                   help="skip the session-aware baselines (repeat_last ... sknn)")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")


def main(args: argparse.Namespace) -> int:
    if args.neural_epochs < 0:
        raise SystemExit("--neural-epochs must be >= 0")
    if args.validation_sessions is not None and args.validation_sessions < 1:
        raise SystemExit("--validation-sessions must be >= 1")
    results = run_baselines(args.data, args.out, neural_epochs=args.neural_epochs, seed=args.seed,
                            dataset=args.dataset, device=args.device, progress=not args.no_progress,
                            session_aware=not args.no_session_aware,
                            validation_sessions=args.validation_sessions)
    for name, m in results.items():
        print(f"== {name}\n{format_summary(m)}", file=sys.stderr)
    print(f"wrote {Path(args.out) / BASELINES_FILE}", file=sys.stderr)
    return 0
