"""Test-time replay: ranks of every test target and return-time predictions (docs/design.md §5).

Every user's sessions are replayed in time order in eval mode (training sessions first, to build
the FIFO of session representations, then test sessions), so test session i sees only the user's
training history and test sessions before i: no future leakage, and no session is skipped.

Items that appear only in test (``train_count == 0``) stay in the full ranking with the scores the
model gives them: their output rows were trained only as negatives, and their input embeddings are
set to the mean trained embedding when training ends (:func:`thrnn.train.finalize_state`). With
``cfg.mask_untrained_items`` they score -inf instead, i.e. rank behind every trained item.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import torch
from tqdm.auto import tqdm

from thrnn.calibration import HORIZONS_HOURS
from thrnn.config import TrainConfig
from thrnn.data import HistoryState, SessionData, load_sessions, user_parallel_batches
from thrnn.device import resolve_device
from thrnn.io import Split
from thrnn.metrics import top_k
from thrnn.models import HierarchicalGRU
from thrnn.personal import PersonalHistory
from thrnn.time_features import covariates_after, target_covariates

EVAL_BATCH_USERS = 512
# Bound on the (rows x items) score block scored at once, in elements (128 MB of float32 on CPU, 256 MB
# on GPU): the rows of one block share one matrix product with the output layer, whose weights are
# read from memory once per block (a 100k-item catalogue: 328 rows; docs/eval_speed.md).
_SCORE_BLOCK = {"cpu": 1 << 25, "cuda": 1 << 26}
_MAX_ROWS = 2048
# Scores finished, counted or cut at once after the product, in elements (8 MB of float32 on CPU: the block
# stays in the cache from its softmax to its count; the whole chunk at once on GPU)
_BLOCK_ELEMENTS = {"cpu": 1 << 21}
# The BLAS rounds a row of a matrix product the same way when it sits at the same place modulo a small
# tile height in products of at least 4 rows (fewer go through gemv, which sums in another order).
# Chunks are therefore padded to a multiple of _ROW_TILE rows and hold a multiple of it, so a target's
# scores are those of one product over all targets (measured on MKL; docs/eval_speed.md).
_ROW_TILE = 8


@dataclass
class TestPredictions:
    """Per-target outputs on the test split, in (user, session_index, position) order.

    ``next_item_ranks``: every test position but the first (1-based, full ranking, ties against the
    model). ``first_item_ranks``: first item of every test session that is not a continuation (None
    without a first-item head). ``gap_*``: one entry per test session with a real gap (not a
    continuation, not the user's first session); true gaps are unclipped hours; predictions are
    None without a time head; ``gap_no_return_prob`` is the defective no-return mass. The law of each
    gap (:func:`gap_distribution`): ``gap_log_density`` (nats per gap, hours axis, at the true gap),
    ``gap_quantiles`` (level -> hours) and ``gap_p_within`` (hours h -> P(gap <= h)).
    """

    next_item_ranks: np.ndarray
    first_item_ranks: np.ndarray | None
    gap_true_hours: np.ndarray
    gap_median_hours: np.ndarray | None
    gap_mean_hours: np.ndarray | None
    gap_no_return_prob: np.ndarray | None
    next_item_users: np.ndarray | None = None
    next_item_positions: np.ndarray | None = None
    gap_users: np.ndarray | None = None
    gap_log_density: np.ndarray | None = None
    gap_quantiles: dict[float, np.ndarray] | None = None
    gap_p_within: dict[float, np.ndarray] | None = None


@dataclass
class ReplayOutput:
    next_ranks: np.ndarray
    next_rows: np.ndarray
    next_positions: np.ndarray
    first_ranks: np.ndarray | None
    first_rows: np.ndarray
    gap_rows: np.ndarray
    gap_params: np.ndarray | None  # (gaps, P) float64: HierarchicalGRU.time_params of each target gap
    state: HistoryState
    last_out: torch.Tensor | None  # (U, H): intra output after the last item of the user's last session


def item_mask(cfg: TrainConfig, data: SessionData, exclude_items: object = None,
              n_items: int | None = None) -> torch.Tensor:
    """(n_items+1,) bool of item ids that must never be ranked (padding, untrained if configured,
    excluded); ``n_items`` defaults to the split's catalogue (pass the model's when it is larger)."""
    n = max(n_items or 0, data.n_items)
    mask = torch.zeros(n + 1, dtype=torch.bool)
    mask[0] = True
    if cfg.mask_untrained_items:
        mask[: data.n_items + 1] |= data.item_train_count == 0
        mask[data.n_items + 1:] = True  # beyond the split's catalogue: never seen in its training data
    if exclude_items is not None:
        ids = torch.as_tensor(np.asarray(list(exclude_items), dtype=np.int64))
        if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) > n):
            raise ValueError(f"exclude_items must be item ids in 1..{n}")
        mask[ids] = True
    return mask


def personal_history(model: HierarchicalGRU, data: SessionData, cfg: TrainConfig,
                     count_rows: torch.Tensor | None = None) -> PersonalHistory | None:
    """The mixture's personal history of ``data`` (None for a model without the mixture); global
    transitions are counted over ``count_rows`` (default: the training sessions)."""
    if not model.mixture:
        return None
    rows = ~data.is_test if count_rows is None else count_rows
    return PersonalHistory(data, rows, window=cfg.personal_window, decay=cfg.decay)


def rows_per_chunk(n_items: int, device: torch.device | str = "cpu") -> int:
    """Rows of (rows x items) scores handled at once on ``device``."""
    budget = _SCORE_BLOCK.get(torch.device(device).type, _SCORE_BLOCK["cpu"])
    return max(_ROW_TILE, min(_MAX_ROWS, budget // max(1, n_items)) // _ROW_TILE * _ROW_TILE)


class ChunkScorer:
    """Ranking scores of item ids 1..N for chunks of model states, in reused (rows x N) buffers.

    The scores are the model's (:meth:`HierarchicalGRU.next_scores` / ``first_scores``) bit for bit,
    without their (rows, N+1) and (rows, K, N+1) tensors: one matrix product with the output layer
    per chunk; with the mixture, the softmax times the neural weight, plus the personal-history
    components added at their few non-zero entries only (:meth:`PersonalHistory.sparse`), summed in
    the order of the dense ``einsum`` so that every float rounds the same. Blocked items score -inf.
    Everything after the product runs on blocks of ``block_rows`` rows (default: a cache-sized block
    on CPU, the whole chunk elsewhere) that are finished, counted or cut while they sit in the cache.
    See docs/eval_speed.md.
    """

    def __init__(self, model: HierarchicalGRU, personal: PersonalHistory | None, blocked: torch.Tensor,
                 device: torch.device | str = "cpu", max_rows: int | None = None,
                 block_rows: int | None = None) -> None:
        self.model = model
        self.personal = personal if model.mixture else None
        if model.mixture and personal is None:
            raise ValueError("a model with the mixture needs the personal history")
        self.device = torch.device(device)
        self.n = model.n_items
        rows = max_rows or rows_per_chunk(self.n, self.device)
        self.max_rows = -(-rows // _ROW_TILE) * _ROW_TILE  # a multiple of the tile height
        budget = _BLOCK_ELEMENTS.get(self.device.type, 0)
        self.block_rows = min(self.max_rows, block_rows or (max(1, budget // max(1, self.n)) if budget
                                                             else self.max_rows))
        # on CPU the count's comparison and the personal entries go through numpy: its comparison is several
        # times faster than torch.ge there, its indexing about twice as fast (the same floats either way)
        self.host_numpy = self.device.type == "cpu"
        self.blocked_cols = torch.nonzero(blocked[1:self.n + 1].to(self.device)).squeeze(1)
        dt = model.item_emb.weight.dtype
        # the logits, then (mixture) the probabilities in place on CPU (its softmax writes each element
        # after reading it: equal bit for bit, tested); a buffer of their own elsewhere
        self._logits = torch.empty(self.max_rows, self.n, dtype=dt, device=self.device)
        self._probs = (torch.empty(self.max_rows, self.n, device=self.device)
                       if self.personal is not None and self.device.type != "cpu" else None)
        self._mask = torch.empty(self.block_rows, self.n, dtype=torch.bool, device=self.device)
        self._extra = (torch.zeros(self.block_rows, self.n, device=self.device) if self.personal is not None
                       else None)

    def _blocks(self, states: torch.Tensor, t: torch.Tensor, users: torch.Tensor, *,
                first: bool) -> Iterator[tuple[int, int, torch.Tensor]]:
        """The product of the whole chunk, then ``(r0, r1, scores of rows r0..r1-1)`` block by block: each
        block's softmax, neural weight, personal entries and -inf are applied just before it is yielded
        (every element goes through the same float operations as on the whole chunk at once)."""
        model = self.model
        n_rows = states.shape[0]
        if n_rows > self.max_rows:
            raise ValueError(f"{n_rows} rows, at most {self.max_rows} per chunk")
        if first and not model.temporal:
            raise RuntimeError("this model has no first-item head (only THRNN has one)")
        x = states if first else model.drop(states)
        pad = -n_rows % _ROW_TILE if n_rows else _ROW_TILE
        if pad:
            x = torch.cat([x, x.new_zeros(pad, x.shape[1])])
        layer = model.first_out if first else model.out
        logits = torch.addmm(layer.bias, x, layer.weight.t(), out=self._logits[:x.shape[0]])[:n_rows]
        step = self.block_rows
        if self.personal is None:
            for r0 in range(0, n_rows, step):
                r1 = min(r0 + step, n_rows)
                yield r0, r1, logits[r0:r1].index_fill_(1, self.blocked_cols, float("-inf"))
            return
        comps, mass = self.personal.sparse(t, users, first, self.n + 1, device=self.device)
        gate = model.first_gate if first else model.next_gate
        pi = gate(x, torch.cat([mass, mass.new_zeros(pad, mass.shape[1])]))[:n_rows].float().exp()
        probs = logits if self._probs is None else self._probs[:n_rows]
        # each component's entries weighted, at chunk-flat keys row * N + column; rows ascend within a
        # component, so each block's entries are one slice of it
        cpu = self.host_numpy
        keys, weights = [], []
        for k, (rows, items, values) in enumerate(comps, start=1):
            key, w = rows * self.n + (items - 1), pi[rows, k] * values
            keys.append(key.numpy() if cpu else key)
            weights.append(w.numpy() if cpu else w)
        bounds = torch.arange(0, n_rows + step, step).clamp_(max=n_rows) * self.n
        cuts = ([np.searchsorted(key, bounds.numpy()).tolist() for key in keys] if cpu else
                [torch.searchsorted(key, bounds.to(self.device)).tolist() for key in keys])
        extra = self._extra.view(-1)  # all zero between blocks
        extra_np = extra.numpy() if cpu else None
        for b, r0 in enumerate(range(0, n_rows, step)):
            r1 = min(r0 + step, n_rows)
            block = torch.softmax(logits[r0:r1], dim=1, out=probs[r0:r1]).mul_(pi[r0:r1, :1])
            # the components' weighted sum at the block's entries, component k after 1..k-1 as the einsum
            # sums, in a block-sized buffer (an entry occurs once per component); an entry of several
            # components occurs several times in ``at``: the same value is written each time
            parts = [(key[cut[b]:cut[b + 1]] - r0 * self.n, w[cut[b]:cut[b + 1]])
                     for key, w, cut in zip(keys, weights, cuts, strict=True) if cut[b] < cut[b + 1]]
            if parts and extra_np is not None:
                for key, w in parts:
                    extra_np[key] += w
                at = np.concatenate([key for key, _ in parts])
                flat = block.numpy().reshape(-1)
                flat[at] += extra_np[at]
                extra_np[at] = 0.0
            elif parts:
                for key, w in parts:
                    extra.index_add_(0, key, w)
                at = torch.cat([key for key, _ in parts])
                flat = block.view(-1)
                flat.put_(at, flat.take(at) + extra.take(at))
                extra.put_(at, extra.new_zeros(()).expand(at.shape))
            yield r0, r1, block.index_fill_(1, self.blocked_cols, float("-inf"))

    def scores(self, states: torch.Tensor, t: torch.Tensor, users: torch.Tensor, *, first: bool) -> torch.Tensor:
        """(T, N) scores of items 1..N (column j is item j + 1) whose target is flat event ``t`` of ``users``:
        the next item from intra states, or (``first``) the first item of the session at ``t`` from inter
        states. A view of a reused buffer: valid until the next call."""
        for _ in self._blocks(states, t, users, first=first):
            pass
        return (self._logits if self._probs is None else self._probs)[:states.shape[0]]

    def ranks(self, states: torch.Tensor, t: torch.Tensor, users: torch.Tensor, targets: torch.Tensor, *,
              first: bool) -> torch.Tensor:
        """(T,) 1-based rank of each target item among items 1..N, ties against the model
        (:func:`thrnn.metrics.ranks_from_scores`): the number of items scoring at least the target."""
        targets = targets.to(self.device).long()
        if targets.numel() and int(targets.min()) < 1:
            raise ValueError("targets must be item ids >= 1 (0 is padding)")
        rows = states.shape[0]
        if rows == 0:
            return torch.zeros(0, dtype=torch.long, device=self.device)
        count = torch.zeros(rows, dtype=torch.int32, device=self.device)
        grouped = self.n // 128 * 128
        for r0, r1, block in self._blocks(states, t, users, first=first):
            own = block.gather(1, (targets[r0:r1] - 1)[:, None])
            mask = self._mask[:r1 - r0]
            if self.host_numpy:
                np.greater_equal(block.numpy(), own.numpy(), out=mask.numpy())
            else:
                torch.ge(block, own, out=mask)
            at_least = mask.view(torch.uint8)
            # bytes summed in groups of 128 into uint8, then into int32: several times faster on CPU than
            # a bool sum into int64
            if grouped:
                count[r0:r1] += at_least[:, :grouped].view(r1 - r0, -1, 128).sum(2, dtype=torch.uint8).sum(
                    1, dtype=torch.int32)
            if grouped < self.n:
                count[r0:r1] += at_least[:, grouped:].sum(1, dtype=torch.int32)
        return count.long()

    def top(self, states: torch.Tensor, t: torch.Tensor, users: torch.Tensor, k: int, *,
            first: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """(values, item ids), both (T, min(k, N)): the best items by score, equal scores by item id."""
        parts = [top_k(block, k) for _, _, block in self._blocks(states, t, users, first=first)]
        parts = parts or [top_k(self._logits[:0], k)]
        return torch.cat([v for v, _ in parts]), torch.cat([c for _, c in parts]) + 1


class _RankQueue:
    """Targets waiting to be ranked, in arrival order: replay batches add them, full chunks of
    :attr:`ChunkScorer.max_rows` rows are ranked at once (one large matrix product each)."""

    def __init__(self, scorer: Callable[[], ChunkScorer], *, first: bool) -> None:
        self._scorer, self._first = scorer, first
        self._parts: list[tuple[torch.Tensor, ...]] = []
        self._pending = 0
        self._ranks: list[torch.Tensor] = []

    def add(self, states: torch.Tensor, t: torch.Tensor, users: torch.Tensor, targets: torch.Tensor) -> None:
        if not len(targets):
            return
        self._parts.append((states, t, users, targets))
        self._pending += len(targets)
        if self._pending >= self._scorer().max_rows:
            self._rank(final=False)

    def _rank(self, *, final: bool) -> None:
        scorer = self._scorer()
        states, t, users, targets = (torch.cat(p) for p in zip(*self._parts, strict=True))
        size = scorer.max_rows
        done = len(targets) if final else len(targets) - len(targets) % size
        for s in range(0, done, size):
            sl = slice(s, min(s + size, done))
            self._ranks.append(scorer.ranks(states[sl], t[sl], users[sl], targets[sl], first=self._first).cpu())
        self._parts = [(states[done:], t[done:], users[done:], targets[done:])] if done < len(targets) else []
        self._pending = len(targets) - done

    def finish(self) -> list[torch.Tensor]:
        if self._pending:
            self._rank(final=True)
        return self._ranks


@torch.inference_mode()
def replay(
    model: HierarchicalGRU,
    data: SessionData,
    cfg: TrainConfig,
    include: torch.Tensor,
    targets: torch.Tensor,
    device: str | torch.device = "cpu",
    *,
    collect_last: bool = False,
    blocked_items: torch.Tensor | None = None,
    batch_users: int = EVAL_BATCH_USERS,
    progress: bool = False,
    personal: PersonalHistory | None = None,
) -> ReplayOutput:
    """Replay the sessions of ``include`` in eval mode; rank and predict for the sessions of ``targets``.

    A model with the mixture reads ``personal`` (default: :func:`personal_history` of ``data``)."""
    device = resolve_device(device)
    if data.n_items > model.n_items or data.n_users > model.n_users:
        raise ValueError(f"the split has {data.n_items} items / {data.n_users} users, the model was built for "
                         f"{model.n_items} / {model.n_users}; score with a model trained on this catalogue")
    was_training = model.training
    model.eval()
    items = data.items.to(device)
    lengths = data.lengths.to(device)
    users_all = data.users.to(device)
    buckets_all = data.gap_buckets(cfg.n_gap_buckets, cfg.gap_upper_hours).to(device)
    target_dev = targets.to(device)
    first_ok = (targets & ~data.is_continuation).to(device)
    gap_ok = (targets & data.time_mask).to(device)
    blocked = (blocked_items if blocked_items is not None else item_mask(cfg, data, n_items=model.n_items)).to(device)
    state = HistoryState(data.n_users, cfg.history_sessions, model.hidden, device)
    last_out = torch.zeros(data.n_users, model.hidden, device=device) if collect_last else None
    next_rows, next_pos, first_rows, gap_rows, gap_params = [], [], [], [], []
    covariates = None
    if model.lognormal:
        covariates = target_covariates(time_covariates(model, data, cfg), data).to(device)
    if personal is None:
        personal = personal_history(model, data, cfg)
    scorer: list[ChunkScorer] = []  # made at the first target (a replay without targets needs no buffers)

    def get_scorer() -> ChunkScorer:
        if not scorer:
            scorer.append(ChunkScorer(model, personal, blocked, device))
        return scorer[0]

    next_queue, first_queue = _RankQueue(get_scorer, first=False), _RankQueue(get_scorer, first=True)
    row_start = personal.row_start.to(device) if personal is not None else None
    batches = user_parallel_batches(data, include, batch_users)
    for rows_np in tqdm(batches, disable=not progress, desc="replay", leave=False):
        rows_cpu = torch.from_numpy(rows_np)
        rows = rows_cpu.to(device)
        u = users_all[rows]
        n_cpu = data.lengths[rows_cpu]
        width = int(n_cpu.max())
        x = items[rows, :width]
        n = lengths[rows]
        h = model.inter_state(u, *state.get(u), counts_cpu=state.counts_cpu[data.users[rows_cpu]])
        out = model.intra_padded(x, n_cpu, h)  # all inputs: position p holds the state after item p
        ar = torch.arange(rows.shape[0], device=device)
        state.push(u, out[ar, n - 2], buckets_all[rows], data.users[rows_cpu])
        if last_out is not None:
            last_out[u] = out[ar, n - 1]
        sel = target_dev[rows]
        if not bool(sel.any()):
            continue
        # next-item targets x_1..x_{n-1} from the states after x_0..x_{n-2}
        tgt = x[:, 1:]
        valid = (tgt > 0) & sel[:, None]
        states = out[:, :-1][valid]
        t_items = tgt[valid]
        pos = torch.arange(1, width, device=device).expand_as(tgt)[valid]
        srows = rows[:, None].expand_as(tgt)[valid]
        flat_t = row_start[srows] + pos if row_start is not None else srows
        s_users = users_all[srows]
        next_queue.add(states, flat_t, s_users, t_items)
        next_rows.append(srows.cpu())
        next_pos.append(pos.cpu())
        if model.temporal:
            fsel = first_ok[rows]
            if bool(fsel.any()):
                f_t = row_start[rows[fsel]] if row_start is not None else rows[fsel]
                first_queue.add(h[fsel], f_t, u[fsel], x[fsel, 0])
                first_rows.append(rows[fsel].cpu())
            gsel = gap_ok[rows]
            if bool(gsel.any()):
                cov = covariates[rows[gsel]] if covariates is not None else None
                gap_params.append(model.time_params(h[gsel], cov).double().cpu())
                gap_rows.append(rows[gsel].cpu())
        elif bool(gap_ok[rows].any()):
            gap_rows.append(rows[gap_ok[rows]].cpu())
    next_ranks, first_ranks = next_queue.finish(), first_queue.finish()
    model.train(was_training)

    def cat(parts: list[torch.Tensor], dtype: type = np.int64) -> np.ndarray:
        return torch.cat(parts).numpy() if parts else np.zeros(0, dtype=dtype)

    return ReplayOutput(
        next_ranks=cat(next_ranks),
        next_rows=cat(next_rows),
        next_positions=cat(next_pos),
        first_ranks=cat(first_ranks) if model.temporal else None,
        first_rows=cat(first_rows),
        gap_rows=cat(gap_rows),
        gap_params=(torch.cat(gap_params).numpy() if gap_params else np.zeros((0, 1)))
        if model.temporal else None,
        state=state,
        last_out=last_out,
    )


def _order(rows: np.ndarray, *keys: np.ndarray) -> np.ndarray:
    """Permutation sorting by session row (rows are in (user, session_index) order), then keys."""
    return np.lexsort((*reversed(keys), rows)) if len(rows) else np.zeros(0, dtype=np.int64)


def time_covariates(model: HierarchicalGRU, data: SessionData, cfg: TrainConfig) -> torch.Tensor:
    """(S, F) covariates after each session (:func:`thrnn.time_features.covariates_after`) on the scale
    the model's log-normal head was trained with."""
    head = model.time_head
    return covariates_after(data, float(head.center), float(head.spread), cfg.gap_upper_hours)


