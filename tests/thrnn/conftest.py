"""Reference implementations the model tests compare against: the inter-session state and a replay of the
test sessions, one user and one session at a time."""

from __future__ import annotations

import numpy as np
import torch

from thrnn.metrics import ranks_from_scores


def reference_inter(model, cfg, u, fifo):
    """The inter-session state of user ``u`` from an explicit list ``fifo`` of (representation, gap bucket)."""
    if not model.inter:
        return torch.zeros(model.hidden)
    hist = fifo[-cfg.history_sessions:] or [(torch.zeros(model.hidden), 0)]
    x = torch.stack([h for h, _ in hist])[None]
    if model.context:
        b = torch.tensor([[bk for _, bk in hist]])
        x = torch.cat([x, model.gap_emb(b), model.user_emb(torch.tensor([u]))[:, None].expand(-1, len(hist), -1)], 2)
    return model.inter_gru(x)[0][0, -1]


@torch.no_grad()
def reference_replay(model, cfg, data, final=None):
    """One user and one session at a time, unpacked GRUs, an explicit list as the FIFO.

    ``final``, when a dict, receives per user the inter state after the last session ("h") and the
    intra output after the last session's last item ("last_out").
    """
    ranks, first, a_values = [], [], []
    buckets = data.gap_buckets(cfg.n_gap_buckets, cfg.gap_upper_hours)
    for u in range(data.n_users):
        fifo = []
        for r in (data.users == u).nonzero().squeeze(1).tolist():
            n = int(data.lengths[r])
            items = data.items[r, :n]
            h = reference_inter(model, cfg, u, fifo)
            outs = model.intra_gru(model.item_emb(items)[None], h[None, None])[0][0]
            if bool(data.is_test[r]) and model.temporal:
                scores = model.full_scores(model.out(outs[: n - 1]))
                ranks.extend(ranks_from_scores(scores, items[1:]).tolist())
                if not bool(data.is_continuation[r]):
                    first.extend(ranks_from_scores(model.full_scores(model.first_out(h[None])), items[:1]).tolist())
                if bool(data.time_mask[r]) and not model.lognormal:
                    a_values.append(float(model.time_head(h[None])))
            fifo.append((outs[n - 2], int(buckets[r])))
            if final is not None:
                final[u] = {"last_out": outs[n - 1], "h": None}
        if final is not None and u in final:
            final[u]["h"] = reference_inter(model, cfg, u, fifo)
    return np.array(ranks), np.array(first), torch.tensor(a_values, dtype=torch.float64)
