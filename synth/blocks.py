"""The events of consecutive users, one block at a time: activity, sessions, items and times."""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
from scipy.special import ndtr, ndtri

from synth.catalog import TRACKS_PER_ARTIST, Catalog, build_catalog
from synth.config import STREAM_BLOCK, STREAM_USERS, SynthConfig, parse_start
from synth.profiles import PROFILES, FormatProfile

# UTC offsets (hours) of users and their weights: mostly Americas and Europe, some Asia.
_TZ_OFFSETS = np.array([-8, -6, -5, -3, 0, 1, 2, 3, 5.5, 8, 9, 10])
_TZ_WEIGHTS = np.array([0.12, 0.08, 0.16, 0.05, 0.14, 0.17, 0.07, 0.05, 0.04, 0.04, 0.05, 0.03])
_EPOCH_THURSDAY = 3  # 1970-01-01 was a Thursday; Monday = 0
_MAX_BREAKS = 4  # breaks per user at most


def events_per_user(n_events: int, users: int, sigma: float, cap: int, seed: int) -> np.ndarray:
    """Log-normal activity per user, at least 1 and at most ``cap`` each, summing to ``n_events`` exactly."""
    rng = np.random.default_rng([seed, STREAM_USERS])
    w = rng.lognormal(0.0, sigma, users)
    n = np.ones(users, dtype=np.int64)
    remaining = n_events - users
    free = np.ones(users, dtype=bool)
    while remaining > 0:
        share = w * free
        quota = remaining * share / share.sum()
        add = np.floor(quota).astype(np.int64)
        short = remaining - int(add.sum())
        if short:  # largest fractional parts first; stable order keeps it deterministic
            frac_order = np.argsort(-(quota - add), kind="stable")[:short]
            add[frac_order] += 1
        n += add
        over = n > cap
        remaining = int((n[over] - cap).sum())
        n[over] = cap
        free &= ~over
        free &= n < cap
    return n


