"""Training: ``python -m thrnn train --data DIR --model {thrnn,hrnn,gru4rec} --out RUN_DIR``
(docs/design.md §4).

Per epoch the users' FIFOs of session representations start empty (as in the research code), so an
epoch boundary is a clean cut: the checkpoint written after each epoch (model, optimizer, RNG
states, epoch, config, history) and per-epoch reseeding make ``--resume`` bit-identical to an
uninterrupted run on CPU. Test sessions are never read here; ``--val-sessions`` carves a
validation split out of training.

Under ``torchrun --nproc-per-node N`` (WORLD_SIZE > 1) the run is data-parallel (:mod:`thrnn.distributed`):
users are sharded across the processes, ``batch_size`` users per optimizer step are split across them,
each step's loss is the mean over every rank's targets, and rank 0 alone writes the run folder and
calls ``on_epoch``. Each rank's dropout and sampling streams are seeded from (seed, epoch, rank), so the
same data, config and number of processes give the same model, and ``--resume`` with the same number
of processes is bit-identical to an uninterrupted run of that many processes on CPU (it is not
comparable bit for bit to a run with another number of processes: the steps see other user groups).
"""

from __future__ import annotations

import argparse
import logging
import math
import random
import time
from collections.abc import Callable, Collection
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from thrnn import distributed
from thrnn import time_model as tm
from thrnn.checkpoint import (
    CHECKPOINT_FILE,
    HISTORY_FILE,
    atomic_write_json,
    load_checkpoint,
    save_checkpoint,
    save_model,
)
from thrnn.config import TrainConfig, add_config_arguments, config_from_args
from thrnn.data import SessionData, load_sessions, user_parallel_batches
from thrnn.device import describe, resolve_device
from thrnn.inference import item_mask, personal_history, replay, time_covariates, time_predictions
from thrnn.io import Split, read_split
from thrnn.metrics import ranking_metrics, return_time_mae
from thrnn.models import HierarchicalGRU, build_model
from thrnn.models.hier_gru import TiedOutput
from thrnn.personal import COMPONENTS, PersonalHistory
from thrnn.time_features import gap_scale, target_covariates
from thrnn.train_batches import TrainBatch, plan_batches

log = logging.getLogger(__name__)

# Fields that may change between a run and its resumption (they do not change the maths).
_RESUMABLE_CHANGES = {"epochs", "device", "threads", "max_bad_steps", "patience"}


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _epoch_seed(seed: int, epoch: int, rank: int = 0) -> int:
    base = (seed * 1_000_003 + epoch) % 2**62
    # rank 0 keeps the single-process stream; other ranks get their own dropout and sampling draws
    return base if rank == 0 else (base * 998_244_353 + rank) % 2**62


def finalize_state(model: HierarchicalGRU, train_count: torch.Tensor) -> dict[str, torch.Tensor]:
    """State dict for ``model.pt``: input embeddings of items never seen in training (random init,
    never updated) are replaced by the mean trained embedding, a neutral "unknown item" input. With tied
    embeddings every row was trained (as an output) and is kept."""
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    if isinstance(model.out, TiedOutput):
        return state
    emb = state["item_emb.weight"]
    count = train_count.to(emb.device)
    trained = count > 0
    trained[0] = False
    untrained = ~trained
    untrained[0] = False
    if bool(untrained.any()) and bool(trained.any()):
        emb[untrained] = emb[trained].mean(0)
    return state


