"""Calibration of return-time probabilities: Brier score, reliability bins, ECE, ROC AUC, quantile coverage.

The return-time model gives, per gap and horizon ``h`` (hours), a probability ``p`` that the user is back
within ``h``; the label ``y`` is 1 when the true gap is ``<= h``, else 0. With ``N`` pairs ``(p_i, y_i)``:

- Brier score: ``(1/N) Σ (p_i - y_i)²`` (0 is perfect; always predicting the base rate ``b`` gives
  ``b(1 - b)``).
- Reliability bins: ``n_bins`` equal-width bins on [0, 1]; bin ``i`` holds ``i/n <= p < (i+1)/n``, and
  ``p == 1`` goes to the last bin. Per bin: ``count``, ``mean_p`` (mean prediction) and ``observed``
  (mean label, the observed frequency); both None for an empty bin.
- Expected calibration error (ECE): ``Σ_bins (count/N) · |mean_p - observed|`` over non-empty bins.
- ROC AUC: the probability that a random positive scores above a random negative, ties counting 1/2;
  computed as the Mann–Whitney ``U`` with average ranks, ``U / (n_pos · n_neg)``.
- Quantile coverage at level ``q``: the share of true values ``<=`` the predicted ``q``-quantile (a
  calibrated model covers a share ``q``); key ``coverage_q10`` for ``q = 0.1``, ``coverage_q2.5`` for
  ``q = 0.025``.

Every figure is None on empty input (and ROC AUC when one class is absent) rather than NaN, so the
results stay valid JSON. Horizons are labelled in days when they are whole days (``24 -> "1d"``), else in
hours (``36 -> "36h"``).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from scipy.stats import rankdata

from thrnn.files import atomic_write

HORIZONS_HOURS: tuple[float, ...] = (24.0, 168.0, 720.0)


def horizon_label(hours: float) -> str:
    """Short label of a horizon: whole days as ``"7d"``, anything else as ``"36h"``."""
    if hours % 24 == 0:
        return f"{hours / 24:g}d"
    return f"{hours:g}h"


def _labels(y: Any, shape: tuple[int, ...]) -> np.ndarray:
    y = np.asarray(y)
    if y.shape != shape:
        raise ValueError(f"labels have shape {y.shape}, predictions {shape}")
    if y.size and not np.isin(y, (0, 1)).all():
        raise ValueError("labels must be 0/1 (or bool)")
    return y.astype(float).ravel()


def _probs_labels(p: Any, y: Any) -> tuple[np.ndarray, np.ndarray]:
    p = np.asarray(p, dtype=float)
    y = _labels(y, p.shape)
    p = p.ravel()
    if p.size and (not np.isfinite(p).all() or p.min() < 0.0 or p.max() > 1.0):
        raise ValueError("probabilities must be finite and within [0, 1]")
    return p, y


def brier_score(p: Any, y: Any) -> float | None:
    """Mean squared error of probabilities ``p`` against 0/1 labels ``y``; None when empty."""
    p, y = _probs_labels(p, y)
    if not p.size:
        return None
    return float(np.mean((p - y) ** 2))


def reliability_bins(p: Any, y: Any, n_bins: int = 10) -> list[dict[str, Any]]:
    """Per equal-width bin of ``p`` on [0, 1]: bounds, count, mean prediction and observed frequency."""
    if n_bins < 1:
        raise ValueError(f"n_bins must be >= 1, got {n_bins}")
    p, y = _probs_labels(p, y)
    # i / n is correctly rounded, so a p written as exactly i/n (0.29 with 100 bins) lands in bin i,
    # which int(p * n) gets wrong for some values.
    edges = np.arange(n_bins + 1) / n_bins
    idx = np.minimum(np.searchsorted(edges, p, side="right") - 1, n_bins - 1)
    counts = np.bincount(idx, minlength=n_bins)
    sum_p = np.bincount(idx, weights=p, minlength=n_bins)
    sum_y = np.bincount(idx, weights=y, minlength=n_bins)
    out = []
    for i in range(n_bins):
        c = int(counts[i])
        out.append({"lower": float(edges[i]), "upper": float(edges[i + 1]), "count": c,
                    "mean_p": float(sum_p[i] / c) if c else None,
                    "observed": float(sum_y[i] / c) if c else None})
    return out


def expected_calibration_error(p: Any, y: Any, n_bins: int = 10) -> float | None:
    """Count-weighted mean gap between mean prediction and observed frequency over the bins; None when empty."""
    bins = reliability_bins(p, y, n_bins)
    n = sum(b["count"] for b in bins)
    if not n:
        return None
    return float(sum(b["count"] / n * abs(b["mean_p"] - b["observed"]) for b in bins if b["count"]))


def ece_if_calibrated(p: Any, n_bins: int = 10, draws: int = 200, seed: int = 0) -> float | None:
    """The ECE that perfectly calibrated predictions ``p`` would still show on this many users: the mean
    over ``draws`` outcome sets drawn as ``y ~ Bernoulli(p)`` (seeded). On a few hundred users it is
    several hundredths, so an ECE at that level is sampling noise, not miscalibration."""
    p = np.asarray(p, dtype=np.float64)
    if p.size == 0:
        return None
    rng = np.random.default_rng(seed)
    got = [expected_calibration_error(p, (rng.random(p.size) < p).astype(np.float64), n_bins) for _ in range(draws)]
    return float(np.mean(got))


def roc_auc(score: Any, y: Any) -> float | None:
    """P(random positive scores above random negative), ties 1/2; None when a class is absent."""
    s = np.asarray(score, dtype=float)
    y = _labels(y, s.shape).astype(bool)
    s = s.ravel()
    if s.size and not np.isfinite(s).all():
        raise ValueError("scores must be finite")
    n_pos = int(y.sum())
    n_neg = y.size - n_pos
    if not n_pos or not n_neg:
        return None
    # Average ranks make a tied positive/negative pair count 1/2 (Mann–Whitney U).
    u = float(rankdata(s)[y].sum()) - n_pos * (n_pos + 1) / 2
    return u / (n_pos * n_neg)


def _level_key(q: float) -> str:
    # round() drops float noise such as 0.07 * 100 = 7.000000000000001
    return f"coverage_q{round(q * 100, 10):g}"


def quantile_coverage(true: Any, quantiles: Mapping[float, np.ndarray]) -> dict[str, float | None]:
    """Per level ``q``: share of ``true`` values ``<=`` the predicted ``q``-quantile; None when empty."""
    t = np.asarray(true, dtype=float)
    if np.isnan(t).any():
        raise ValueError("true values must not be NaN")
    out: dict[str, float | None] = {}
    for q in sorted(quantiles):
        if not 0.0 <= q <= 1.0:
            raise ValueError(f"quantile level must be within [0, 1], got {q}")
        pred = np.asarray(quantiles[q], dtype=float)
        if pred.shape != t.shape:
            raise ValueError(f"quantile {q:g} has shape {pred.shape}, true values {t.shape}")
        # +inf is a legitimate quantile (mass on "never returns"); NaN would silently count as not covered.
        if np.isnan(pred).any():
            raise ValueError(f"quantile {q:g} predictions must not be NaN")
        out[_level_key(q)] = float(np.mean(t <= pred)) if t.size else None
    return out


def horizon_calibration(p_by_h: Mapping[float, np.ndarray], y_by_h: Mapping[float, np.ndarray],
                        n_bins: int = 10) -> dict[str, Any]:
    """Flat calibration figures per horizon, as stored in the evaluation report.

    For each horizon label ``L`` (horizons of either mapping, ascending): ``brier_L``, ``ece_L``,
    ``base_rate_L`` (mean label), ``mean_p_L`` and ``n_L``; plus ``"reliability"``: ``{L: bins}``. A
    horizon without predictions or labels gets None figures, ``n_L = 0`` and bins of count 0.
    """
    out: dict[str, Any] = {}
    reliability: dict[str, list[dict[str, Any]]] = {}
    for h in sorted(set(p_by_h) | set(y_by_h)):
        label = horizon_label(h)
        if h in p_by_h and h in y_by_h:
            p, y = _probs_labels(p_by_h[h], y_by_h[h])
        else:
            p = y = np.empty(0)
        empty = not p.size
        out[f"brier_{label}"] = brier_score(p, y)
        out[f"ece_{label}"] = expected_calibration_error(p, y, n_bins)
        out[f"base_rate_{label}"] = None if empty else float(y.mean())
        out[f"mean_p_{label}"] = None if empty else float(p.mean())
        out[f"n_{label}"] = int(p.size)
        reliability[label] = reliability_bins(p, y, n_bins)
    out["reliability"] = reliability
    return out


def _panel_order(labels: list[str]) -> list[str]:
    standard = [horizon_label(h) for h in HORIZONS_HOURS]
    return [lb for lb in standard if lb in labels] + [lb for lb in labels if lb not in standard]


def plot_reliability(reliability: Mapping[str, Mapping[str, list[dict]]], path: str | Path,
                     title: str = "") -> Path:
    """Reliability diagram PNG: a panel per horizon, a line per model, marker area by bin count.

    ``reliability`` maps a model name to ``{label: bins}`` (the ``"reliability"`` entry of
    :func:`horizon_calibration`). Empty bins are skipped. The file is rendered next to ``path`` and then
    renamed, so readers never see a half-written PNG.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    labels: list[str] = []
    for per_h in reliability.values():
        labels += [lb for lb in per_h if lb not in labels]
    labels = _panel_order(labels)
    n = max(1, len(labels))
    # constrained layout keeps the axis labels of the square panels inside the figure
    fig, axes = plt.subplots(1, n, figsize=(3.6 * n + 0.6, 4.2), squeeze=False, layout="constrained")
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, label in zip(axes[0], labels or [None], strict=True):
        ax.plot([0, 1], [0, 1], "--", color="0.6", lw=1)
        # a little room so markers at 0 or 1 are not cut in half
        ax.set_xlim(-0.02, 1.02)
        ax.set_ylim(-0.02, 1.02)
        ax.set_aspect("equal")
        ax.set_xlabel("mean predicted probability")
        if label is None:
            ax.text(0.5, 0.5, "no calibration data", ha="center", va="center")
            continue
        ax.set_title(f"back within {label}")
        for j, (model, per_h) in enumerate(reliability.items()):
            bins = [b for b in per_h.get(label, []) if b["count"]]
            if not bins:
                continue
            color = colors[j % len(colors)]
            xs = [b["mean_p"] for b in bins]
            ys = [b["observed"] for b in bins]
            counts = np.array([b["count"] for b in bins], dtype=float)
            ax.plot(xs, ys, "-", color=color, lw=1.2, label=f"{model} (n={int(counts.sum()):,})")
            # marker area by the bin's share of this model's pairs: sparse bins look light-weight
            ax.scatter(xs, ys, s=8 + 80 * counts / counts.max(), color=color, zorder=3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7, loc="upper left")
    axes[0][0].set_ylabel("observed frequency")
    if title:
        fig.suptitle(title)
    try:
        atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=110))
    finally:
        plt.close(fig)
    return path
