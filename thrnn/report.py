"""Evaluation report of several models: ``metrics.json``, ``report.md`` and PNG plots.

``results`` maps a model name to its flat metrics dict (:func:`thrnn.evaluate.metrics_from_predictions`);
a figure ``x`` may come with ``x_std`` (benchmarks over seeds), shown as ``mean ± std``. Figures that
do not apply to a model (None) are shown as "–" and left out of the plots. Models whose dict carries
``params`` (parameters chosen on validation, nested per target kind or flat) or ``validation``
(figures on the validation split) get a row in a parameters table; ``reliability`` (the per-horizon bins
of :func:`thrnn.calibration.horizon_calibration`) feeds the reliability diagram; other non-numeric keys
are ignored.

Models with any of ``nll_per_gap`` (nats), ``coverage_q10/q50/q90`` or ``brier_L`` / ``ece_L`` for
L = 1d, 7d, 30d get a row in a "Return-time distribution" table.

Plots (matplotlib, Agg backend): ``recall_at_k.png`` and ``mrr_at_k.png`` (bars per model for
k = 5, 10, 20) and ``mae_by_gap_bucket.png`` (MAE per true-gap bucket per model, with the share of
gaps in each bucket as bars on a second axis); ``reliability.png`` (observed frequency against mean
predicted probability per horizon and model) when a model has ``reliability``, and a stale one from an
earlier run is removed when none has. Every file is written to a staging folder and then
renamed into ``out_dir``, so readers never see a half-written file.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after choosing the backend)

from thrnn.calibration import HORIZONS_HOURS, horizon_label, plot_reliability  # noqa: E402
from thrnn.metrics import DEFAULT_KS  # noqa: E402

METRICS_FILE = "metrics.json"
REPORT_FILE = "report.md"
RECALL_PLOT = "recall_at_k.png"
MRR_PLOT = "mrr_at_k.png"
MAE_PLOT = "mae_by_gap_bucket.png"
RELIABILITY_PLOT = "reliability.png"


def _fmt(m: Mapping[str, Any], key: str, digits: int) -> str:
    v = m.get(key)
    if v is None:
        return "–"
    if isinstance(v, int) and not isinstance(v, bool):
        return f"{v:,}"
    s = f"{v:.{digits}f}"
    std = m.get(f"{key}_std")
    return f"{s} ± {std:.{digits}f}" if std is not None else s


def _params(p: Any) -> str:
    """``{"next": {"k": 50}, "first": {...}}`` -> ``next: k 50; first: ...`` (flat dicts: ``k 50, ...``)."""
    if not isinstance(p, Mapping) or not p:
        return "–"

    def flat(d: Mapping[str, Any]) -> str:
        return ", ".join(f"{k} {v:g}" if isinstance(v, float) else f"{k} {v}" for k, v in d.items())

    if all(isinstance(v, Mapping) for v in p.values()):
        return "; ".join(f"{k}: {flat(v)}" for k, v in p.items())
    return flat(p)


def _buckets(results: Mapping[str, Mapping[str, Any]], key: str = "mae_hours_by_bucket") -> list[dict[str, Any]]:
    """Bucket counts and shares (the same for every model of one split): the first model that has them."""
    for m in results.values():
        if m.get(key):
            return list(m[key])
    return []


def _reliability(results: Mapping[str, Mapping[str, Any]]) -> dict[str, Mapping[str, Any]]:
    """Model name -> per-horizon reliability bins, for the models that have them."""
    return {n: m["reliability"] for n, m in results.items() if isinstance(m.get("reliability"), Mapping)}


def _distribution_columns() -> list[tuple[str, str, int]]:
    """(metrics key, column heading, digits) of the return-time distribution table."""
    cols = [("nll_per_gap", "NLL/gap (nats)", 3)]
    cols += [(f"coverage_q{q}", f"coverage q{q}", 3) for q in (10, 50, 90)]
    for h in HORIZONS_HOURS:
        lb = horizon_label(h)
        cols += [(f"brier_{lb}", f"Brier {lb}", 4), (f"ece_{lb}", f"ECE {lb}", 4)]
    return cols


def markdown_report(results: Mapping[str, Mapping[str, Any]], title: str = "Evaluation report",
                    notes: str | None = None) -> str:
    """A markdown page: ranking, return-time, parameters, return-time distribution and per-bucket MAE tables."""
    lines = [f"# {title}", ""]
    if notes:
        lines += [notes.strip(), ""]
    ks = DEFAULT_KS
    head = ["model"] + [f"Recall@{k}" for k in ks] + [f"MRR@{k}" for k in ks] + [
        "first-item Recall@20", "first-item MRR@20", "targets"]
    lines += ["## Next item (every test position but the first, full ranking, ties against the model)", "",
              "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, m in results.items():
        row = [name] + [_fmt(m, f"recall@{k}", 4) for k in ks] + [_fmt(m, f"mrr@{k}", 4) for k in ks]
        row += [_fmt(m, "first_item_recall@20", 4), _fmt(m, "first_item_mrr@20", 4), _fmt(m, "n_targets", 0)]
        lines.append("| " + " | ".join(row) + " |")
    head = ["model", "MAE median (h)", "MAE mean (h)", "mean P(no return)", "gaps"]
    lines += ["", "## Return time (MAE in hours, targets and predictions capped at 500 h)", "",
              "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, m in results.items():
        if m.get("mae_hours") is None and m.get("mae_hours_mean") is None:
            continue
        row = [name, _fmt(m, "mae_hours", 2), _fmt(m, "mae_hours_mean", 2), _fmt(m, "mean_no_return_prob", 3),
               _fmt(m, "n_gaps", 0)]
        lines.append("| " + " | ".join(row) + " |")
    tuned = [n for n, m in results.items() if isinstance(m.get("params"), Mapping) or isinstance(m.get("validation"), Mapping)]
    if tuned:
        head = ["model", "parameters", "validation R@20", "validation MRR@20", "validation first-item R@20",
                "validation first-item MRR@20"]
        lines += ["", "## Parameters and validation figures (validation split carved from train)", "",
                  "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for name in tuned:
            m = results[name]
            v = m.get("validation") if isinstance(m.get("validation"), Mapping) else {}
            row = [name, _params(m.get("params")), _fmt(v, "recall@20", 4), _fmt(v, "mrr@20", 4),
                   _fmt(v, "first_item_recall@20", 4), _fmt(v, "first_item_mrr@20", 4)]
            lines.append("| " + " | ".join(row) + " |")
    cols = _distribution_columns()
    dist = [n for n, m in results.items() if any(m.get(k) is not None for k, _, _ in cols)]
    if dist or _reliability(results):
        lines += ["", "## Return-time distribution (NLL per gap, quantile coverage, calibration of P(back within L))",
                  ""]
    if dist:
        head = ["model"] + [h for _, h, _ in cols]
        lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for name in dist:
            row = [name] + [_fmt(results[name], k, d) for k, _, d in cols]
            lines.append("| " + " | ".join(row) + " |")
    if _reliability(results):
        lines += ([""] if dist else []) + [f"![Reliability diagram]({RELIABILITY_PLOT})"]
    buckets = _buckets(results)
    # a model's figures may come without buckets (e.g. kept from an earlier benchmark run)
    timed = [n for n, m in results.items() if m.get("mae_hours") is not None and m.get("mae_hours_by_bucket")]
    if buckets and timed:
        head = ["gap ≤ (h)", "count", "share"] + [f"{n} MAE (h)" for n in timed]
        lines += ["", "## MAE of the median prediction by true-gap bucket", "",
                  "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for i, b in enumerate(buckets):
            row = [f"{b['upper_hours']:g}", f"{b['count']:,}", f"{b['share']:.3f}"]
            for n in timed:
                mb = results[n]["mae_hours_by_bucket"][i]
                row.append("–" if mb.get("mae_hours") is None else f"{mb['mae_hours']:.1f}")
            lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n"


def _bars_at_k(results: Mapping[str, Mapping[str, Any]], metric: str, path: Path) -> None:
    names = [n for n, m in results.items() if m.get(f"{metric}@{DEFAULT_KS[-1]}") is not None]
    fig, ax = plt.subplots(figsize=(max(5.0, 1.2 * len(DEFAULT_KS) * max(1, len(names)) ** 0.5 + 3), 3.6))
    width = 0.8 / max(1, len(names))
    for j, name in enumerate(names):
        m = results[name]
        xs = [i + (j - (len(names) - 1) / 2) * width for i in range(len(DEFAULT_KS))]
        ys = [m[f"{metric}@{k}"] for k in DEFAULT_KS]
        errs = [m.get(f"{metric}@{k}_std") or 0.0 for k in DEFAULT_KS]
        ax.bar(xs, ys, width, yerr=errs if any(errs) else None, label=name, capsize=2)
    ax.set_xticks(range(len(DEFAULT_KS)), [f"@{k}" for k in DEFAULT_KS])
    ax.set_ylabel("Recall" if metric == "recall" else "MRR")
    ax.set_title(f"{'Recall' if metric == 'recall' else 'MRR'}@k, next item")
    if names:
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _mae_plot(results: Mapping[str, Mapping[str, Any]], path: Path) -> None:
    fig, ax = plt.subplots(figsize=(8, 4))
    buckets = _buckets(results)
    labels = [f"{b['upper_hours']:g}" for b in buckets]
    if buckets:
        ax2 = ax.twinx()
        ax2.bar(range(len(buckets)), [b["share"] for b in buckets], color="0.85", zorder=0)
        ax2.set_ylabel("share of gaps")
        ax.set_zorder(ax2.get_zorder() + 1)
        ax.patch.set_visible(False)
    for name, m in results.items():
        if m.get("mae_hours") is None or not m.get("mae_hours_by_bucket"):
            continue
        ys = [b["mae_hours"] if b["mae_hours"] is not None else float("nan") for b in m["mae_hours_by_bucket"]]
        ax.plot(range(len(ys)), ys, marker="o", ms=3, label=f"{name} ({m['mae_hours']:.1f} h)")
    ax.set_xticks(range(len(labels)), labels, rotation=60, fontsize=7)
    ax.set_xlabel("true gap ≤ (hours)")
    ax.set_ylabel("MAE (hours)")
    ax.set_title("Return-time MAE by gap bucket (median prediction)")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_report(results: Mapping[str, Mapping[str, Any]], out_dir: str | Path, *,
                 title: str = "Evaluation report", notes: str | None = None) -> dict[str, Path]:
    """Write ``metrics.json``, ``report.md`` and the plots into ``out_dir``; returns their paths."""
    if not results:
        raise ValueError("no results to report")
    for name, m in results.items():
        if not isinstance(m, Mapping):
            raise TypeError(f"results[{name!r}] must be a metrics dict, got {type(m).__name__}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".report-", dir=out))
    writers: dict[str, Callable[[Path], None]] = {
        METRICS_FILE: lambda p: p.write_text(json.dumps(results, indent=2, sort_keys=True, allow_nan=False) + "\n"),
        REPORT_FILE: lambda p: p.write_text(markdown_report(results, title, notes)),
        RECALL_PLOT: lambda p: _bars_at_k(results, "recall", p),
        MRR_PLOT: lambda p: _bars_at_k(results, "mrr", p),
        MAE_PLOT: lambda p: _mae_plot(results, p),
    }
    reliability = _reliability(results)
    if reliability:
        writers[RELIABILITY_PLOT] = lambda p: plot_reliability(reliability, p, "Reliability of P(back within L)")
    try:
        for name, write in writers.items():
            write(staging / name)
        paths = {}
        for name in writers:
            os.replace(staging / name, out / name)
            paths[name] = out / name
        if not reliability:
            # a diagram left from an earlier run would no longer match metrics.json
            (out / RELIABILITY_PLOT).unlink(missing_ok=True)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return paths


def plot_training_curves(history: Any, path: Path) -> Path | None:
    """The per-epoch training losses of a run's history as a PNG at ``path``; None when there are none."""
    import pandas as pd

    records = history.get("epochs") if isinstance(history, Mapping) else history
    if not records:
        return None
    frame = pd.DataFrame(records)
    losses = [c for c in ("loss", "loss_rec", "loss_time", "loss_first") if c in frame and frame[c].notna().any()]
    if not losses:
        return None
    x = frame["epoch"] if "epoch" in frame else range(1, len(frame) + 1)
    fig, ax = plt.subplots(figsize=(6, 4))
    for c in losses:
        ax.plot(x, frame[c], marker="o", label=c)
    ax.set_xlabel("epoch")
    ax.set_ylabel("training loss")
    ax.set_title("Training curves")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