def time_predictions(model: HierarchicalGRU, params: np.ndarray | torch.Tensor,
                     cfg: TrainConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(median hours, mean hours given return within the cut-off, no-return mass) for each row of
    ``params`` (:meth:`HierarchicalGRU.time_params`); the median is capped at the cut-off."""
    law = model.law_of(torch.as_tensor(params, dtype=torch.float64))
    cutoff = cfg.time_cutoff_hours
    median = torch.nan_to_num(law.median(), nan=cutoff, posinf=cutoff).clamp(max=cutoff).numpy()
    mean, _ = law.mean_below(cutoff)
    return median, mean.numpy(), law.no_return().numpy()


QUANTILE_LEVELS = (0.1, 0.5, 0.9)


def gap_distribution(law: object, true_hours: np.ndarray,
                     horizons_hours: tuple[float, ...] = HORIZONS_HOURS) -> dict[str, object]:
    """The :class:`TestPredictions` fields that describe each gap's law (log density at the true gap,
    quantiles, P(gap <= h) per horizon), from a law with the methods of
    :class:`thrnn.models.lognormal_time.LogNormalMixture`."""
    t = torch.as_tensor(true_hours, dtype=torch.float64)
    return {
        "gap_log_density": law.log_density(t).numpy(),
        "gap_quantiles": {q: law.quantile(q).numpy() for q in QUANTILE_LEVELS},
        "gap_p_within": {h: law.cdf(torch.full_like(t, h)).numpy() for h in horizons_hours},
    }


def predict_test(
    model: HierarchicalGRU,
    split: Split | SessionData,
    cfg: TrainConfig,
    device: str | torch.device = "cpu",
    *,
    progress: bool = False,
) -> TestPredictions:
    """Ranks and return-time predictions for every test target of ``split`` (see :class:`TestPredictions`)."""
    data = split if isinstance(split, SessionData) else load_sessions(split)
    device = resolve_device(device)
    model = model.to(device)
    everything = torch.ones(data.n_sessions, dtype=torch.bool)
    r = replay(model, data, cfg, everything, data.is_test, device, progress=progress)
    o = _order(r.next_rows, r.next_positions)
    users = data.users.numpy()
    gap_rows = r.gap_rows
    og = _order(gap_rows)
    gap_rows = gap_rows[og]
    first = None
    if r.first_ranks is not None:
        first = r.first_ranks[_order(r.first_rows)]
    median = mean = no_return = None
    dist: dict[str, object] = {}
    true_hours = data.gap_hours.numpy()[gap_rows]
    if r.gap_params is not None:
        median, mean, no_return = time_predictions(model, r.gap_params[og], cfg)
        dist = gap_distribution(model.law_of(torch.as_tensor(r.gap_params[og], dtype=torch.float64)), true_hours)
    return TestPredictions(
        next_item_ranks=r.next_ranks[o],
        first_item_ranks=first,
        gap_true_hours=true_hours,
        gap_median_hours=median,
        gap_mean_hours=mean,
        gap_no_return_prob=no_return,
        next_item_users=users[r.next_rows[o]],
        next_item_positions=r.next_positions[o],
        gap_users=users[gap_rows],
        **dist,
    )