class _Trainer:
    def __init__(self, model: HierarchicalGRU, data: SessionData, cfg: TrainConfig, device: torch.device) -> None:
        self.model, self.data, self.cfg, self.device = model, data, cfg, device
        self.buckets = data.gap_buckets(cfg.n_gap_buckets, cfg.gap_upper_hours).to(device)
        self.first_ok = (~data.is_continuation).to(device)
        self.time_ok = data.time_mask.to(device)
        gap = torch.nan_to_num(data.gap_hours, nan=0.0).clamp(0, cfg.gap_upper_hours)
        self.u = tm.to_model_time(gap, cfg.gap_exponent, cfg.time_unit_hours).float().to(device)
        self.cov = None
        if model.lognormal:
            # gaps above the bound are known only to exceed it: censored, not clipped
            self.hours = gap.float().to(device)
            self.censored = (torch.nan_to_num(data.gap_hours, nan=0.0) > cfg.gap_upper_hours).to(device)
            fit_rows = ~data.is_test & ~data.validation_mask(cfg.val_sessions)
            model.time_head.set_scale(*gap_scale(data, fit_rows, cfg.gap_upper_hours))
            self.cov = target_covariates(time_covariates(model, data, cfg), data).to(device)
        time_params = {id(p) for p in model.time_parameters()}
        groups = [{"params": [p for p in model.parameters() if id(p) not in time_params], "lr": cfg.lr}]
        if time_params:
            groups.append({"params": model.time_parameters(), "lr": cfg.time_lr})
        self.optimizer = torch.optim.Adam(groups, fused=True)
        self.params = [p for g in groups for p in g["params"]]
        self.base_lrs = [g["lr"] for g in groups]
        self.amp = cfg.amp and device.type == "cuda"
        self.sampler = torch.Generator(device=device)
        self.ctx: distributed.Context | None = None
        self.plan: np.ndarray | None = None  # (world, steps, 3) per-batch counts of every rank
        if model.mixture:
            if cfg.sampled_softmax > 0:
                raise ValueError("the personal-history mixture needs the full softmax: set sampled_softmax 0")
            self._init_personal(data, ~data.is_test & ~data.validation_mask(cfg.val_sessions))

    def _init_personal(self, data: SessionData, count_rows: torch.Tensor) -> None:
        """The personal components' probabilities of every training target, computed once: they depend
        on data only (leave-one-out global counts, strictly earlier events of the user). Only the
        targets of ``count_rows`` (the training sessions) are computed; other entries stay 0, never read."""
        ph = PersonalHistory(data, count_rows, window=self.cfg.personal_window, decay=self.cfg.decay)
        k = len(COMPONENTS)
        events = torch.nonzero(count_rows[ph.event_row] & (torch.arange(ph.n_events) > ph.row_start[ph.event_row]))[:, 0]
        p, a = ph.target_probs(events, ph.event_user[events], first=False, leave_one_out=True)
        self.next_p, self.next_a = torch.zeros(ph.n_events, k), torch.zeros(ph.n_events, k)
        self.next_p[events], self.next_a[events] = p, a
        rows = torch.nonzero(count_rows)[:, 0]
        p, a = ph.target_probs(ph.row_start[rows], data.users[rows], first=True, leave_one_out=True)
        self.first_p, self.first_a = torch.zeros(data.n_sessions, k), torch.zeros(data.n_sessions, k)
        self.first_p[rows], self.first_a[rows] = p, a

    def layout(self, batches: list[np.ndarray], mask: torch.Tensor) -> list[TrainBatch]:
        """Every batch's tensors, laid out once for all epochs (:mod:`thrnn.train_batches`)."""
        cfg, model = self.cfg, self.model
        event_tables = first_tables = None
        if model.mixture:
            event_tables = {"p": self.next_p, "a": self.next_a}
            first_tables = {"p": self.first_p, "a": self.first_a}
        row_tables: dict[str, torch.Tensor] = {}
        if model.temporal:
            if model.lognormal:
                row_tables = {"cov": self.cov, "hours": self.hours, "censored": self.censored}
            else:
                row_tables = {"u": self.u}
        plans = plan_batches(self.data, batches, mask, cfg.history_sessions, self.first_ok, self.time_ok,
                             self.buckets, row_tables=row_tables, event_tables=event_tables,
                             first_tables=first_tables)
        return [b.to(self.device) for b in plans]

    def step(self, batch: TrainBatch, store: torch.Tensor,
             scale: tuple[float, float, float] | None) -> tuple[torch.Tensor, torch.Tensor]:
        """Forward + backward of one batch; returns (loss parts [joint, rec, time, first], ok flag).

        ``store`` (S + 1, H) holds the session representations trained so far this epoch (row S: the
        empty FIFO slot, zeros); this batch's are written to it. ``scale`` (data-parallel runs): this
        rank's share of the step's (targets, first items, gaps) over all ranks; each loss part is
        multiplied by it, so the gradients summed over ranks are those of the mean over the whole step,
        and the returned parts are the whole step's."""
        model, cfg, ex = self.model, self.cfg, batch.extra
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.amp):
            h = model.inter_packed(store[batch.inter_reps], batch.inter_buckets, batch.inter_users,
                                   batch.inter_sizes, batch.inter_prev, batch.inter_last)
            states, final = model.intra_packed(batch.intra_items, h[batch.intra_order], batch.intra_sizes,
                                               batch.intra_prev, batch.intra_last)
            t_items = batch.target_items
            cand = None
            if model.mixture:
                loss_rec = -model.next_log_prob(states, t_items, ex["next_p"], ex["next_a"]).mean()
            else:
                if cfg.sampled_softmax > 0:
                    extra = torch.randint(1, model.n_items + 1, (cfg.sampled_softmax,), generator=self.sampler,
                                          device=self.device)
                    parts = [t_items, extra] + ([batch.first_items] if model.temporal else [])
                    cand = torch.unique(torch.cat(parts))
                logits = model.item_logits(states, cand)
                target_idx = t_items - 1 if cand is None else torch.searchsorted(cand, t_items)
                loss_rec = F.cross_entropy(logits.float(), target_idx)
            if scale is not None:
                loss_rec = loss_rec * scale[0]
            zero = loss_rec.new_zeros(())
            loss_time = loss_first = zero
            loss = loss_rec
            if model.temporal:
                if batch.n_first:
                    f_items, h_first = batch.first_items, h[batch.first_pos]
                    if model.mixture:
                        loss_first = -model.first_log_prob(h_first, f_items, ex["first_p"], ex["first_a"]).mean()
                    else:
                        f_logits = model.first_logits(h_first, cand)
                        f_idx = f_items - 1 if cand is None else torch.searchsorted(cand, f_items)
                        loss_first = F.cross_entropy(f_logits.float(), f_idx)
                # over the batch's gaps only (possibly none: the time head then gets zero gradients)
                h_time = h[batch.time_pos]
                if model.lognormal:
                    nll = model.time_loss(h_time, ex["time_cov"], ex["time_hours"], ex["time_censored"])
                else:
                    nll = tm.nll(model.time_a(h_time), model.time_head.w, ex["time_u"])
                loss_time = nll.sum() / max(batch.n_time, 1)
                if scale is not None:
                    loss_time, loss_first = loss_time * scale[2], loss_first * scale[1]
                loss = cfg.loss_time * loss_time + cfg.loss_rec * loss_rec + cfg.loss_first * loss_first
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        parts = torch.stack([loss, loss_rec, loss_time, loss_first]).detach()
        if self.ctx is not None:
            parts = distributed.sum_gradients(self.params, parts)
        # data-parallel: the loss and the norm are the whole step's, so every rank takes the same decision
        ok = torch.isfinite(parts[0]) & torch.isfinite(self._grad_norm())
        store[batch.intra_rows] = torch.nan_to_num(final.detach().float())
        return parts, ok

    def _grad_norm(self) -> torch.Tensor:
        """Total gradient norm, clipping at ``cfg.grad_clip`` when set. Without clipping only the norm
        is computed (clip_grad_norm_ would still multiply every gradient by 1)."""
        if self.cfg.grad_clip > 0:
            return torch.nn.utils.clip_grad_norm_(self.params, self.cfg.grad_clip, foreach=True)
        grads = [p.grad for p in self.params if p.grad is not None]
        if not grads:
            return torch.zeros((), device=self.device)
        return torch.nn.utils.get_total_norm(grads, foreach=True)

    def idle_step(self) -> tuple[torch.Tensor, torch.Tensor]:
        """A data-parallel step of a rank without a batch left this epoch: no gradient of its own, but it
        takes part in the gradient sum and the optimizer step like every rank."""
        self.optimizer.zero_grad(set_to_none=True)
        parts = distributed.sum_gradients(self.params, torch.zeros(4, device=self.device))
        return parts, torch.isfinite(parts[0]) & torch.isfinite(self._grad_norm())

    def _step_scale(self, i: int) -> tuple[float, float, float]:
        assert self.plan is not None and self.ctx is not None
        mine, every = self.plan[self.ctx.rank, i], self.plan[:, i].sum(0)
        rec = mine[0] / every[0] if every[0] else 0.0
        first = mine[1] / every[1] if every[1] else 0.0
        gaps = max(int(mine[2]), 1) / max(int(every[2]), 1)  # matches the clamp(min=1) of the time loss
        return float(rec), float(first), float(gaps)

    def epoch(self, batches: list[TrainBatch], epoch: int, progress: bool, bad_before: int = 0) -> dict[str, Any]:
        """One pass over ``batches`` (:meth:`layout`) from empty FIFOs. ``bad_before``: steps skipped
        earlier in the run; ``cfg.max_bad_steps`` bounds the run's total, not each epoch's."""
        cfg, model, ctx = self.cfg, self.model, self.ctx
        seed = _epoch_seed(cfg.seed, epoch, 0 if ctx is None else ctx.rank)
        seed_everything(seed)
        factor = cfg.lr_factor(epoch)  # stateless in the epoch, so --resume needs no scheduler state
        for group, base in zip(self.optimizer.param_groups, self.base_lrs, strict=True):
            group["lr"] = base * factor
        self.sampler.manual_seed(seed)
        model.train()
        # the session representations of this epoch, by row; row S is the empty FIFO slot (zeros)
        store = torch.zeros(self.data.n_sessions + 1, model.hidden, device=self.device)
        if ctx is None:
            counts = [b.n_targets for b in batches]
        else:  # the whole step's targets; ranks past their last batch take idle steps
            assert self.plan is not None
            counts = [int(c) for c in self.plan[:, :, 0].sum(0)]
        n_targets = sum(counts)
        sums = torch.zeros(4, dtype=torch.float64)
        weight = 0
        bad = 0
        start = time.perf_counter()
        bar = tqdm(total=n_targets, unit="tgt", unit_scale=True, desc=f"epoch {epoch + 1}/{cfg.epochs}",
                   disable=not progress or (ctx is not None and not ctx.is_main), leave=False)
        for i in range(len(counts)):
            if ctx is None:
                parts, ok = self.step(batches[i], store, None)
            elif i < len(batches):
                parts, ok = self.step(batches[i], store, self._step_scale(i))
            else:
                parts, ok = self.idle_step()
            k = counts[i]
            if bool(ok):
                self.optimizer.step()
                sums += parts.double().cpu() * k
                weight += k
            else:
                bad += 1
                self.optimizer.zero_grad(set_to_none=True)
                log.warning("epoch %d batch %d: non-finite loss or gradient, step skipped (%d in this run)",
                            epoch + 1, i, bad_before + bad)
                if bad_before + bad > cfg.max_bad_steps:
                    raise FloatingPointError(
                        f"{bad_before + bad} steps with a non-finite loss or gradient in this run ({bad} in "
                        f"epoch {epoch + 1}) (max_bad_steps={cfg.max_bad_steps}); lower lr or set grad_clip")
            bar.update(k)
            if progress and i % 20 == 0 and weight:
                bar.set_postfix(loss=f"{float(sums[0]) / weight:.4f}")
        bar.close()
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        seconds = time.perf_counter() - start
        # an epoch whose every step was skipped learned nothing: no loss, not 0.0
        means = (sums / weight).tolist() if weight else [math.nan] * 4
        return {
            "epoch": epoch + 1,
            "loss": means[0],
            "loss_rec": means[1],
            "loss_time": means[2] if model.temporal else None,
            "loss_first": means[3] if model.temporal else None,
            "w": float(model.time_head.w.detach()) if model.temporal and not model.lognormal else None,
            "lr": self.optimizer.param_groups[0]["lr"],
            "targets": n_targets,
            "batches": len(counts),
            "seconds": seconds,
            "targets_per_s": n_targets / seconds if seconds > 0 else math.inf,
            "bad_steps": bad,
        }


