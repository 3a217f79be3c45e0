"""Shape of each format's generated data: :class:`FormatProfile` and the calibrated :data:`PROFILES`
(docs/synthetic_data.md)."""

from __future__ import annotations

from dataclasses import dataclass, field

from contract import constants as C


@dataclass(frozen=True)
class FormatProfile:
    """Shape of one format's data; the values are calibrated in docs/synthetic_data.md."""

    threshold_s: float = field(metadata={"help": "session gap threshold of docs/design.md §3.1 (seconds)"})
    events_per_user: float = field(metadata={"help": "default number of users = events / this"})
    items_per_sqrt_event: float = field(metadata={"help": "default number of items = this * sqrt(events)"})
    max_default_items: int = field(metadata={"help": "cap of the default number of items"})
    days: float = field(metadata={"help": "default length of the time window (days)"})
    user_events_sigma: float = field(metadata={"help": "sigma of the log-normal events per user"})
    session_len_median: float = field(metadata={"help": "median of the log-normal session length"})
    session_len_sigma: float = field(metadata={"help": "sigma of the log-normal session length"})
    session_len_max: int = field(metadata={"help": "longest generated session (events)"})
    p_repeat: float = field(metadata={"help": "P(next item = current item)"})
    p_successor: float = field(metadata={"help": "P(next item = a successor of the current item)"})
    p_cluster: float = field(metadata={"help": "P(next item drawn from the session's cluster); rest: global"})
    cluster_size: float = field(metadata={"help": "mean items per cluster"})
    zipf_exponent: float = field(metadata={"help": "s of the item popularity (rank + q)^-s"})
    zipf_offset: float = field(metadata={"help": "q of the item popularity (rank + q)^-s"})
    taste_slots: int = field(metadata={"help": "clusters a user's taste holds at a time"})
    taste_alpha: float = field(metadata={"help": "Dirichlet concentration of the slot weights"})
    drift_prob: float = field(metadata={"help": "P(a taste slot moves to a new cluster) per session"})
    intra_median_s: float = field(metadata={"help": "median within-session gap (log-normal part)"})
    intra_sigma: float = field(metadata={"help": "sigma of the log-normal within-session gap"})
    intra_short_prob: float = field(metadata={"help": "P(short within-session gap: skip / quick reply)"})
    intra_short_max_s: float = field(metadata={"help": "longest short gap (uniform from 1 s)"})
    intra_pause_prob: float = field(metadata={"help": "P(pause up to 0.9 * threshold within a session)"})
    hour_peak: float = field(metadata={"help": "mean local hour of the users' activity peak"})
    hour_peak_sd: float = field(metadata={"help": "spread of the peak hour between users (hours)"})
    hour_kappa: float = field(metadata={"help": "sharpness of the hour-of-day profile (von Mises kappa)"})
    hour_floor: float = field(metadata={"help": "relative activity at the quietest hour"})
    weekend_sigma: float = field(metadata={"help": "sigma of the log-normal weekend / weekday activity ratio"})
    weekday_sigma: float = field(metadata={"help": "sigma of the log-normal activity of each day of the week"})
    interval_median_h: float = field(metadata={"help": "median over users of the mean time between sessions (hours)"})
    interval_sigma: float = field(metadata={"help": "sigma of the log-normal per-user mean time between sessions"})
    interval_min_h: float = field(metadata={"help": "shortest per-user mean time between sessions (hours)"})
    week_sigma: float = field(metadata={"help": "sigma of the log-normal weekly activity level (bursts and lulls)"})
    breaks_per_year: float = field(metadata={"help": "mean number of breaks (no activity at all) per year of a user's life"})
    break_min_h: float = field(metadata={"help": "shortest break (Pareto scale, hours)"})
    break_alpha: float = field(metadata={"help": "Pareto tail index of breaks"})
    break_max_days: float = field(metadata={"help": "longest break (days)"})
    churn_fraction: float = field(metadata={"help": "share of users who stop coming back before the end"})
    min_gap_extra_s: float = field(metadata={"help": "mean extra gap above the threshold when a session is pushed"})


PROFILES: dict[str, FormatProfile] = {
    "lastfm": FormatProfile(
        threshold_s=C.DEFAULT_GAP_SECONDS[C.LASTFM],
        events_per_user=400.0,
        items_per_sqrt_event=3.0,
        max_default_items=100_000,
        days=365.0,
        user_events_sigma=1.2,
        session_len_median=12.0,
        session_len_sigma=0.9,
        session_len_max=400,
        p_repeat=0.7,
        p_successor=0.12,
        p_cluster=0.12,
        cluster_size=15.0,
        zipf_exponent=1.0,
        zipf_offset=2.7,
        taste_slots=4,
        taste_alpha=0.8,
        drift_prob=0.01,
        intra_median_s=270.0,
        intra_sigma=0.4,
        intra_short_prob=0.08,
        intra_short_max_s=60.0,
        intra_pause_prob=0.05,
        hour_peak=20.0,
        hour_peak_sd=2.5,
        hour_kappa=1.8,
        hour_floor=0.04,
        weekend_sigma=0.4,
        weekday_sigma=0.6,
        interval_median_h=22.0,
        interval_sigma=1.0,
        interval_min_h=12.0,
        week_sigma=0.8,
        breaks_per_year=3.0,
        break_min_h=48.0,
        break_alpha=1.3,
        break_max_days=120.0,
        churn_fraction=0.15,
        min_gap_extra_s=1800.0,
    ),
    "reddit": FormatProfile(
        threshold_s=C.DEFAULT_GAP_SECONDS[C.REDDIT],
        events_per_user=60.0,
        items_per_sqrt_event=2.0,
        max_default_items=50_000,
        days=30.0,
        user_events_sigma=0.9,
        session_len_median=1.15,
        session_len_sigma=0.85,
        session_len_max=200,
        p_repeat=0.4,
        p_successor=0.15,
        p_cluster=0.3,
        cluster_size=6.0,
        zipf_exponent=1.15,
        zipf_offset=1.0,
        taste_slots=3,
        taste_alpha=0.6,
        drift_prob=0.02,
        intra_median_s=550.0,
        intra_sigma=1.0,
        intra_short_prob=0.15,
        intra_short_max_s=60.0,
        intra_pause_prob=0.0,
        hour_peak=19.0,
        hour_peak_sd=3.0,
        hour_kappa=1.2,
        hour_floor=0.06,
        weekend_sigma=0.3,
        weekday_sigma=0.4,
        interval_median_h=20.0,
        interval_sigma=0.8,
        interval_min_h=4.0,
        week_sigma=0.5,
        breaks_per_year=6.0,
        break_min_h=12.0,
        break_alpha=1.5,
        break_max_days=20.0,
        churn_fraction=0.25,
        min_gap_extra_s=900.0,
    ),
}