def _segment_cumsum(values: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Inclusive cumulative sum restarting at every segment (segments given by their lengths)."""
    cs = np.cumsum(values)
    starts = np.cumsum(counts) - counts
    before = np.where(starts > 0, cs[np.maximum(starts - 1, 0)], 0)
    return cs - np.repeat(before, counts)


def _rank_in_group(group: np.ndarray) -> np.ndarray:
    """0-based index of each element within its run of equal (sorted) group values."""
    counts = np.bincount(group)
    nz = counts[counts > 0]
    return np.arange(len(group)) - np.repeat(np.cumsum(nz) - nz, nz)


def _truncated_lognormal(rng: np.random.Generator, median: float, sigma: float, cap: float, size: int) -> np.ndarray:
    """Log-normal draws conditioned on being below ``cap`` (inverse CDF, so no rejection loop)."""
    top = ndtr((math.log(cap) - math.log(median)) / sigma)
    u = rng.random(size) * top
    return np.exp(math.log(median) + sigma * ndtri(np.maximum(u, 1e-300)))


@dataclass
class Block:
    """Events of consecutive users, grouped by user and in time order within a user."""

    first_user: int
    user: np.ndarray  # global user index per event
    time: np.ndarray  # seconds since the epoch (int64)
    item: np.ndarray  # item index
    track: np.ndarray  # track index within the artist (lastfm)
    session: np.ndarray  # 0-based session number within the block (the generator's own sessions)
    churned: np.ndarray  # per user of the block: chosen to stop early


def _hour_profile(prof: FormatProfile, local_hour: np.ndarray, peak: np.ndarray) -> np.ndarray:
    bump = np.exp(prof.hour_kappa * (np.cos(2 * np.pi * (local_hour - peak) / 24.0) - 1.0))
    return prof.hour_floor + (1.0 - prof.hour_floor) * bump


def _session_lengths(
    rng: np.random.Generator, prof: FormatProfile, n_u: np.ndarray, span: float
) -> tuple[np.ndarray, np.ndarray]:
    """(owner, length) of every session, grouped by user: log-normal lengths, the last one cut so
    that each user has exactly ``n_u`` events.

    A user too heavy for the window at the usual length (each session costs threshold + extra gap
    + its duration) gets longer sessions, enough to fit in 60 % of it: heavy users binge."""
    spread = math.exp(prof.session_len_sigma**2 / 2)
    gap = prof.intra_median_s * math.exp(prof.intra_sigma**2 / 2)
    room = 0.6 * span - n_u * gap
    stretch = n_u * (prof.threshold_s + prof.min_gap_extra_s) / (prof.session_len_median * spread * np.maximum(room, 1.0))
    stretch = np.clip(np.where(room > 0, stretch, np.inf), 1.0, prof.session_len_max / prof.session_len_median)
    log_median = np.log(prof.session_len_median * stretch)
    mean_len = prof.session_len_median * stretch * spread
    need = n_u.astype(np.int64).copy()
    parts_owner, parts_len = [], []
    while (active := np.flatnonzero(need > 0)).size:
        k = np.ceil(need[active] / mean_len[active] * 1.2).astype(np.int64) + 2
        owner = np.repeat(active, k)
        z = rng.standard_normal(len(owner))
        lens = np.rint(np.exp(log_median[owner] + prof.session_len_sigma * z))
        lens = np.clip(lens, 1, prof.session_len_max).astype(np.int64)
        before = _segment_cumsum(lens, k) - lens
        cap = need[owner]
        keep = before < cap
        lens = np.where(keep, np.minimum(lens, cap - before), 0)
        parts_owner.append(owner[keep])
        parts_len.append(lens[keep])
        need -= np.bincount(owner, weights=lens, minlength=len(n_u)).astype(np.int64)
    s_owner = np.concatenate(parts_owner)
    order = np.argsort(s_owner, kind="stable")  # later rounds hold later sessions
    return s_owner[order], np.concatenate(parts_len)[order]


def _session_focus(
    rng: np.random.Generator, prof: FormatProfile, catalog: Catalog, slot_w: np.ndarray, s_owner: np.ndarray
) -> np.ndarray:
    """The cluster of every session: one of the user's taste slots, whose clusters drift."""
    n_sessions = len(s_owner)
    slot = (rng.random(n_sessions)[:, None] > np.cumsum(slot_w, axis=1)[s_owner]).sum(axis=1)
    slot = np.minimum(slot, prof.taste_slots - 1)
    slot_draw = np.minimum(
        np.searchsorted(catalog.cluster_weight_cdf, rng.random((n_sessions, prof.taste_slots)), side="right"),
        len(catalog.cluster_weight_cdf) - 1,
    )
    change = rng.random((n_sessions, prof.taste_slots)) < prof.drift_prob
    change[_rank_in_group(s_owner) == 0] = True  # every slot starts with a draw
    last_change = np.maximum.accumulate(np.where(change, np.arange(n_sessions)[:, None], 0), axis=0)
    return slot_draw[last_change[np.arange(n_sessions), slot], slot]


def _item_chain(
    rng: np.random.Generator, prof: FormatProfile, catalog: Catalog, focus: np.ndarray, ev_session: np.ndarray,
    ev_pos: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """(item, track) of every event: a chain within each session, one vectorised step per position."""
    n_ev = len(ev_pos)
    u = rng.random((n_ev, 3))
    items = np.empty(n_ev, dtype=np.int64)
    by_pos = np.argsort(ev_pos, kind="stable")
    pos_counts = np.bincount(ev_pos)
    first = by_pos[: pos_counts[0]]
    items[first] = catalog.sample_in_cluster(focus[ev_session[first]], u[first, 1])
    t_rep = prof.p_repeat
    t_succ = t_rep + prof.p_successor
    t_clu = t_succ + prof.p_cluster
    lo = int(pos_counts[0])
    for cnt in pos_counts[1:]:
        idx = by_pos[lo : lo + cnt]
        lo += int(cnt)
        prev = items[idx - 1]
        a, pick = u[idx, 0], u[idx, 1]
        nxt = prev.copy()  # a repeat unless one of the branches below
        m = (a >= t_rep) & (a < t_succ)
        nxt[m] = catalog.successors[prev[m], (pick[m] >= 0.7).astype(np.int64)]
        m = (a >= t_succ) & (a < t_clu)
        nxt[m] = catalog.sample_in_cluster(focus[ev_session[idx[m]]], pick[m])
        m = a >= t_clu
        nxt[m] = catalog.sample_global(pick[m])
        items[idx] = nxt
    tracks = np.minimum(np.searchsorted(catalog.track_cdf, u[:, 2], side="right"), TRACKS_PER_ARTIST - 1)
    return items, tracks


def _intra_gaps(rng: np.random.Generator, prof: FormatProfile, ev_pos: np.ndarray) -> np.ndarray:
    """Whole seconds from the previous event of the session (0 for the first), below 0.9 * threshold."""
    n_ev = len(ev_pos)
    cap = 0.9 * prof.threshold_s
    gaps = _truncated_lognormal(rng, prof.intra_median_s, prof.intra_sigma, cap, n_ev)
    kind = rng.random(n_ev)
    short = kind < prof.intra_short_prob
    gaps[short] = rng.uniform(1.0, prof.intra_short_max_s, int(short.sum()))
    pause = kind > 1.0 - prof.intra_pause_prob
    gaps[pause] = rng.uniform(0.3 * cap, cap, int(pause.sum()))
    gaps = np.maximum(np.rint(gaps), 1).astype(np.int64)
    gaps[ev_pos == 0] = 0
    return gaps


def _push_apart(
    start: np.ndarray, duration: np.ndarray, min_gap: np.ndarray, s_owner: np.ndarray, s_per_user: np.ndarray
) -> np.ndarray:
    """Starts moved forward where needed so that each session begins ``min_gap`` after the previous
    one ends: s'_k = max(s_k, s'_{k-1} + dur_{k-1} + mg_k) = c_k + cummax_{j<=k}(s_j - c_j) within a user,
    with c_k the running sum of dur_{j-1} + mg_j. One cumulative max over the block: each user is lifted
    by 2^42 s above the previous one so that no maximum leaks across users."""
    first = _rank_in_group(s_owner) == 0
    step = np.where(first, 0, np.roll(duration, 1) + min_gap)
    c = _segment_cumsum(step, s_per_user)
    lift = (s_owner.astype(np.int64) << 42) + (np.int64(1) << 41)
    return np.maximum.accumulate(start - c + lift) - lift + c


def generate_block(
    cfg: SynthConfig, catalog: Catalog, block_index: int, first_user: int, n_u: np.ndarray
) -> Block:
    """Generate the events of users ``first_user .. first_user + len(n_u) - 1`` from the block's stream."""
    prof = PROFILES[cfg.fmt]
    rng = np.random.default_rng([cfg.seed, STREAM_BLOCK, block_index])
    n_users = len(n_u)
    span = float(cfg.days) * 86400.0
    start_epoch = parse_start(cfg.start)

    # --- users: time zone, rhythm, taste weights
    tz = rng.choice(_TZ_OFFSETS, size=n_users, p=_TZ_WEIGHTS / _TZ_WEIGHTS.sum())
    peak = (prof.hour_peak + rng.normal(0.0, prof.hour_peak_sd, n_users)) % 24.0
    # weekday profile: a weekend / weekday ratio and a preference for each day, at most 1
    day_w = rng.lognormal(0.0, prof.weekday_sigma, (n_users, 7))
    day_w[:, 5:] *= rng.lognormal(0.0, prof.weekend_sigma, n_users)[:, None]
    day_w /= day_w.max(axis=1, keepdims=True)
    slot_w = rng.dirichlet(np.full(prof.taste_slots, prof.taste_alpha), size=n_users)

    # --- sessions, their clusters, their items and their inner times
    s_owner, s_len = _session_lengths(rng, prof, n_u, span)
    n_sessions = len(s_len)
    s_per_user = np.bincount(s_owner, minlength=n_users)
    focus = _session_focus(rng, prof, catalog, slot_w, s_owner)
    ev_session = np.repeat(np.arange(n_sessions), s_len)
    ev_pos = np.arange(len(ev_session)) - np.repeat(np.cumsum(s_len) - s_len, s_len)
    items, tracks = _item_chain(rng, prof, catalog, focus, ev_session, ev_pos)
    offset = _segment_cumsum(_intra_gaps(rng, prof, ev_pos), s_len)
    duration = offset[np.cumsum(s_len) - 1]

    # --- lifetime: a per-user visit interval; heavy users span the window, churners stop early
    tau = rng.lognormal(math.log(prof.interval_median_h * 3600.0), prof.interval_sigma, n_users)
    tau = np.maximum(tau, prof.interval_min_h * 3600.0)
    life = np.minimum(np.maximum(s_per_user - 1, 1) * tau, span)
    churn_pick = rng.random(n_users) < prof.churn_fraction
    leave_churn = life + rng.random(n_users) * np.maximum(0.9 * span - life, 0.0)
    leave = np.where(churn_pick & (life < 0.9 * span), leave_churn, span)
    join = leave - life
    churned = leave < span

    # Activity varies week to week (bursts and lulls) and stops entirely during breaks.
    n_weeks = int(math.ceil(span / 604800.0)) + 1
    week_level = rng.lognormal(0.0, prof.week_sigma, (n_users, n_weeks))
    week_level /= week_level.max(axis=1, keepdims=True)
    n_breaks = np.minimum(rng.poisson(prof.breaks_per_year * life / (365.0 * 86400.0)), _MAX_BREAKS)
    xm = prof.break_min_h * 3600.0
    break_len = np.minimum(
        xm * rng.random((n_users, _MAX_BREAKS)) ** (-1.0 / prof.break_alpha),
        np.minimum(prof.break_max_days * 86400.0, life / (2 * _MAX_BREAKS))[:, None],
    )
    break_len[np.arange(_MAX_BREAKS)[None, :] >= n_breaks[:, None]] = 0.0
    break_start = join[:, None] + rng.random((n_users, _MAX_BREAKS)) * life[:, None]

    # --- session starts: uniform candidates over the lifetime thinned by the user's profile
    # (hour of day, weekday, week level, breaks), then a random subset of s_u of the accepted.
    grid = np.linspace(0.0, 24.0, 96, endpoint=False)
    hour_mean = _hour_profile(prof, grid[None, :], peak[:, None]).mean(axis=1)
    # expected acceptance; breaks cover at most half the lifetime, hence the 0.5 (sizes the draws only)
    accept_mean = hour_mean * day_w.mean(axis=1) * week_level.mean(axis=1) * 0.5
    got = np.zeros(n_users, dtype=np.int64)
    parts_owner, parts_time, parts_key = [], [], []
    while (active := np.flatnonzero(got < s_per_user)).size:
        k = np.ceil((s_per_user - got)[active] / accept_mean[active] * 1.2).astype(np.int64) + 8
        owner = np.repeat(active, k)
        t = join[owner] + rng.random(len(owner)) * life[owner]
        local = (start_epoch + t) / 3600.0 + tz[owner]
        dow = (np.floor(local / 24.0).astype(np.int64) + _EPOCH_THURSDAY) % 7
        p_acc = _hour_profile(prof, local % 24.0, peak[owner])
        p_acc *= day_w[owner, dow]
        p_acc *= week_level[owner, np.minimum((t // 604800.0).astype(np.int64), n_weeks - 1)]
        in_break = (t[:, None] >= break_start[owner]) & (t[:, None] < break_start[owner] + break_len[owner])
        p_acc[in_break.any(axis=1)] = 0.0
        acc = rng.random(len(owner)) < p_acc
        parts_owner.append(owner[acc])
        parts_time.append(t[acc])
        parts_key.append(rng.random(int(acc.sum())))
        got += np.bincount(owner[acc], minlength=n_users)
    c_owner = np.concatenate(parts_owner)
    c_time = np.concatenate(parts_time)
    pick = np.lexsort((np.concatenate(parts_key), c_owner))  # random order within each user
    pick = pick[_rank_in_group(c_owner[pick]) < s_per_user[c_owner[pick]]]
    chosen = np.lexsort((c_time[pick], c_owner[pick]))
    start = np.rint(c_time[pick][chosen]).astype(np.int64)

    min_gap = int(prof.threshold_s) + 1 + np.rint(rng.exponential(prof.min_gap_extra_s, n_sessions)).astype(np.int64)
    start = _push_apart(start, duration, min_gap, s_owner, s_per_user)

    return Block(
        first_user=first_user,
        user=first_user + np.repeat(s_owner, s_len),
        time=start_epoch + np.repeat(start, s_len) + offset,
        item=items,
        track=tracks,
        session=ev_session,
        churned=churned,
    )


def iter_blocks(cfg: SynthConfig, catalog: Catalog | None = None) -> Iterator[tuple[int, int, Block]]:
    """Yield ``(block_index, events_before, Block)`` for a resolved config, in user order."""
    cfg = cfg.resolved()
    prof = PROFILES[cfg.fmt]
    catalog = catalog or build_catalog(cfg.fmt, cfg.items, cfg.seed)
    n_u = events_per_user(cfg.n_events, cfg.users, prof.user_events_sigma, cfg.max_user_events, cfg.seed)
    bounds = block_bounds(n_u, cfg.block_events)
    done = 0
    for b in range(len(bounds) - 1):
        lo, hi = int(bounds[b]), int(bounds[b + 1])
        yield b, done, generate_block(cfg, catalog, b, lo, n_u[lo:hi])
        done += int(n_u[lo:hi].sum())


def block_bounds(n_u: np.ndarray, block_events: int) -> np.ndarray:
    """Split consecutive users into blocks of at most ``block_events`` events (one heavy user alone)."""
    cum = np.cumsum(n_u)
    bounds = [0]
    base = 0
    while bounds[-1] < len(n_u):
        # last user whose cumulative count stays within the block (at least one user)
        j = int(np.searchsorted(cum, base + block_events, side="right"))
        j = max(j, bounds[-1] + 1)
        bounds.append(j)
        base = int(cum[j - 1])
    return np.asarray(bounds)