def validate(model: HierarchicalGRU, data: SessionData, cfg: TrainConfig, val: torch.Tensor,
             device: torch.device) -> dict[str, Any]:
    """Next-item and return-time metrics on the validation sessions (replaying training history first)."""
    include = ~data.is_test
    personal = personal_history(model, data, cfg, count_rows=include & ~val)
    r = replay(model, data, cfg, include, val, device, blocked_items=item_mask(cfg, data, n_items=model.n_items),
               personal=personal)
    out: dict[str, Any] = {f"val_{k}": v for k, v in ranking_metrics(r.next_ranks).items()}
    if r.gap_params is not None and len(r.gap_params):
        median, _, _ = time_predictions(model, r.gap_params, cfg)
        out["val_mae_hours"] = return_time_mae(data.gap_hours.numpy()[r.gap_rows], median)["mae_hours"]
    return out


def _check_resume(saved: dict[str, Any], cfg: TrainConfig) -> None:
    resumable = _RESUMABLE_CHANGES - ({"epochs"} if cfg.lr_schedule != "constant" else set())
    defaults = TrainConfig().to_dict()  # keys added since the checkpoint was written had their defaults
    diff = {k for k, v in cfg.to_dict().items() if saved.get(k, defaults[k]) != v}
    diff -= resumable
    if diff:
        raise ValueError(f"cannot resume: the checkpoint was trained with different {sorted(diff)}")


