"""Nightly scoring: next-session recommendations and churn risk per user (docs/model.md).

Every user's whole history (train then test sessions) is replayed through the model in eval mode to
build the FIFO of session representations; the inter-session state after the last session then
gives, for THRNN:

- recommendations: the first-item head's top-K items for the user's next session;
- return time, measured from the end of the user's last session and conditioned on no return during
  the time already elapsed (``e`` = the UTC midnight after the run date minus the last session end,
  clipped at 0): the median gap (the cut-off when never returning is the likelier) and the mean gap
  given a return within ``cfg.time_cutoff_hours``, ``p_no_return`` = P(never returns | not back yet) and
  ``P(return within h | not back yet)`` for each horizon (:class:`thrnn.churn.ChurnLaw`). With the
  log-normal head the chance of never returning after a session is fitted tonight on the open gaps
  (:func:`thrnn.churn.fit_no_return`), and the return probabilities are recalibrated on the weeks
  before the night (:mod:`thrnn.recalibration`);
- ``churn_risk`` = 1 - P(return within 30 days | not back yet).

HRNN and the GRU4Rec-style GRU have neither a first-item nor a time head: their recommendations are
the intra GRU's prediction after the last item of the user's last session, and their time columns
are NaN.
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from contract import columns as C
from thrnn.checkpoint import load_run
from thrnn.churn import ChurnLaw, fit_no_return
from thrnn.config import TrainConfig
from thrnn.data import SessionData, load_sessions
from thrnn.device import resolve_device
from thrnn.files import atomic_write
from thrnn.inference import (
    EVAL_BATCH_USERS,
    ChunkScorer,
    item_mask,
    personal_history,
    replay,
    time_covariates,
)
from thrnn.io import Split, read_split
from thrnn.models import HierarchicalGRU
from thrnn.recalibration import Recalibration, SessionTimes, fit_recalibration

log = logging.getLogger(__name__)

CHURN_HORIZON_HOURS = 720.0
RECOMMENDATION_COLUMNS = [C.USER_ID, "rank", C.ITEM_ID, "score"]


def horizon_column(hours: float) -> str:
    """``p_return_1d`` for 24 h, ``p_return_7d`` for 168 h, ``p_return_36h`` for 36 h."""
    return f"p_return_{hours / 24:g}d" if hours % 24 == 0 else f"p_return_{hours:g}h"


def churn_columns(horizons_hours: tuple[float, ...] = (24, 168, 720)) -> list[str]:
    return [C.USER_ID, "last_session_end", "elapsed_hours", "expected_return_hours", "median_return_hours",
            "p_no_return", *[horizon_column(h) for h in horizons_hours], "churn_risk"]


def run_date_end(run_date: dt.date) -> dt.datetime:
    """UTC midnight after ``run_date`` (the end of the scored day)."""
    return dt.datetime.combine(run_date + dt.timedelta(days=1), dt.time(0), tzinfo=dt.UTC)


@torch.inference_mode()
def score_users(
    model: HierarchicalGRU,
    split: Split | SessionData,
    cfg: TrainConfig,
    *,
    run_date: dt.date,
    top_k: int = 20,
    horizons_hours: tuple[float, ...] = (24, 168, 720),
    device: str | torch.device = "cpu",
    exclude_items: object = None,
    recalibrate: bool = True,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(recommendations, churn) for every user with at least one session; see the module docstring.

    ``recommendations``: ``user_id, rank (1..K), item_id, score``; padding, ``exclude_items`` and (with
    ``cfg.mask_untrained_items``) items never seen in training are never recommended.
    ``churn``: the columns of :func:`churn_columns`, one row per user. With ``recalibrate`` (and a
    log-normal head without the inter-session state) the return probabilities are recalibrated on the
    weeks before the run date (:mod:`thrnn.recalibration`); the maps are in ``churn.attrs``.
    """
    if top_k < 1:
        raise ValueError(f"top_k must be >= 1, got {top_k}")
    if any(h <= 0 for h in horizons_hours):
        raise ValueError("horizons must be > 0 hours")
    data = split if isinstance(split, SessionData) else load_sessions(split)
    device = resolve_device(device)
    model = model.to(device).eval()
    everything = torch.ones(data.n_sessions, dtype=torch.bool)
    blocked = item_mask(cfg, data, exclude_items, n_items=model.n_items)
    # scoring looks past all of the history: every session's transitions count
    personal = personal_history(model, data, cfg, count_rows=everything)
    r = replay(model, data, cfg, everything, torch.zeros_like(everything), device,
               collect_last=not model.temporal, blocked_items=blocked, personal=personal)
    last = data.last_rows(everything)
    users = torch.nonzero(last >= 0).squeeze(1)
    k = min(top_k, model.n_items)
    rec_users, rec_items, rec_scores, param_parts = [], [], [], []
    after = time_covariates(model, data, cfg) if model.lognormal else None
    scorer = ChunkScorer(model, personal, blocked, device)
    step = min(EVAL_BATCH_USERS, scorer.max_rows)
    # the next session starts one past each user's last event
    next_t = personal.user_end if personal is not None else torch.zeros(data.n_users, dtype=torch.long)
    for s in range(0, users.numel(), step):
        u_cpu = users[s:s + step]
        u = u_cpu.to(device)
        if model.temporal:
            h = model.inter_state(u, *r.state.get(u), counts_cpu=r.state.counts_cpu[u_cpu])
            values, top_items = scorer.top(h, next_t[u_cpu], u_cpu, k, first=True)
            cov = after[last[u_cpu]].to(device) if after is not None else None
            param_parts.append(model.time_params(h, cov).double().cpu())
        else:
            assert r.last_out is not None
            values, top_items = scorer.top(r.last_out[u], next_t[u_cpu], u_cpu, k, first=False)
        rec_users.append(u_cpu[:, None].expand(-1, k))
        rec_items.append(top_items.cpu())
        rec_scores.append(values.float().cpu())
    n_users = users.numel()
    if n_users:
        items = torch.cat(rec_items).numpy()
        scores_np = torch.cat(rec_scores).numpy()
        user_col = torch.cat(rec_users).numpy()
    else:
        items = scores_np = user_col = np.zeros((0, k))
    rank = np.broadcast_to(np.arange(1, k + 1), items.shape)
    keep = np.isfinite(scores_np)
    recs = pd.DataFrame({
        C.USER_ID: user_col[keep].astype(np.int32),
        "rank": rank[keep].astype(np.int16),
        C.ITEM_ID: items[keep].astype(np.int32),
        "score": scores_np[keep].astype(np.float32),
    })

    last_rows = last[users]
    last_end_us = data.end_us[last_rows].numpy()
    end_us = int(run_date_end(run_date).timestamp()) * 1_000_000
    elapsed = np.clip((end_us - last_end_us) / 3.6e9, 0.0, None)
    churn = pd.DataFrame({
        C.USER_ID: users.numpy().astype(np.int32),
        "last_session_end": pd.to_datetime(last_end_us, unit="us", utc=True),
        "elapsed_hours": elapsed,
    })
    nan = np.full(n_users, np.nan)
    if model.temporal and n_users:
        law = model.law_of(torch.cat(param_parts))
        e = torch.as_tensor(elapsed, dtype=torch.float64)
        p0 = 0.0
        if model.lognormal:  # the RMTPP law carries its own no-return mass
            p0 = fit_no_return(law.log_survival(e).numpy(), int(data.time_mask.sum()))
            log.info("chance of never returning after a session, fitted on %d open gaps: %.4g", n_users, p0)
        churn.attrs["p_no_return_per_session"] = p0
        cl = ChurnLaw(law, p0)
        cutoff = cfg.time_cutoff_hours
        churn["expected_return_hours"] = cl.mean_after(e, cutoff).numpy()
        churn["median_return_hours"] = cl.median_after(e, cutoff).numpy()
        every_h = sorted({*map(float, horizons_hours), CHURN_HORIZON_HOURS})
        p_by_h = {hz: cl.return_within(e, hz).numpy() for hz in every_h}
        if recalibrate and model.lognormal and not cfg.time_state:
            assert after is not None
            recal = _recalibration(model, data, after, end_us, every_h)
            p_by_h = recal.apply(p_by_h)
            churn.attrs["recalibration"] = recal.to_dict()
        elif recalibrate:
            log.info("no recalibration: it needs the log-normal head without the inter-session state")
        # never returning is one way of not returning within the churn horizon
        churn["p_no_return"] = np.minimum(cl.never(e).numpy(), 1.0 - p_by_h[CHURN_HORIZON_HOURS])
        for hz in horizons_hours:
            churn[horizon_column(hz)] = p_by_h[float(hz)]
        churn["churn_risk"] = 1.0 - p_by_h[CHURN_HORIZON_HOURS]
    else:
        for col in ["expected_return_hours", "median_return_hours", "p_no_return",
                    *[horizon_column(hz) for hz in horizons_hours], "churn_risk"]:
            churn[col] = nan
    if model.temporal:  # NaN is by design only without a time head; never write a broken law's output
        bad = {col: int((~np.isfinite(churn[col].to_numpy(dtype=np.float64))).sum())
               for col in churn_columns(tuple(horizons_hours))[3:]}
        bad = {col: n for col, n in bad.items() if n}
        if bad:
            raise ValueError(f"score_users: non-finite (NaN or inf) values from the {cfg.model} model: "
                             + ", ".join(f"{col} {n} of {n_users} users" for col, n in bad.items()))
    return recs.reset_index(drop=True), churn[churn_columns(tuple(horizons_hours))]


