"""GRU recurrence with a hand-written backward pass, for training on CPU (docs/train_speed.md).

``nn.GRU`` on CPU runs every time step as about a dozen autograd-recorded operators and its backward
as about twice as many; the training batches of the hierarchical model are small (a median of 9
users) and run some 30 GRU steps each, so fixed per-operator costs dominate. Here a step is 5
operators forward and 3 backward (no autograd recording inside); what is not on the recurrence (the
input projection, the gate derivatives, the weight gradients) is done once for all steps with large
operators.

Layout: PyTorch's packed layout, time-major: step ``t`` holds the first ``sizes[t]`` rows
(``sizes`` non-increasing, ``sizes[0]`` = the batch), so every step reads and writes contiguous
blocks and padding is never computed. Same parameters and gate equations as ``nn.GRU`` (gates r, z,
n; ``n = tanh(W_in x + b_in + r * (W_hn h + b_hn))``, ``h' = (1 - z) n + z h``); equal to it up to
float rounding (tests/thrnn/test_model_fast_gru.py, 1e-12 in double precision).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch.autograd.function import once_differentiable


def block_offsets(sizes: Sequence[int]) -> list[int]:
    """Start of each step's block in the packed layout."""
    out, o = [], 0
    for n in sizes:
        out.append(o)
        o += n
    return out


def previous_index(sizes: Sequence[int]) -> torch.Tensor:
    """(N,) row of each packed position's previous state in ``cat([h0, out])``: step 0 reads h0, step
    t > 0 reads its row of step t-1's block."""
    batch = sizes[0]
    parts = [torch.arange(batch)]
    offsets = block_offsets(sizes)
    for t in range(1, len(sizes)):
        parts.append(batch + offsets[t - 1] + torch.arange(sizes[t]))
    return torch.cat(parts)


class _Recurrence(torch.autograd.Function):
    @staticmethod
    def forward(ctx, gi: torch.Tensor, h0: torch.Tensor | None, w_hh: torch.Tensor, b_hh: torch.Tensor,
                sizes: tuple[int, ...], prev: torch.Tensor | None) -> torch.Tensor:
        n_all, h3 = gi.shape
        hid = h3 // 3
        zero_start = h0 is None  # step 0 then needs no product (W_hh 0 = 0) and h0 no gradient
        if zero_start:
            h0 = gi.new_zeros(sizes[0], hid)
        # c = [gi_rz + b_hh_rz, b_hh_n]: one addmm per step then gives both the r/z pre-activations and
        # W_hn h + b_hn (which r multiplies, so it must stay apart from gi_n)
        c = torch.cat([gi[:, : 2 * hid] + b_hh[: 2 * hid], b_hh[2 * hid:].expand(n_all, hid)], dim=1)
        hg = torch.empty_like(gi)  # per step: [r, z, W_hn h + b_hn]
        ng = gi.new_empty(n_all, hid)  # n
        out = gi.new_empty(n_all, hid)
        w_t = w_hh.t()
        # every step's blocks as views made at once (split), not sliced one by one in the loop
        blocks = zip(c.split(sizes), hg.split(sizes), hg[:, : 2 * hid].split(sizes), hg[:, :hid].split(sizes),
                     hg[:, hid: 2 * hid].split(sizes), hg[:, 2 * hid:].split(sizes), gi[:, 2 * hid:].split(sizes),
                     ng.split(sizes), out.split(sizes), strict=True)
        h = h0
        for t, (c_t, hg_t, rz_t, r_t, z_t, hn_t, gin_t, n_t, out_t) in enumerate(blocks):
            n = c_t.shape[0]
            if h.shape[0] != n:
                h = h[:n]
            if t == 0 and zero_start:
                hg_t.copy_(c_t)
            else:
                torch.addmm(c_t, h, w_t, out=hg_t)
            rz_t.sigmoid_()
            torch.addcmul(gin_t, r_t, hn_t, out=n_t).tanh_()
            h = torch.lerp(n_t, h, z_t, out=out_t)
        ctx.sizes, ctx.zero_start = sizes, zero_start
        ctx.save_for_backward(h0, w_hh, hg, ng, out, prev)
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, dout: torch.Tensor):  # type: ignore[override]
        h0, w_hh, hg, ng, out, prev = ctx.saved_tensors
        sizes = ctx.sizes
        n_all, hid = out.shape
        states = torch.cat([h0, out])
        hprev = states[:n_all] if prev is None else states[prev]
        r, z, hn = hg[:, :hid], hg[:, hid: 2 * hid], hg[:, 2 * hid:]
        a_n = (1 - z) * (1 - ng * ng)  # d n_pre / d h'
        # per position, d(pre-activations of r, z; W_hn h + b_hn) and d(h_prev, direct) = A * dh'
        coef = torch.cat([a_n * hn * r * (1 - r), (hprev - ng) * z * (1 - z), a_n * r, z], dim=1)
        dh_all = dout.contiguous().clone()  # becomes the total gradient of each position's output
        dg = torch.empty_like(coef)
        dg_blocks = dg.split(sizes)
        dg3_blocks = dg[:, : 3 * hid].split(sizes)
        dz_blocks = dg[:, 3 * hid:].split(sizes)
        coef_blocks = coef.view(n_all, 4, hid).split(sizes)
        dh_blocks = dh_all.split(sizes)
        dh0 = None
        for t in range(len(sizes) - 1, -1, -1):
            n, dh = sizes[t], dh_blocks[t]
            torch.mul(coef_blocks[t], dh.unsqueeze(1), out=dg_blocks[t].view(n, 4, hid))
            if t:
                prev_dh = dh_blocks[t - 1]
                if prev_dh.shape[0] != n:
                    prev_dh = prev_dh[:n]
                prev_dh.add_(dz_blocks[t]).addmm_(dg3_blocks[t], w_hh)
            elif ctx.needs_input_grad[1]:
                dh0 = torch.addmm(dz_blocks[t], dg3_blocks[t], w_hh)  # sizes[0] is the batch
        d3 = dg[:, : 3 * hid]
        # with a zero start the first block's previous states are 0: no share in dW_hh
        skip = sizes[0] if ctx.zero_start else 0
        dw_hh = d3[skip:].t().mm(hprev[skip:])
        db_hh = d3.sum(0)
        dgi = torch.cat([dg[:, : 2 * hid], dh_all * a_n], dim=1)
        return dgi, dh0, dw_hh, db_hh, None, None


def gru_packed(gi: torch.Tensor, h0: torch.Tensor | None, w_hh: torch.Tensor, b_hh: torch.Tensor,
               sizes: Sequence[int], prev: torch.Tensor | None = None) -> torch.Tensor:
    """GRU outputs (N, H) in the packed layout (module docstring) from the input projections
    ``gi = x W_ih^T + b_ih`` (N, 3H), the initial state h0 (sizes[0], H; None = zeros, as nn.GRU's
    default, which saves the first step's product) and the recurrent weights.

    ``prev`` is :func:`previous_index` of ``sizes``; None when every step holds every row (a padded
    batch, time-major), where the previous state of position i is position i - batch."""
    if h0 is not None and sizes[0] != h0.shape[0]:
        raise ValueError(f"the first step must hold every row: sizes[0] = {sizes[0]}, h0 has {h0.shape[0]}")
    return _Recurrence.apply(gi, h0, w_hh, b_hh, tuple(int(s) for s in sizes), prev)