def train_sessions(
    data: SessionData,
    run_dir: str | Path,
    cfg: TrainConfig,
    *,
    resume: bool = False,
    progress: bool = True,
    on_epoch: Callable[[int, dict], None] | None = None,
    validate_at: Collection[int] | None = None,
) -> dict[str, Any]:
    """:func:`train` on already loaded :class:`SessionData`. With ``cfg.val_sessions`` the validation
    figures are computed after every epoch, or only after the epochs (1-based) in ``validate_at``
    (learning curves at a few points cost less; ``patience`` then counts validated epochs)."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    device = resolve_device(cfg.device)
    ctx = distributed.start(device.type)
    if ctx is not None and device.type == "cuda":
        device = torch.device("cuda", ctx.local_rank)
    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    # Deterministic kernels are cheap on CPU; on CUDA they would need CUBLAS_WORKSPACE_CONFIG and slow
    # the GRU down, so they are off there. The caller's setting is restored afterwards.
    deterministic = torch.are_deterministic_algorithms_enabled()
    fill = torch.utils.deterministic.fill_uninitialized_memory
    torch.use_deterministic_algorithms(device.type == "cpu")
    # Deterministic mode also fills every new tensor with NaN to expose reads of uninitialised memory:
    # a pass over every operator's output. Training reads none, so the fill is off (docs/train_speed.md).
    torch.utils.deterministic.fill_uninitialized_memory = False
    try:
        return _train(data, run_dir, cfg, device, resume, progress, on_epoch, ctx,
                      None if validate_at is None else frozenset(int(e) for e in validate_at))
    finally:
        torch.use_deterministic_algorithms(deterministic)
        torch.utils.deterministic.fill_uninitialized_memory = fill


def _shard(data: SessionData, train_mask: torch.Tensor, cfg: TrainConfig, trainer: _Trainer,
           ctx: distributed.Context) -> list[np.ndarray]:
    """This rank's batches (of its own users only) and, on the trainer, every rank's per-batch counts."""
    owner = distributed.shard_users(distributed.user_targets(data, train_mask), ctx.world)
    mine = train_mask & torch.from_numpy(owner == ctx.rank)[data.users]
    local = distributed.local_batch_size(cfg.batch_size, ctx)
    batches = user_parallel_batches(data, mine, local)
    first_ok, time_ok = ~data.is_continuation, data.time_mask
    counts = np.array([[int((data.lengths[b] - 1).sum()), int(first_ok[b].sum()), int(time_ok[b].sum())]
                       for b in batches], dtype=np.int64).reshape(-1, 3)
    trainer.ctx = ctx
    trainer.plan = distributed.all_gather_counts(counts, ctx, trainer.device)
    log.info("rank %d/%d: %d users, %d targets, %d batches of <= %d users (%d steps per epoch)", ctx.rank,
             ctx.world, int((owner == ctx.rank).sum()), int(counts[:, 0].sum()), len(batches), local,
             trainer.plan.shape[1])
    return batches


def _train(data: SessionData, run_dir: Path, cfg: TrainConfig, device: torch.device, resume: bool,
           progress: bool, on_epoch: Callable[[int, dict], None] | None,
           ctx: distributed.Context | None = None, validate_at: frozenset[int] | None = None) -> dict[str, Any]:
    is_main = ctx is None or ctx.is_main
    seed_everything(cfg.seed)
    model = build_model(cfg, data.n_items, data.n_users).to(device)
    trainer = _Trainer(model, data, cfg, device)
    val = data.validation_mask(cfg.val_sessions)
    train_mask = ~data.is_test & ~val
    if ctx is None:
        rows = user_parallel_batches(data, train_mask, cfg.batch_size)
    else:
        rows = _shard(data, train_mask, cfg, trainer, ctx)
    batches = trainer.layout(rows, train_mask)
    history: dict[str, Any] = {
        "model": cfg.model,
        "device": describe(device),
        "n_items": data.n_items,
        "n_users": data.n_users,
        "train_sessions": int(train_mask.sum()),
        "val_sessions": int(val.sum()),
        "train_targets": data.n_targets(train_mask),
        "untrained_items": int((data.item_train_count[1:] == 0).sum()),
        "epochs": [],
        "bad_steps": 0,  # skipped non-finite steps of the whole run (kept across --resume)
    }
    if ctx is not None:
        history["world_size"] = ctx.world
    best: dict[str, Any] = {"score": -math.inf, "epoch": None, "state": None}
    start_epoch = 0
    ckpt = load_checkpoint(run_dir) if resume else None
    if ckpt is not None:
        _check_resume(ckpt["config"], cfg)
        saved_world, world = int(ckpt.get("world_size", 1)), 1 if ctx is None else ctx.world
        if saved_world != world:
            raise ValueError(f"cannot resume: the checkpoint was trained by {saved_world} process(es), this "
                             f"run has {world} (the users of each step would differ)")
        model.load_state_dict(ckpt["model"])
        trainer.optimizer.load_state_dict(ckpt["optimizer"])
        history = ckpt["history"]
        best = ckpt["best"]
        start_epoch = int(ckpt["epoch"])
        _set_rng(ckpt["rng"] if ctx is None else ckpt["rng_ranks"][ctx.rank])
        log.info("resuming %s after epoch %d", run_dir, start_epoch)
    elif resume:
        log.info("no %s in %s: training from scratch", CHECKPOINT_FILE, run_dir)
    # checkpoints of an older release only counted per epoch
    history.setdefault("bad_steps", sum(int(e.get("bad_steps") or 0) for e in history["epochs"]))
    stale = 0
    for epoch in range(start_epoch, cfg.epochs):
        record = trainer.epoch(batches, epoch, progress, bad_before=int(history["bad_steps"]))
        history["bad_steps"] = int(history["bad_steps"]) + int(record["bad_steps"])
        if val.any() and (validate_at is None or epoch + 1 in validate_at):
            # the replicas are equal: rank 0 validates and the others take its figures
            figures = validate(model, data, cfg, val, device) if is_main else None
            record.update(figures if ctx is None else distributed.broadcast_object(figures, ctx))
            score = record["val_recall@20"]
            if score > best["score"]:
                best = {"score": score, "epoch": epoch + 1,
                        "state": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}}
                stale = 0
            else:
                stale += 1
        history["epochs"].append(record)
        if is_main:
            log.info("epoch %d: %s", epoch + 1, {k: v for k, v in record.items() if not isinstance(v, list)})
        payload = {
            "epoch": epoch + 1,
            "config": cfg.to_dict(),
            "model": model.state_dict(),
            "optimizer": trainer.optimizer.state_dict(),
            "rng": _get_rng(),
            "history": history,
            "best": best,
        }
        if ctx is not None:
            payload["world_size"] = ctx.world
            payload["rng_ranks"] = distributed.gather_objects(payload["rng"], ctx)
            payload["rng"] = payload["rng_ranks"][0]
        if is_main:
            save_checkpoint(run_dir, payload)
            if on_epoch is not None:
                on_epoch(epoch + 1, record)
        if cfg.patience and stale >= cfg.patience:
            log.info("no better val recall@20 for %d epochs: stopping", stale)
            break
    if best["state"] is not None:
        model.load_state_dict(best["state"])
        history["best_epoch"] = best["epoch"]
    if is_main:
        save_model(run_dir, model, cfg, finalize_state(model, data.item_train_count))
        atomic_write_json(history, run_dir / HISTORY_FILE)
    distributed.barrier(ctx)  # no rank returns before the run folder is complete
    return history


def train(
    data_dir: str | Path | Split,
    run_dir: str | Path,
    cfg: TrainConfig,
    *,
    resume: bool = False,
    progress: bool = True,
    on_epoch: Callable[[int, dict], None] | None = None,
) -> dict[str, Any]:
    """Train ``cfg.model`` on the training sessions of a sessionize output folder (or a loaded Split).

    Writes ``run_dir/model.pt``, ``config.json``, ``history.json`` and ``checkpoint.pt`` (every epoch);
    returns the history (per-epoch losses, targets/s, validation metrics). ``on_epoch(epoch, record)``
    is called after each epoch (e.g. to log to MLflow).
    """
    split = data_dir if isinstance(data_dir, Split) else read_split(data_dir)
    return train_sessions(load_sessions(split), run_dir, cfg, resume=resume, progress=progress, on_epoch=on_epoch)


def _get_rng() -> dict[str, Any]:
    rng: dict[str, Any] = {"python": random.getstate(), "numpy": np.random.get_state(),
                           "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        rng["cuda"] = torch.cuda.get_rng_state_all()
    return rng


def _set_rng(rng: dict[str, Any]) -> None:
    random.setstate(rng["python"])
    np.random.set_state(rng["numpy"])
    torch.set_rng_state(rng["torch"])
    if "cuda" in rng and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng["cuda"])


# ------------------------------------------------------------------------------------------ CLI


# --dataset NAME = --preset NAME (the old flag); other names fail instead of silently getting LastFM's
DATASET_ALIASES = ("lastfm", "reddit")


def _preset(args: argparse.Namespace) -> str:
    """--preset, else --dataset, else the preset of the split's format (stats.json), else events."""
    import json

    from contract import columns as C
    from thrnn.config import DEFAULT_PRESET, preset_for_format

    preset = getattr(args, "preset", None)
    dataset = getattr(args, "dataset", None)
    if dataset is not None and dataset not in DATASET_ALIASES:
        raise SystemExit(f"--dataset {dataset!r} is not a preset; use --preset (lastfm, reddit, events, "
                         "paper-lastfm, paper-reddit)")
    if preset is not None and dataset is not None and preset != dataset:
        raise SystemExit(f"--preset {preset} and --dataset {dataset} disagree; give --preset only")
    if preset or dataset:
        return preset or dataset
    stats = Path(args.data) / C.STATS_FILE
    fmt = json.loads(stats.read_text()).get("format") if stats.exists() else None
    return preset_for_format(fmt) if fmt else DEFAULT_PRESET