def _recalibration(model: HierarchicalGRU, data: SessionData, after: torch.Tensor, night_end_us: int,
                   horizons_hours: list[float]) -> Recalibration:
    """Fit the per-horizon maps on anchors before the night (:func:`thrnn.recalibration.fit_recalibration`)."""
    device = next(model.parameters()).device
    params = []
    for s in range(0, after.shape[0], EVAL_BATCH_USERS * 16):
        cov = after[s:s + EVAL_BATCH_USERS * 16].to(device)
        # without the inter-session state the head reads the covariates only
        params.append(model.time_params(torch.zeros(cov.shape[0], 1, device=device), cov).double().cpu())
    every = torch.cat(params)
    times = SessionTimes(users=data.users.numpy(), start_us=data.start_us.numpy(), end_us=data.end_us.numpy(),
                         is_return=data.time_mask.numpy())
    return fit_recalibration(times, lambda rows: model.law_of(every[torch.as_tensor(rows)]), night_end_us,
                             horizons_hours)


def write_parquet(df: pd.DataFrame, path: str | Path) -> Path:
    """Atomic Parquet write (temporary file, then rename)."""
    table = pa.Table.from_pandas(df, preserve_index=False)
    return atomic_write(path, lambda f: pq.write_table(table, f))


# ------------------------------------------------------------------------------------------ CLI


