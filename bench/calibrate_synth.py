"""Compare the synthetic raw logs of ``synth`` with the real excerpts in ../shared/data.

For each real excerpt and for synthetic data of the same size (events, users, items, time span) it
computes, with pandas: session length (mean, median, p90) with the documented gap thresholds (LastFM
3600 s, Reddit 1800 s), sessions per user, between-session gap quantiles, within-session gap
quantiles, item concentration (share of events on the top 1 % / 10 % of items, Gini), the share of
consecutive repeats, and two daily-rhythm figures. Writes ``bench/results/synth_calibration.json``
(atomically) and prints a Markdown table (the one in docs/synthetic_data.md).

    python bench/calibrate_synth.py [--shared-data ../shared/data] [--out bench/results/synth_calibration.json]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from contract.constants import DEFAULT_GAP_SECONDS, TEXT_LOG_FORMATS
from synth import generate

REPO = Path(__file__).resolve().parents[1]

THRESHOLDS = {f: int(DEFAULT_GAP_SECONDS[f]) for f in TEXT_LOG_FORMATS}  # docs/design.md §3.1


def session_stats(df: pd.DataFrame, threshold_s: float) -> dict[str, float]:
    """Statistics of an interaction table with columns user, item, t (seconds), any order."""
    df = df.sort_values(["user", "t"], kind="stable").reset_index(drop=True)
    dt = df.groupby("user", sort=False)["t"].diff()
    new = dt.isna() | (dt > threshold_s)
    sid = new.cumsum()
    lengths = sid.value_counts(sort=False)
    starts = df.loc[new, ["user", "t"]]
    gaps_h = dt[new & dt.notna()] / 3600.0
    intra = dt[~new]
    per_user = starts.groupby("user").size()
    events_per_user = df.groupby("user").size()
    # consecutive repeats (A A -> one), the collapse of docs/design.md §3.1 rule 2
    repeat = (df["user"] == df["user"].shift()) & (df["item"] == df["item"].shift()) & ~new
    collapsed = (~repeat).groupby(sid).sum()

    counts = np.sort(df["item"].value_counts().to_numpy())[::-1].astype(np.float64)
    n_items, total = len(counts), counts.sum()
    top = lambda share: float(counts[: max(1, int(np.ceil(n_items * share)))].sum() / total)  # noqa: E731
    asc = counts[::-1]
    gini = float(2.0 * np.sum(np.arange(1, n_items + 1) * asc) / (n_items * total) - (n_items + 1) / n_items)

    # daily rhythm: gaps near one day vs half a day / a day and a half, and per-user hour concentration
    in_band = lambda lo, hi: float(((gaps_h >= lo) & (gaps_h < hi)).sum())  # noqa: E731
    off_day = (in_band(8, 16) + in_band(32, 40)) / 2.0
    day_peak = in_band(20, 28) / off_day if off_day else float("nan")
    angle = 2 * np.pi * (starts["t"] % 86400) / 86400.0
    circ = pd.DataFrame({"user": starts["user"], "c": np.cos(angle), "s": np.sin(angle)})
    g = circ.groupby("user").agg(c=("c", "mean"), s=("s", "mean"), n=("c", "size"))
    g = g[g["n"] >= 10]
    hour_r = float(np.hypot(g["c"], g["s"]).mean()) if len(g) else float("nan")

    # weekly rhythm: per-user chi-square / 6 of session starts over the 7 weekdays (~1 without one);
    # rotation-invariant, so it also works on JODIE's relative times
    table = pd.crosstab(starts["user"], (starts["t"] // 86400) % 7)
    table = table[table.sum(axis=1) >= 20]
    expected = table.sum(axis=1).to_numpy()[:, None] / 7
    weekday = float(((table.to_numpy() - expected) ** 2 / expected).sum(axis=1).mean() / 6) if len(table) else float("nan")

    span = float(df["t"].max() - df["t"].min())
    last = df.groupby("user")["t"].max()
    q = lambda s, p: float(s.quantile(p)) if len(s) else float("nan")  # noqa: E731
    return {
        "events": len(df),
        "users": int(df["user"].nunique()),
        "items": n_items,
        "span_days": span / 86400.0,
        "events_per_user_median": float(events_per_user.median()),
        "events_per_user_max": int(events_per_user.max()),
        "sessions": len(lengths),
        "session_length_mean": float(lengths.mean()),
        "session_length_median": float(lengths.median()),
        "session_length_p90": q(lengths, 0.9),
        "collapsed_length_mean": float(collapsed.mean()),
        "sessions_per_user_mean": float(per_user.mean()),
        "sessions_per_user_median": float(per_user.median()),
        "sessions_per_user_p90": q(per_user, 0.9),
        "gap_hours_p10": q(gaps_h, 0.1),
        "gap_hours_p50": q(gaps_h, 0.5),
        "gap_hours_p90": q(gaps_h, 0.9),
        "gap_hours_p99": q(gaps_h, 0.99),
        "intra_seconds_p10": q(intra, 0.1),
        "intra_seconds_p50": q(intra, 0.5),
        "intra_seconds_p90": q(intra, 0.9),
        "top1pct_item_share": top(0.01),
        "top10pct_item_share": top(0.10),
        "item_gini": gini,
        "consecutive_repeat_share": float(repeat.mean()),
        "day_peak_ratio": day_peak,
        "hour_concentration": hour_r,
        "weekday_dispersion": weekday,
        "users_quiet_last_20pct": float((last < df["t"].min() + 0.8 * span).mean()),
        **spec_rules_stats(df[["user", "item", "t"]], threshold_s),
    }


def spec_rules_stats(df: pd.DataFrame, threshold_s: float, k: int = 20) -> dict[str, float]:
    """What the rules of docs/design.md §3 keep (collapse repeats, drop length 1 and > 40, chunks of 20,
    users with >= 3 sessions, 80/20 split per user) and next-item Recall@k of popularity vs Markov-1 on
    the test part: a quick check that the data carry a sequential signal."""
    df = df.sort_values(["user", "t"], kind="stable").reset_index(drop=True)
    dt = df.groupby("user", sort=False)["t"].diff()
    new = dt.isna() | (dt > threshold_s)
    df["sid"] = new.cumsum()
    df = df[~((df["item"] == df["item"].shift()) & (df["sid"] == df["sid"].shift()))].copy()
    length = df.groupby("sid")["item"].transform("size")
    df = df[(length >= 2) & (length <= 40)].copy()
    pos = df.groupby("sid").cumcount()
    df["chunk"] = df["sid"].astype(np.int64) * 4 + pos // 20  # at most 2 chunks of a session of <= 40
    clen = df.groupby("chunk")["item"].transform("size")
    df = df[clen >= 2].copy()
    n_sess = df.groupby("user")["chunk"].transform("nunique")
    df = df[n_sess >= 3].copy()
    first_of_chunk = df["chunk"] != df["chunk"].shift()
    order = first_of_chunk.astype(np.int64).groupby(df["user"]).cumsum() - 1  # chunk index within the user
    n_user = df.groupby("user")["chunk"].transform("nunique")
    df["test"] = order >= np.floor(0.8 * n_user)
    df["prev"] = df["item"].shift()
    pairs = df[df["chunk"] == df["chunk"].shift()]
    train, test = pairs[~pairs["test"]], pairs[pairs["test"]]
    popular = set(df.loc[~df["test"], "item"].value_counts().index[:k])
    pop_recall = float(test["item"].isin(popular).mean()) if len(test) else float("nan")
    counts = train.groupby(["prev", "item"]).size().rename("n").reset_index()
    counts = counts.sort_values(["prev", "n", "item"], ascending=[True, False, True])
    top = counts.groupby("prev").head(k)[["prev", "item"]].assign(hit=True)
    hits = test.merge(top, on=["prev", "item"], how="left")["hit"].notna()
    sessions_kept = df["chunk"].nunique()
    return {
        "spec_users": int(df["user"].nunique()),
        "spec_sessions": int(sessions_kept),
        "spec_events": len(df),
        "spec_avg_session_length": len(df) / sessions_kept if sessions_kept else float("nan"),
        "spec_sessions_per_user": sessions_kept / df["user"].nunique() if len(df) else float("nan"),
        "recall20_popularity": pop_recall,
        "recall20_markov1": float(hits.mean()) if len(hits) else float("nan"),
    }


def read_jodie(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, sep="\t", header=None, names=["user", "item", "t"])


def read_lastfm(path: Path) -> pd.DataFrame:
    """Raw Last.fm-1K TSV; item = artist MBID, or the artist name when the MBID is empty
    (docs/design.md §2)."""
    raw = pd.read_csv(
        path,
        sep="\t",
        header=None,
        names=["user", "ts", "artist_mbid", "artist", "track_mbid", "track"],
        quoting=csv.QUOTE_NONE,
        dtype=str,
        keep_default_na=False,
        on_bad_lines="skip",
        encoding_errors="replace",
    )
    ts = pd.to_datetime(raw["ts"], format="%Y-%m-%dT%H:%M:%SZ", errors="coerce", utc=True)
    item = raw["artist_mbid"].where(raw["artist_mbid"] != "", raw["artist"])
    ok = ts.notna() & (raw["user"] != "") & (item != "")
    return pd.DataFrame({"user": raw["user"][ok], "item": item[ok], "t": ts[ok].astype("int64") // 10**9})


def read_reddit(path: Path) -> pd.DataFrame:
    raw = pd.read_csv(path, dtype={"username": str, "subreddit": str}, on_bad_lines="skip")
    t = pd.to_numeric(raw["utc"], errors="coerce")
    ok = t.notna() & np.isfinite(t) & (t >= 0) & raw["username"].notna() & raw["subreddit"].notna()
    return pd.DataFrame({"user": raw["username"][ok], "item": raw["subreddit"][ok], "t": t[ok].astype("int64")})


ROWS = [
    ("events", "events", "{:,.0f}"),
    ("users", "users", "{:,.0f}"),
    ("items", "items", "{:,.0f}"),
    ("span (days)", "span_days", "{:.1f}"),
    ("session length mean / median / p90", ("session_length_mean", "session_length_median", "session_length_p90"), "{:.1f}"),
    ("session length after collapsing repeats, mean", "collapsed_length_mean", "{:.1f}"),
    ("sessions per user mean / median / p90", ("sessions_per_user_mean", "sessions_per_user_median", "sessions_per_user_p90"), "{:.1f}"),
    ("between-session gap p10 / p50 / p90 / p99 (h)", ("gap_hours_p10", "gap_hours_p50", "gap_hours_p90", "gap_hours_p99"), "{:.1f}"),
    ("within-session gap p10 / p50 / p90 (s)", ("intra_seconds_p10", "intra_seconds_p50", "intra_seconds_p90"), "{:.0f}"),
    ("share of events on top 1 % / 10 % items", ("top1pct_item_share", "top10pct_item_share"), "{:.2f}"),
    ("item Gini", "item_gini", "{:.2f}"),
    ("consecutive repeats (share of events)", "consecutive_repeat_share", "{:.2f}"),
    ("daily peak ratio of gaps (20-28 h vs 8-16 h, 32-40 h)", "day_peak_ratio", "{:.2f}"),
    ("hour-of-day concentration of session starts (per user)", "hour_concentration", "{:.2f}"),
    ("weekday dispersion of session starts (per user, ~1 without weekly rhythm)", "weekday_dispersion", "{:.2f}"),
    ("users with no event in the last 20 % of the span", "users_quiet_last_20pct", "{:.2f}"),
    ("after the sessionization rules: users / sessions", ("spec_users", "spec_sessions"), "{:,.0f}"),
    ("after the sessionization rules: session length / sessions per user", ("spec_avg_session_length", "spec_sessions_per_user"), "{:.1f}"),
    ("next-item Recall@20 on the 20 % test split: popularity / Markov-1", ("recall20_popularity", "recall20_markov1"), "{:.3f}"),
]


def markdown(results: dict[str, dict]) -> str:
    names = list(results)
    lines = ["| statistic | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for label, keys, fmt in ROWS:
        keys = keys if isinstance(keys, tuple) else (keys,)
        cells = [" / ".join(fmt.format(results[n]["stats"][k]) for k in keys) for n in names]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--shared-data", type=Path, default=REPO.parent / "shared" / "data", help="folder of the real excerpts")
    p.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "synth_calibration.json", help="JSON to write")
    p.add_argument("--seed", type=int, default=0, help="seed of the synthetic files")
    args = p.parse_args(argv)

    data = args.shared_data
    real = {
        "lastfm-jodie (real)": ("lastfm", read_jodie(data / "lastfm-1k-jodie-subset" / "lastfm_jodie_first10pct.tsv.gz")),
        "lastfm user_000001 (real)": ("lastfm", read_lastfm(data / "lastfm-1k" / "user_000001_full_history.tsv.gz")),
        "reddit-jodie (real)": ("reddit", read_jodie(data / "reddit-jodie-subset" / "reddit_jodie_first20pct.tsv.gz")),
    }
    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, (fmt, df) in real.items():
            stats = session_stats(df, THRESHOLDS[fmt])
            results[name] = {"format": fmt, "source": "real", "stats": stats}
            # synthetic twin: same events, users, items and span; everything else the defaults
            params = {
                "users": stats["users"],
                "items": stats["items"],
                "days": max(1.0, round(stats["span_days"], 1)),
                "seed": args.seed,
            }
            path = Path(tmp) / f"{fmt}-{stats['users']}.{'tsv' if fmt == 'lastfm' else 'csv'}"
            t0 = time.perf_counter()
            summary = generate(fmt, stats["events"], path, **params)
            elapsed = time.perf_counter() - t0
            syn = read_lastfm(path) if fmt == "lastfm" else read_reddit(path)
            twin = name.replace("(real)", "(synthetic)")
            results[twin] = {
                "format": fmt,
                "source": "synthetic",
                "params": {"n_events": stats["events"], **params},
                "generate_seconds": round(elapsed, 2),
                "summary": summary,
                "stats": session_stats(syn, THRESHOLDS[fmt]),
            }
    order = [n for pair in zip(list(real), [n.replace("(real)", "(synthetic)") for n in real], strict=True) for n in pair]
    results = {n: results[n] for n in order}
    payload = {"thresholds_s": THRESHOLDS, "datasets": results, "table_markdown": markdown(results)}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    staging = args.out.with_name(f".{args.out.name}.tmp-{os.getpid()}")
    staging.write_text(json.dumps(payload, indent=2, ensure_ascii=False, default=float) + "\n")
    os.replace(staging, args.out)
    print(payload["table_markdown"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