def configure_parser(p: argparse.ArgumentParser) -> None:
    p.description = "Train THRNN, HRNN or the GRU4Rec-style GRU on a sessionize output folder."
    p.add_argument("--data", required=True, help="sessionize output folder (train/, test/, items/, users/)")
    p.add_argument("--out", required=True, help="run folder for model.pt, config.json, history.json, checkpoint.pt")
    from thrnn.config import PRESETS

    p.add_argument("--preset", choices=PRESETS, default=None,
                   help="training preset: lastfm, reddit, events (validated product defaults; events = "
                        "LastFM-like sizes) or paper-lastfm, paper-reddit (the paper's settings); default: the "
                        "preset of the split's format (stats.json), else events")
    p.add_argument("--dataset", default=None,
                   help="old spelling of --preset: lastfm or reddit (other names are refused)")
    p.add_argument("--config", default=None,
                   help="YAML or JSON file of TrainConfig fields (defaults < preset < file < flags)")
    p.add_argument("--resume", action="store_true", help="continue from run_dir/checkpoint.pt when present")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_config_arguments(p)


def main(args: argparse.Namespace) -> int:
    import os

    rank = int(os.environ.get("RANK") or 0)
    # under torchrun the other ranks log their sharding and warnings only, with their rank
    logging.basicConfig(level=logging.INFO, format=f"%(asctime)s %(levelname)s %(name)s{f' [rank {rank}]' if rank else ''}: %(message)s")
    if rank:
        logging.getLogger().setLevel(logging.WARNING)
        logging.getLogger(__name__).setLevel(logging.INFO)
    cfg = config_from_args(args, _preset(args), args.config)
    history = train(args.data, args.out, cfg, resume=args.resume, progress=not args.no_progress)
    if rank:
        return 0
    last = history["epochs"][-1] if history["epochs"] else {}
    print(f"trained {cfg.model} for {len(history['epochs'])} epochs -> {args.out}/model.pt "
          f"(last loss {last.get('loss', float('nan')):.4f}, {last.get('targets_per_s', 0):.0f} targets/s)")
    return 0
