"""Evaluation of a trained run on the test split (docs/design.md §5) and the ``thrnn evaluate`` CLI.

``python -m thrnn evaluate --data DIR --run RUN_DIR --out metrics.json`` writes one flat JSON object:

- ``recall@k``, ``mrr@k`` (k = 5, 10, 20) over every test position but the first, full ranking,
  padding excluded, ties against the model; ``n_targets``;
- ``first_item_recall@k``, ``first_item_mrr@k``, ``first_item_n_targets`` from the first-item head
  (None for models without one);
- ``mae_hours`` (median prediction), ``mae_hours_mean`` (mean prediction given a return within the
  cut-off), ``n_gaps``, ``mae_hours_by_bucket`` / ``mae_hours_mean_by_bucket`` (lists of
  ``{upper_hours, count, share, mae_hours}``) and ``mean_no_return_prob``; time figures are None for
  models without a time head (bucket counts and shares are still given);
- for models that predict a law of each gap (THRNN, the shrunk log-normal baseline): ``nll_per_gap``
  (nats, hours axis), ``coverage_q10/q50/q90`` (share of gaps at or below the predicted quantile) and,
  per horizon L in 1d/7d/30d, ``brier_L``, ``ece_L``, ``base_rate_L``, ``mean_p_L``, ``n_L`` of
  P(gap <= L) against what happened, plus ``reliability`` (the bins of the reliability diagram);
  ``thrnn.calibration`` defines each figure.

Every model and baseline goes through :func:`metrics_from_predictions`, so they share one protocol.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from thrnn.files import write_json_atomic
from thrnn.metrics import DEFAULT_KS, GAP_BUCKET_UPPER_HOURS, GAP_CAP_HOURS, ranking_metrics, return_time_mae

FIRST_PREFIX = "first_item_"


class PredictionsLike(Protocol):
    """What :func:`metrics_from_predictions` reads (``thrnn.inference.TestPredictions`` has it)."""

    next_item_ranks: np.ndarray | None
    first_item_ranks: np.ndarray | None
    gap_true_hours: np.ndarray
    gap_median_hours: np.ndarray | None
    gap_mean_hours: np.ndarray | None
    gap_no_return_prob: np.ndarray | None
    # optional (getattr): the law of each gap, see thrnn.inference.TestPredictions
    # gap_log_density, gap_quantiles, gap_p_within


def _distribution(pred: PredictionsLike, true_hours: np.ndarray) -> dict[str, Any]:
    """NLL per gap, quantile coverage and per-horizon calibration of the predicted laws (None without)."""
    from thrnn.calibration import HORIZONS_HOURS, horizon_calibration, horizon_label, quantile_coverage

    log_density = getattr(pred, "gap_log_density", None)
    quantiles = getattr(pred, "gap_quantiles", None)
    p_within = getattr(pred, "gap_p_within", None)
    out: dict[str, Any] = {"nll_per_gap": None}
    if log_density is not None and len(log_density):
        ld = np.asarray(log_density, dtype=np.float64)
        out["nll_per_gap"] = float(-ld.mean()) if np.isfinite(ld).all() else None
    if quantiles is not None:
        out.update(quantile_coverage(true_hours, quantiles))
    else:
        out.update({f"coverage_q{round(q * 100)}": None for q in (0.1, 0.5, 0.9)})
    if p_within is not None:
        out.update(horizon_calibration(p_within, {h: true_hours <= h for h in p_within}))
    else:
        for h in HORIZONS_HOURS:
            label = horizon_label(h)
            out.update({f"brier_{label}": None, f"ece_{label}": None, f"base_rate_{label}": None,
                        f"mean_p_{label}": None, f"n_{label}": 0})
    return out


def _ranking(ranks: np.ndarray | None, prefix: str, ks: tuple[int, ...]) -> dict[str, Any]:
    if ranks is None:
        out: dict[str, Any] = {f"{prefix}{m}@{k}": None for k in ks for m in ("recall", "mrr")}
        out[f"{prefix}n_targets"] = 0
        return out
    ranks = np.asarray(ranks)
    if ranks.size and int(ranks.min()) < 1:
        raise ValueError(f"{prefix or 'next-item '}ranks must be >= 1 (1-based), got {int(ranks.min())}")
    return ranking_metrics(ranks, ks, prefix)


def _time(true_hours: np.ndarray, pred_hours: np.ndarray | None, suffix: str) -> dict[str, Any]:
    true_hours = np.asarray(true_hours, dtype=np.float64)
    if pred_hours is None:
        # bucket counts and shares of the targets still help read the other models' figures
        res = return_time_mae(true_hours, np.zeros_like(true_hours))
        buckets = [dict(b, mae_hours=None) for b in res["mae_hours_by_bucket"]]  # type: ignore[union-attr]
        return {f"mae_hours{suffix}": None, f"mae_hours{suffix}_by_bucket": buckets}
    pred_hours = np.asarray(pred_hours, dtype=np.float64)
    if pred_hours.shape != true_hours.shape:
        raise ValueError(f"{len(pred_hours)} return-time predictions for {len(true_hours)} gaps")
    if np.any(pred_hours < 0):
        raise ValueError("negative return-time predictions")
    res = return_time_mae(true_hours, pred_hours)
    mae = res["mae_hours"]
    return {
        f"mae_hours{suffix}": None if isinstance(mae, float) and math.isnan(mae) else mae,
        f"mae_hours{suffix}_by_bucket": res["mae_hours_by_bucket"],
    }


def metrics_from_predictions(pred: PredictionsLike, ks: tuple[int, ...] = DEFAULT_KS) -> dict[str, Any]:
    """The flat metrics dict of docs/design.md §5 from per-target ranks and per-gap predictions."""
    true_hours = np.asarray(pred.gap_true_hours, dtype=np.float64)
    if true_hours.size and (np.isnan(true_hours).any() or (true_hours < 0).any()):
        raise ValueError("gap_true_hours must be >= 0 and not NaN (only real gaps are targets)")
    out: dict[str, Any] = {}
    out.update(_ranking(pred.next_item_ranks, "", ks))
    out.update(_ranking(pred.first_item_ranks, FIRST_PREFIX, ks))
    out["n_gaps"] = int(len(true_hours))
    out.update(_time(true_hours, pred.gap_median_hours, ""))
    out.update(_time(true_hours, pred.gap_mean_hours, "_mean"))
    out.update(_distribution(pred, true_hours))
    p = pred.gap_no_return_prob
    out["mean_no_return_prob"] = float(np.mean(p)) if p is not None and len(p) else None
    out["gap_cap_hours"] = GAP_CAP_HOURS
    return out


def evaluate_run(data_dir: str | Path, run_dir: str | Path, device: str = "cpu", *,
                 progress: bool = False) -> dict[str, Any]:
    """Load ``run_dir/model.pt``, replay the split of ``data_dir`` and return the flat metrics dict."""
    from thrnn.checkpoint import load_run
    from thrnn.device import resolve_device
    from thrnn.inference import predict_test
    from thrnn.io import read_split

    dev = resolve_device(device)
    model, cfg = load_run(run_dir, device=dev)
    split = read_split(data_dir)
    pred = predict_test(model, split, cfg, device=dev, progress=progress)
    metrics = metrics_from_predictions(pred)
    metrics["model"] = cfg.model
    return metrics


def format_summary(metrics: dict[str, Any]) -> str:
    """One line per figure family for the terminal."""

    def f(key: str, fmt: str = ".4f") -> str:
        v = metrics.get(key)
        return "n/a" if v is None else format(v, fmt)

    rec = " ".join(f"R@{k} {f(f'recall@{k}')} MRR@{k} {f(f'mrr@{k}')}" for k in DEFAULT_KS)
    return (
        f"next item ({metrics.get('n_targets', 0)} targets): {rec}\n"
        f"first item ({metrics.get('first_item_n_targets', 0)} targets): "
        f"R@20 {f('first_item_recall@20')} MRR@20 {f('first_item_mrr@20')}\n"
        f"return time ({metrics.get('n_gaps', 0)} gaps, capped at {GAP_BUCKET_UPPER_HOURS[-1]:g} h): "
        f"MAE median {f('mae_hours', '.2f')} h, MAE mean {f('mae_hours_mean', '.2f')} h"
    )


def configure_parser(p: argparse.ArgumentParser) -> None:
    p.description = "Evaluate a trained run on the test split of a sessionized dataset (docs/design.md §5)."
    p.add_argument("--data", required=True, help="sessionize output folder (train/, test/, items/, users/)")
    p.add_argument("--run", required=True, help="training run folder holding model.pt")
    p.add_argument("--out", required=True, help="path of the metrics JSON to write (atomically)")
    p.add_argument("--device", default="cpu", help="cpu, cuda or auto (CUDA when present); default cpu")
    p.add_argument("--report-dir", default=None,
                   help="also write report.md and the PNG plots for this run into this folder")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def main(args: argparse.Namespace) -> int:
    metrics = evaluate_run(args.data, args.run, device=args.device, progress=not args.no_progress)
    write_json_atomic(metrics, args.out)
    if args.report_dir:
        from thrnn.report import write_report

        write_report({metrics.get("model", "model"): metrics}, args.report_dir)
    print(format_summary(metrics), file=sys.stderr)
    print(f"wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":  # pragma: no cover
    parser = argparse.ArgumentParser(prog="python -m thrnn.evaluate")
    configure_parser(parser)
    raise SystemExit(main(parser.parse_args()))
