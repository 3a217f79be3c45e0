"""Hierarchical session GRU: THRNN (Vassøy et al., WSDM 2019), HRNN and a GRU4Rec-style GRU.

One class, three flag settings (SPEC §4):

- ``inter``: an inter-session GRU reads the user's last K session representations (the intra GRU's
  state after all but the last item of each earlier session) and its output initialises the
  intra-session GRU. Off = GRU4Rec-style session GRU (zero initial state).
- ``context``: each inter input is ``[rep_j, gap_bucket_embedding_j, user_embedding]``, where
  gap bucket j is the gap that preceded session j (the gap before the current session is the time
  target and is never an input).
- ``temporal``: a time head (:class:`thrnn.time_model.TimeHead`) and a first-item head on the
  inter-session state.

The output layers score items 1..N only (column ``j`` is item ``j + 1``): padding is never a
candidate in training or ranking. :meth:`full_scores` adds the padding column as -inf for the
(B, N+1) layout of :func:`thrnn.metrics.ranks_from_scores`.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence

from thrnn.time_model import TimeHead


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
    ) -> None:
        super().__init__()
        if n_items < 1 or n_users < 1:
            raise ValueError(f"need n_items >= 1 and n_users >= 1, got {n_items}, {n_users}")
        if (context or temporal) and not inter:
            raise ValueError("context and temporal need the inter-session level")
        self.n_items, self.n_users, self.hidden = n_items, n_users, hidden
        self.inter, self.context, self.temporal = inter, context, temporal
        self.item_emb = nn.Embedding(n_items + 1, hidden, padding_idx=0)
        self.drop = nn.Dropout(dropout)
        self.intra_gru = nn.GRU(hidden, hidden, batch_first=True)
        self.out = nn.Linear(hidden, n_items)
        if inter:
            in_size = hidden
            if context:
                self.user_emb = nn.Embedding(n_users, user_embedding)
                # row 0 = no gap (a user's first session and the empty FIFO slots)
                self.gap_emb = nn.Embedding(n_gap_buckets + 1, gap_embedding)
                in_size += user_embedding + gap_embedding
            self.inter_gru = nn.GRU(in_size, hidden, batch_first=True)
        if temporal:
            self.time_head = TimeHead(hidden, w_init=w_init)
            self.first_out = nn.Linear(hidden, n_items)

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
        GRU runs packed over each user's ``max(count, 1)`` valid slots (``counts_cpu`` avoids a
        device sync), so its final state is the output at the last valid slot.
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
        packed = pack_padded_sequence(self.drop(x), n, batch_first=True, enforce_sorted=False)
        _, h_n = self.inter_gru(packed)
        return self.drop(h_n[0])

    def intra(
        self, items: torch.Tensor, lengths: torch.Tensor, h0: torch.Tensor
    ) -> tuple[PackedSequence, torch.Tensor]:
        """Intra GRU over item ids (B, T) with per-row ``lengths`` (CPU) from initial state h0 (B, H).

        Returns the packed outputs (no output dropout; ``.data`` rows align with
        ``pack(targets, lengths)``) and the final state (B, H) = the output after item ``lengths - 1``.
        Padding never reaches the GRU.
        """
        packed = pack_padded_sequence(items, lengths.detach().cpu(), batch_first=True, enforce_sorted=False)
        emb = self.drop(self.item_emb(packed.data))
        out, h_n = self.intra_gru(packed._replace(data=emb), h0.unsqueeze(0).contiguous())
        return out, h_n[0]

    def intra_padded(self, items: torch.Tensor, lengths: torch.Tensor, h0: torch.Tensor) -> torch.Tensor:
        """Intra GRU outputs (B, T, H) (zero after each row's length); for inference."""
        out, _ = self.intra(items, lengths, h0)
        padded, _ = pad_packed_sequence(out, batch_first=True, total_length=items.shape[1])
        return padded

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

    def time_a(self, h: torch.Tensor) -> torch.Tensor:
        """``a = v·h + b`` (B,) of the return-time intensity, in float32 (exp overflows in half)."""
        if not self.temporal:
            raise RuntimeError("this model has no time head (only THRNN has one)")
        with torch.autocast(device_type=h.device.type, enabled=False):
            return self.time_head(h.float())

    @staticmethod
    def full_scores(logits: torch.Tensor) -> torch.Tensor:
        """(B, N) item logits -> (B, N+1) scores with padding column 0 at -inf."""
        pad = logits.new_full((logits.shape[0], 1), float("-inf"))
        return torch.cat([pad, logits], dim=1)

    def time_parameters(self) -> list[nn.Parameter]:
        """Parameters trained at the time learning rate (v, b, w of the time head)."""
        return list(self.time_head.parameters()) if self.temporal else []


def _logits(layer: nn.Linear, x: torch.Tensor, candidates: torch.Tensor | None) -> torch.Tensor:
    if candidates is None:
        return layer(x)
    idx = candidates - 1
    return x @ layer.weight[idx].t() + layer.bias[idx]
