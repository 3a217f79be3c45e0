"""Hierarchical session GRU: THRNN (Vassøy et al., WSDM 2019), HRNN and a GRU4Rec-style GRU.

One class, three flag settings (docs/design.md §4):

- ``inter``: an inter-session GRU reads the user's last K session representations (the intra GRU's
  state after all but the last item of each earlier session) and its output initialises the
  intra-session GRU. Off = GRU4Rec-style session GRU (zero initial state).
- ``context``: each inter input is ``[rep_j, gap_bucket_embedding_j, user_embedding]``, where
  gap bucket j is the gap that preceded session j (the gap before the current session is the time
  target and is never an input).
- ``temporal``: a time head and a first-item head on the inter-session state. The time head is the
  log-normal mixture (:mod:`thrnn.models.lognormal_time`, reading the state and the covariates of
  :mod:`thrnn.time_features`) or the paper's RMTPP intensity (:class:`thrnn.time_model.TimeHead`);
  :meth:`HierarchicalGRU.time_law` gives either as a law on the hours axis.

The output layers score items 1..N only (column ``j`` is item ``j + 1``): padding is never a
candidate in training or ranking. :meth:`full_scores` adds the padding column as -inf for the
(B, N+1) layout of :func:`thrnn.metrics.ranks_from_scores`.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence

from thrnn.config import TIME_HEADS
from thrnn.models.fast_gru import gru_packed
from thrnn.models.lognormal_time import LogNormalMixture, LogNormalMixtureHead, censored_nll
from thrnn.models.mixture import FIRST_INIT, NEXT_INIT, MixtureGate, mixture_log_prob, mixture_probs
from thrnn.time_model import RmtppLaw, TimeHead

TimeLaw = LogNormalMixture | RmtppLaw

# Pack the intra batch when its padded size exceeds this multiple of its real length (measured on CPU:
# packing pays off only for ragged batches; for short or even ones its overhead dominates).
_PACK_RATIO = 2.0


class HierarchicalGRU(nn.Module):
    """THRNN / HRNN / GRU4Rec-style GRU; see the module docstring for the flags."""

    def __init__(
        self,
        n_items: int,
        n_users: int,
        hidden: int = 100,
        user_embedding: int = 10,
        gap_embedding: int = 5,
        n_gap_buckets: int = 500,
        dropout: float = 0.2,
        inter: bool = True,
        context: bool = True,
        temporal: bool = True,
        w_init: float = -0.1,
        tie_embeddings: bool = False,
        mixture: bool = False,
        time_head: str = "rmtpp",
        time_components: int = 4,
        n_time_covariates: int = 0,
        time_state: bool = True,
        gap_exponent: float = 1.0,
        time_unit_hours: float = 24.0,
    ) -> None:
        super().__init__()
        if n_items < 1 or n_users < 1:
            raise ValueError(f"need n_items >= 1 and n_users >= 1, got {n_items}, {n_users}")
        if (context or temporal) and not inter:
            raise ValueError("context and temporal need the inter-session level")
        self.n_items, self.n_users, self.hidden = n_items, n_users, hidden
        self.inter, self.context, self.temporal = inter, context, temporal
        self.item_emb = nn.Embedding(n_items + 1, hidden, padding_idx=0)
        self.drop = MaskDropout(dropout)
        self.intra_gru = nn.GRU(hidden, hidden, batch_first=True)
        self.out: nn.Module = TiedOutput(self.item_emb) if tie_embeddings else nn.Linear(hidden, n_items)
        if tie_embeddings:  # output-layer scale (as nn.Linear's init), not N(0, 1): logits start small
            bound = hidden ** -0.5
            with torch.no_grad():
                self.item_emb.weight[1:].uniform_(-bound, bound)
        if inter:
            in_size = hidden
            if context:
                self.user_emb = nn.Embedding(n_users, user_embedding)
                # row 0 = no gap (a user's first session and the empty FIFO slots)
                self.gap_emb = nn.Embedding(n_gap_buckets + 1, gap_embedding)
                in_size += user_embedding + gap_embedding
            self.inter_gru = nn.GRU(in_size, hidden, batch_first=True)
        if time_head not in TIME_HEADS:
            raise ValueError(f"time_head must be one of {TIME_HEADS}, got {time_head!r}")
        self.time_kind = time_head
        self.time_axis = (gap_exponent, time_unit_hours)  # RMTPP's model axis (thrnn.time_model)
        if temporal:
            self.time_head: nn.Module = (
                LogNormalMixtureHead(hidden if time_state else 0, n_time_covariates, time_components) if time_head == "lognormal"
                else TimeHead(hidden, w_init=w_init))
            self.first_out = nn.Linear(hidden, n_items)
        self.mixture = mixture
        if mixture:
            self.next_gate = MixtureGate(hidden, NEXT_INIT)
            if temporal:
                self.first_gate = MixtureGate(hidden, FIRST_INIT)

    # ------------------------------------------------------------------ levels

    def inter_state(
        self,
        users: torch.Tensor,
        reps: torch.Tensor,
        buckets: torch.Tensor,
        counts: torch.Tensor,
        counts_cpu: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """(B, H) state from the FIFO (B, K, H) of earlier session representations; dropout applied.

        Zero for the GRU4Rec-style model. A user with no earlier session reads one empty slot. The
        GRU runs over the first ``max(count)`` slots and each user's state is read at its last valid
        slot (slots are left-aligned, so later padding cannot reach it); ``counts_cpu`` avoids a
        device sync.
        """
        if not self.inter:
            return reps.new_zeros(users.shape[0], self.hidden)
        n = (counts if counts_cpu is None else counts_cpu).detach().cpu().clamp(min=1)
        k = int(n.max())
        x = reps[:, :k]
        if self.context:
            x = torch.cat(
                [x, self.gap_emb(buckets[:, :k]), self.user_emb(users).unsqueeze(1).expand(-1, k, -1)], dim=2
            )
        # FIFOs are mostly full, so a plain GRU beats a packed one (no packing/slicing overhead).
        out, _ = self.inter_gru(self.drop(x))
        last = (n - 1).to(out.device)
        return self.drop(out[torch.arange(out.shape[0], device=out.device), last])

    def _intra(
        self, items: torch.Tensor, lengths: torch.Tensor, h0: torch.Tensor
    ) -> tuple[torch.Tensor | PackedSequence, torch.Tensor]:
        """Run the intra GRU; packed when the batch is ragged enough to pay for packing."""
        lengths = lengths.detach().cpu()
        b, t = items.shape
        h0 = h0.unsqueeze(0).contiguous()
        if b * t > _PACK_RATIO * int(lengths.sum()):
            packed = pack_padded_sequence(items, lengths, batch_first=True, enforce_sorted=False)
            out, h_n = self.intra_gru(packed._replace(data=self.drop(self.item_emb(packed.data))), h0)
            return out, h_n[0]
        out, _ = self.intra_gru(self.drop(self.item_emb(items)), h0)
        return out, out[torch.arange(b, device=out.device), (lengths - 1).to(out.device)]

    def intra_targets(
        self, inputs: torch.Tensor, targets: torch.Tensor, lengths: torch.Tensor, h0: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Intra GRU over item ids ``inputs`` (B, T) with per-row ``lengths`` (CPU) from h0 (B, H).

        Returns ``(states, target_ids, final)``: the output (no output dropout) at every valid position
        (M, H) with the target id it predicts (M,), and each row's state after its last input (B, H).
        Padding never changes a valid output (the GRU is causal and padding comes last).
        """
        out, final = self._intra(inputs, lengths, h0)
        if isinstance(out, PackedSequence):
            lengths = lengths.detach().cpu()
            tgt = pack_padded_sequence(targets, lengths, batch_first=True, enforce_sorted=False).data
            return out.data, tgt, final
        valid = torch.arange(inputs.shape[1], device=inputs.device)[None] < lengths.to(inputs.device)[:, None]
        return out[valid], targets[valid], final

    def intra_padded(self, items: torch.Tensor, lengths: torch.Tensor, h0: torch.Tensor) -> torch.Tensor:
        """Intra GRU outputs (B, T, H) (no output dropout); values after each row's length are
        unspecified. For inference."""
        out, _ = self._intra(items, lengths, h0)
        if isinstance(out, PackedSequence):
            out, _ = pad_packed_sequence(out, batch_first=True, total_length=items.shape[1])
        return out

    # ------------------------------------------------------------------ training layout (packed)

    def _gru_packed(self, gru: nn.GRU, parts: list[tuple[torch.Tensor, int]], h0: torch.Tensor | None,
                    sizes: tuple[int, ...], prev: torch.Tensor) -> torch.Tensor:
        """Outputs (N, H) of ``gru`` over packed inputs given as column blocks ``(x, first column of
        W_ih)`` (dropout already applied). On CPU the recurrence of :mod:`thrnn.models.fast_gru` with one
        input projection per block (a block that needs no gradient, such as the detached session
        representations, costs no input-gradient product); elsewhere ``nn.GRU`` (cuDNN) on a
        PackedSequence of the same layout."""
        x0 = parts[0][0]
        if x0.device.type != "cpu":
            x = torch.cat([p for p, _ in parts], dim=1) if len(parts) > 1 else x0
            batch_sizes = torch.tensor(sizes, dtype=torch.int64)
            return gru(PackedSequence(x, batch_sizes), None if h0 is None else h0.unsqueeze(0).contiguous())[0].data
        w = gru.weight_ih_l0
        gi = gru.bias_ih_l0
        for x, start in parts:
            gi = torch.addmm(gi, x, w[:, start: start + x.shape[1]].t())
        return gru_packed(gi, h0, gru.weight_hh_l0, gru.bias_hh_l0, sizes, prev)

    def inter_packed(self, reps: torch.Tensor, buckets: torch.Tensor, users: torch.Tensor,
                     sizes: tuple[int, ...], prev: torch.Tensor, last: torch.Tensor) -> torch.Tensor:
        """(B, H) inter-session states (dropout applied) of a training batch whose FIFO slots are packed
        (:mod:`thrnn.train_batches`): ``reps`` (N, H) the slots' session representations (zeros for an
        empty slot), ``buckets`` and ``users`` (N,) their gap buckets and user ids, ``last`` (B,) the
        packed index of each row's newest slot. The same function as :meth:`inter_state`."""
        batch = sizes[0]
        if not self.inter:
            return reps.new_zeros(batch, self.hidden)
        parts = [(self.drop(reps), 0)]
        if self.context:
            ctx = torch.cat([self.gap_emb(buckets), self.user_emb(users)], dim=1)
            parts.append((self.drop(ctx), self.hidden))
        out = self._gru_packed(self.inter_gru, parts, None, sizes, prev)  # zero initial state
        return self.drop(out[last])

    def intra_packed(self, items: torch.Tensor, h0: torch.Tensor, sizes: tuple[int, ...], prev: torch.Tensor,
                     last: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Intra GRU over packed input items (N,) from h0 (B, H) (rows in the packed order): the output
        at every position (N, H) (no output dropout) and each row's state after its last input (B, H)."""
        out = self._gru_packed(self.intra_gru, [(self.drop(self.item_emb(items)), 0)], h0, sizes, prev)
        return out, out[last]

    # ------------------------------------------------------------------ heads

    def item_logits(self, states: torch.Tensor, candidates: torch.Tensor | None = None) -> torch.Tensor:
        """Next-item logits of intra states (T, H): (T, N) over items 1..N, or (T, C) over ``candidates``."""
        states = self.drop(states)
        return _logits(self.out, states, candidates)

    def first_logits(self, h: torch.Tensor, candidates: torch.Tensor | None = None) -> torch.Tensor:
        """First-item logits of inter states h (B, H) (temporal model only)."""
        if not self.temporal:
            raise RuntimeError("this model has no first-item head (only THRNN has one)")
        return _logits(self.first_out, h, candidates)

    # ------------------------------------------------------------------ repeat-aware mixture

    def next_log_prob(self, states: torch.Tensor, targets: torch.Tensor, comp_p: torch.Tensor,
                      comp_mass: torch.Tensor) -> torch.Tensor:
        """log P(target) (T,) of the next-item mixture for intra states (T, H), target ids (T,) and the
        personal components' probabilities of the targets (T, K) (:meth:`PersonalHistory.target_probs`)."""
        states = self.drop(states)
        logp = torch.log_softmax(self.out(states).float(), dim=1).gather(1, (targets - 1)[:, None])[:, 0]
        return mixture_log_prob(self.next_gate(states, comp_mass), logp, comp_p)

    def first_log_prob(self, h: torch.Tensor, targets: torch.Tensor, comp_p: torch.Tensor,
                       comp_mass: torch.Tensor) -> torch.Tensor:
        """log P(target) (B,) of the first-item mixture from inter states h (B, H); as :meth:`next_log_prob`."""
        logp = torch.log_softmax(self.first_logits(h).float(), dim=1).gather(1, (targets - 1)[:, None])[:, 0]
        return mixture_log_prob(self.first_gate(h, comp_mass), logp, comp_p)

    def next_scores(self, states: torch.Tensor, components: torch.Tensor | None = None,
                    comp_mass: torch.Tensor | None = None) -> torch.Tensor:
        """(T, N+1) ranking scores of the next item (padding column -inf): mixture probabilities when the
        model has the mixture (``components`` (T, K, N+1) from :meth:`PersonalHistory.dense`), else logits."""
        if not self.mixture:
            return self.full_scores(self.item_logits(states).float())
        states = self.drop(states)
        probs = mixture_probs(self.next_gate(states, comp_mass), self.out(states), components)
        return probs.index_fill_(1, probs.new_zeros(1, dtype=torch.long), float("-inf"))

    def first_scores(self, h: torch.Tensor, components: torch.Tensor | None = None,
                     comp_mass: torch.Tensor | None = None) -> torch.Tensor:
        """(B, N+1) ranking scores of the first item of the next session; as :meth:`next_scores`."""
        if not self.mixture:
            return self.full_scores(self.first_logits(h).float())
        probs = mixture_probs(self.first_gate(h, comp_mass), self.first_logits(h), components)
        return probs.index_fill_(1, probs.new_zeros(1, dtype=torch.long), float("-inf"))

    def time_a(self, h: torch.Tensor) -> torch.Tensor:
        """``a = v·h + b`` (B,) of the RMTPP intensity, in float32 (exp overflows in half)."""
        if not self.temporal or self.time_kind != "rmtpp":
            raise RuntimeError("this model has no time head (only THRNN has one)")
        with torch.autocast(device_type=h.device.type, enabled=False):
            return self.time_head(h.float())

    @property
    def lognormal(self) -> bool:
        """The time head is the log-normal mixture (it reads covariates; its law is proper)."""
        return self.temporal and self.time_kind == "lognormal"

    def time_params(self, h: torch.Tensor, covariates: torch.Tensor | None = None) -> torch.Tensor:
        """(B, P) float32 parameters of the return-time law of inter states h (B, H): RMTPP's ``a`` (P = 1)
        or the mixture's stacked weights, means and scales; :meth:`law_of` reads them back."""
        if not self.lognormal:
            return self.time_a(h)[:, None]
        with torch.autocast(device_type=h.device.type, enabled=False):
            return self.time_head(h.float(), covariates.float()).stack()

    def law_of(self, params: torch.Tensor) -> TimeLaw:
        """The law on the hours axis of :meth:`time_params` output (any float dtype)."""
        if self.lognormal:
            return LogNormalMixture.from_stacked(params)
        w = self.time_head.w.detach().to(params.dtype)
        return RmtppLaw(params[:, 0], w, *self.time_axis)

    def time_law(self, h: torch.Tensor, covariates: torch.Tensor | None = None) -> TimeLaw:
        return self.law_of(self.time_params(h, covariates))

    def time_loss(self, h: torch.Tensor, covariates: torch.Tensor, hours: torch.Tensor,
                  censored: torch.Tensor) -> torch.Tensor:
        """Per-gap censored NLL (B,) of the log-normal head in log-hours (RMTPP's loss is
        :func:`thrnn.time_model.nll` on its own model axis)."""
        if not self.lognormal:
            raise RuntimeError("time_loss is the log-normal head's loss; this model has an RMTPP head")
        with torch.autocast(device_type=h.device.type, enabled=False):
            return censored_nll(self.time_head(h.float(), covariates.float()), hours.float(), censored)

    @staticmethod
    def full_scores(logits: torch.Tensor) -> torch.Tensor:
        """(B, N) item logits -> (B, N+1) scores with padding column 0 at -inf."""
        pad = logits.new_full((logits.shape[0], 1), float("-inf"))
        return torch.cat([pad, logits], dim=1)

    def time_parameters(self) -> list[nn.Parameter]:
        """Parameters trained at the time learning rate (v, b, w of the time head)."""
        return list(self.time_head.parameters()) if self.temporal else []


class MaskDropout(nn.Module):
    """Inverted dropout as ``nn.Dropout`` (zero with probability ``p``, scale the rest by 1/(1-p)), with
    the mask drawn by ``torch.rand``: on CPU several times faster than the Bernoulli sampler that
    ``nn.Dropout`` uses (docs/train_speed.md). Identity in eval mode; no parameters or buffers."""

    def __init__(self, p: float = 0.5) -> None:
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"dropout probability must be in [0, 1), got {p}")
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        mask = torch.rand(x.shape, dtype=x.dtype, device=x.device).ge_(self.p).mul_(1.0 / (1.0 - self.p))
        return x * mask

    def extra_repr(self) -> str:
        return f"p={self.p}"


class TiedOutput(nn.Module):
    """Next-item output layer that reuses the item input embeddings as its weights (rows 1..N) with its
    own bias: the "constrained embedding" of GRU4Rec / weight tying of language models."""

    def __init__(self, embedding: nn.Embedding) -> None:
        super().__init__()
        # A plain reference, not a submodule: the parent owns (and saves) the embedding once.
        object.__setattr__(self, "_embedding", embedding)
        self.bias = nn.Parameter(torch.zeros(embedding.num_embeddings - 1))

    @property
    def weight(self) -> torch.Tensor:
        return self._embedding.weight[1:]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.addmm(self.bias, x, self.weight.t())


def _logits(layer: nn.Module, x: torch.Tensor, candidates: torch.Tensor | None) -> torch.Tensor:
    if candidates is None:
        return layer(x)
    idx = candidates - 1
    return x @ layer.weight[idx].t() + layer.bias[idx]
