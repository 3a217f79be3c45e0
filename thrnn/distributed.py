"""Data-parallel training across processes (``torchrun``): launch detection, user sharding, gradient sums.

A run started by ``torchrun --nproc-per-node N -m thrnn train ...`` (WORLD_SIZE > 1 in the environment)
trains one replica per process. Users, not batches, are sharded: a user's sessions form a chain whose
FIFO of session representations must stay on one process, so each rank owns a fixed set of users
(balanced by training targets) and batches only them.

Gradients are summed with one flat ``all_reduce`` per step rather than through
``DistributedDataParallel``: ranks run different numbers of batches per epoch (a rank that runs out
takes no-op steps that contribute zero gradient), and which parameters a step uses differs between
ranks (the first-item head only sees batches holding a user's first session), which DDP's reducer
handles only with ``find_unused_parameters`` and the join context. Every rank applies the same summed
gradient with the same optimizer, so the replicas stay bit-equal without broadcasting weights.
"""

from __future__ import annotations

import atexit
import os
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from thrnn.data import SessionData


@dataclass(frozen=True)
class Context:
    """This process's place in a data-parallel run."""

    rank: int
    world: int
    local_rank: int

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def launched_world_size(environ: dict[str, str] | None = None) -> int:
    """WORLD_SIZE as set by torchrun (1 when not launched by it)."""
    env = os.environ if environ is None else environ
    return int(env.get("WORLD_SIZE") or 1)


def start(device_type: str) -> Context | None:
    """The data-parallel context, initialising the process group from the torchrun environment when it
    is not initialised yet; None for a single process (which then trains exactly as without this module).

    gloo on CPU, nccl on CUDA (each process on ``cuda:LOCAL_RANK``). The group lives until the process
    exits, so later training calls of the same process reuse it: destroying it and initialising it again
    against torchrun's store can deadlock on the store's stale keys."""
    local_rank = int(os.environ.get("LOCAL_RANK") or 0)
    if dist.is_available() and dist.is_initialized():
        if dist.get_world_size() == 1:
            return None
        return Context(dist.get_rank(), dist.get_world_size(), local_rank)
    if launched_world_size() <= 1:
        return None
    if not dist.is_available():
        raise RuntimeError("WORLD_SIZE > 1 but this torch build has no torch.distributed")
    backend = "nccl" if device_type == "cuda" else "gloo"
    if device_type == "cuda":
        torch.cuda.set_device(local_rank)
    dist.init_process_group(backend=backend)
    atexit.register(_destroy)
    return Context(dist.get_rank(), dist.get_world_size(), local_rank)


def _destroy() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def shard_users(weights: np.ndarray, world: int) -> np.ndarray:
    """Owner rank of each user for ``weights`` = work per user (training targets): greedy
    longest-processing-time, users by weight descending (ties: lower user id first), each to the least
    loaded rank (ties: lower rank). Deterministic; users of weight 0 get -1 (nothing to train).

    Greedy LPT keeps the heaviest rank within 4/3 of the best possible split, and it never splits a
    user, whose sessions have to be trained in order on one rank."""
    if world < 1:
        raise ValueError("world must be >= 1")
    weights = np.asarray(weights, dtype=np.int64)
    owner = np.full(weights.shape[0], -1, dtype=np.int64)
    load = np.zeros(world, dtype=np.int64)
    order = np.lexsort((np.arange(weights.shape[0]), -weights))
    for u in order:
        if weights[u] <= 0:
            break
        r = int(np.argmin(load))  # first minimum: lower rank on ties
        owner[u] = r
        load[r] += weights[u]
    return owner


def user_targets(data: SessionData, mask: torch.Tensor) -> np.ndarray:
    """(U,) next-item targets of each user within ``mask``: the work that :func:`shard_users` balances."""
    rows = mask.numpy()
    return np.bincount(data.users.numpy()[rows], weights=(data.lengths.numpy()[rows] - 1),
                       minlength=data.n_users).astype(np.int64)


def local_batch_size(batch_size: int, ctx: Context) -> int:
    """This rank's users per step: ``batch_size`` is the users of one optimizer step over all ranks, so a
    step sees as many users as in single-process training and the learning rate needs no rescaling."""
    if batch_size < ctx.world:
        raise ValueError(f"batch_size {batch_size} is below the number of processes {ctx.world}: every "
                         "rank needs at least one user per step")
    return batch_size // ctx.world + (1 if ctx.rank < batch_size % ctx.world else 0)


def all_gather_counts(counts: np.ndarray, ctx: Context, device: torch.device) -> np.ndarray:
    """(world, steps, k) int64: every rank's per-batch ``counts`` (steps, k), zero-padded to the longest
    rank's number of batches."""
    n = torch.tensor([counts.shape[0]], dtype=torch.int64, device=device)
    sizes = [torch.zeros_like(n) for _ in range(ctx.world)]
    dist.all_gather(sizes, n)
    steps = max(int(s) for s in sizes)
    padded = torch.zeros(steps, counts.shape[1], dtype=torch.int64, device=device)
    padded[: counts.shape[0]] = torch.from_numpy(counts).to(device)
    out = [torch.zeros_like(padded) for _ in range(ctx.world)]
    dist.all_gather(out, padded)
    return torch.stack(out).cpu().numpy()


def sum_gradients(params: list[torch.nn.Parameter], extra: torch.Tensor) -> torch.Tensor:
    """Replace every parameter's gradient by its sum over ranks (a parameter no rank used keeps no
    gradient, as Adam then skips it like in single-process training) and return the sum of ``extra``
    (e.g. the step's loss parts), all in one float32 ``all_reduce``: a step's latency is the collective's."""
    device = params[0].device
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    used = torch.tensor([p.grad is not None for p in params], dtype=torch.float32, device=device)
    flat = torch.cat([*(g.reshape(-1).float() for g in grads), used,
                      extra.to(device=device, dtype=torch.float32).reshape(-1)])
    dist.all_reduce(flat)
    n_grad = flat.numel() - len(params) - extra.numel()
    offset = 0
    for p, u in zip(params, flat[n_grad: n_grad + len(params)].tolist(), strict=True):
        n = p.numel()
        p.grad = flat[offset: offset + n].view_as(p).to(p.dtype) if u > 0 else None
        offset += n
    return flat[n_grad + len(params):].clone()


def broadcast_object(obj: Any, ctx: Context) -> Any:
    """``obj`` of rank 0 on every rank."""
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def gather_objects(obj: Any, ctx: Context) -> list[Any]:
    """Every rank's ``obj``, in rank order, on every rank."""
    out: list[Any] = [None] * ctx.world
    dist.all_gather_object(out, obj)
    return out


def barrier(ctx: Context | None) -> None:
    if ctx is not None:
        dist.barrier()