def configure_parser(p: argparse.ArgumentParser) -> None:
    p.description = ("Score every user of a sessionize output folder with a trained run: top-K next-session "
                     "items (recommendations.parquet) and return time / churn risk (churn.parquet).")
    p.add_argument("--data", required=True, help="sessionize output folder with the users' history")
    p.add_argument("--run", required=True, help="training run folder holding model.pt")
    p.add_argument("--run-date", required=True, type=dt.date.fromisoformat,
                   help="YYYY-MM-DD; elapsed time is measured to the UTC midnight after it")
    p.add_argument("--out", required=True, help="folder for recommendations.parquet and churn.parquet")
    p.add_argument("--top-k", type=int, default=20, help="recommendations per user (default 20)")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"),
                   help="auto uses CUDA when present (default auto)")
    p.add_argument("--horizons-hours", default="24,168,720",
                   help="comma-separated horizons for P(return within h) (default 24,168,720)")


def main(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    device = resolve_device(args.device)
    model, cfg = load_run(args.run, device)
    horizons = tuple(float(h) for h in str(args.horizons_hours).split(",") if h.strip())
    recs, churn = score_users(model, read_split(args.data), cfg, run_date=args.run_date, top_k=args.top_k,
                              horizons_hours=horizons, device=device)
    out = Path(args.out)
    write_parquet(recs, out / "recommendations.parquet")
    write_parquet(churn, out / "churn.parquet")
    print(f"scored {len(churn)} users: {len(recs)} recommendations -> {out}")
    return 0
