"""The item catalogue: popularity, clusters, successors and each item's text."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from synth.config import STREAM_CATALOG
from synth.profiles import PROFILES
from synth.vocab import ADJ, NOUN, artist_names, subreddit_names, uuids


@dataclass
class Catalog:
    """Items (index = popularity rank, 0 most popular), their clusters, successors and text."""

    weights: np.ndarray  # popularity weight per item
    global_cdf: np.ndarray  # cumulative share, for sampling by popularity
    cluster: np.ndarray  # cluster of each item
    cluster_items: np.ndarray  # items ordered by cluster
    cluster_cdf: np.ndarray  # c + within-cluster cumulative share, in cluster_items order
    cluster_bounds: np.ndarray  # segment c of cluster_items is [bounds[c], bounds[c+1])
    cluster_weight_cdf: np.ndarray  # for drawing a cluster by popularity
    successors: np.ndarray  # (items, 2): next and next-but-one item in the cluster's cyclic order
    track_cdf: np.ndarray  # lastfm: popularity of an artist's tracks
    tails: pa.Array  # binary text of the line after the timestamp, per item (reddit) or item*track (lastfm)
    keys: list[str]  # item key as the sessionize job sees it (artist MBID or name, subreddit)

    @property
    def n_items(self) -> int:
        return len(self.weights)

    def sample_global(self, u: np.ndarray) -> np.ndarray:
        return np.minimum(np.searchsorted(self.global_cdf, u, side="right"), self.n_items - 1)

    def sample_in_cluster(self, clusters: np.ndarray, u: np.ndarray) -> np.ndarray:
        pos = np.searchsorted(self.cluster_cdf, clusters + u, side="right")
        pos = np.clip(pos, self.cluster_bounds[clusters], self.cluster_bounds[clusters + 1] - 1)
        return self.cluster_items[pos]


TRACKS_PER_ARTIST = 8


def build_catalog(fmt: str, n_items: int, seed: int) -> Catalog:
    """The item catalogue of a generated file (deterministic for the format, size and seed)."""
    prof = PROFILES[fmt]
    rng = np.random.default_rng([seed, STREAM_CATALOG, n_items])
    ranks = np.arange(n_items, dtype=np.float64)
    weights = (ranks + prof.zipf_offset) ** -prof.zipf_exponent
    global_cdf = np.cumsum(weights) / weights.sum()
    global_cdf[-1] = 1.0

    n_clusters = max(1, round(n_items / prof.cluster_size))
    perm = rng.permutation(n_items)
    cluster = np.empty(n_items, dtype=np.int64)
    cluster[perm] = np.arange(n_items) % n_clusters  # random membership, no empty cluster
    order = perm[np.argsort(cluster[perm], kind="stable")]  # by cluster, random order inside
    counts = np.bincount(cluster, minlength=n_clusters)
    bounds = np.concatenate([[0], np.cumsum(counts)])
    w_sorted = weights[order]
    seg_total = np.add.reduceat(w_sorted, bounds[:-1])
    seg_cum = np.cumsum(w_sorted) - np.repeat(np.cumsum(seg_total) - seg_total, counts)
    within = seg_cum / np.repeat(seg_total, counts)
    within[bounds[1:] - 1] = 1.0
    cluster_cdf = np.repeat(np.arange(n_clusters), counts) + within
    cluster_weight_cdf = np.cumsum(seg_total) / seg_total.sum()
    cluster_weight_cdf[-1] = 1.0

    pos_in_seg = np.arange(n_items) - np.repeat(bounds[:-1], counts)
    seg_len = np.repeat(counts, counts)
    seg_start = np.repeat(bounds[:-1], counts)
    successors = np.empty((n_items, 2), dtype=np.int64)
    for k in (1, 2):
        successors[order, k - 1] = order[seg_start + (pos_in_seg + k) % seg_len]

    track_w = 1.0 / np.arange(1, TRACKS_PER_ARTIST + 1)
    track_cdf = np.cumsum(track_w) / track_w.sum()
    track_cdf[-1] = 1.0

    if fmt == "lastfm":
        names = artist_names(rng, n_items)
        mbids = uuids(rng, n_items)
        no_mbid = rng.random(n_items) < 0.08  # real file: ~7.6 % of rows lack the artist MBID
        track_mbids = uuids(rng, n_items * TRACKS_PER_ARTIST)
        no_track_mbid = rng.random(n_items * TRACKS_PER_ARTIST) < 0.22
        track_words = rng.integers(0, 1 << 30, size=(n_items * TRACKS_PER_ARTIST, 3))
        tails = []
        for i in range(n_items):
            amb = "" if no_mbid[i] else mbids[i]
            for t in range(TRACKS_PER_ARTIST):
                j = i * TRACKS_PER_ARTIST + t
                a, b, c = (int(x) for x in track_words[j])
                title = f"{ADJ[a % len(ADJ)]} {NOUN[b % len(NOUN)]}"
                if c % 5 == 0:
                    title += f" (Live {2000 + c % 10})"
                elif c % 7 == 0:
                    title = f"The {title}"
                tmb = "" if (no_mbid[i] or no_track_mbid[j]) else track_mbids[j]
                tails.append(f"{amb}\t{names[i]}\t{tmb}\t{title}\n".encode())
        keys = [names[i] if no_mbid[i] else mbids[i] for i in range(n_items)]
    else:
        names = subreddit_names(rng, n_items)
        tails = [n.encode() for n in names]
        keys = names
    return Catalog(
        weights=weights,
        global_cdf=global_cdf,
        cluster=cluster,
        cluster_items=order,
        cluster_cdf=cluster_cdf,
        cluster_bounds=bounds,
        cluster_weight_cdf=cluster_weight_cdf,
        successors=successors,
        track_cdf=track_cdf,
        tails=pa.array(tails, type=pa.binary()),
        keys=keys,
    )
