"""Seeded, streaming generator of raw interaction logs in the ``lastfm`` and ``reddit`` formats
(docs/design.md §2).

Usage::

    python -m synth --format lastfm --events 1000000 --out var/raw/lastfm.tsv.gz
    python -m synth --format reddit --events 200000 --out var/raw/reddit.csv --malformed-fraction 0.01

Users are generated in blocks of about ``block_events`` events; each block draws from its own random
stream (seeded by the seed and the block number), so memory stays bounded whatever the number of
events and the bytes depend only on the parameters and the seed. Malformed lines come from a separate
stream: the valid events are the same with or without them.

The model behind the data (docs/synthetic_data.md shows the calibration against the real excerpts):

- items: Zipf-Mandelbrot popularity; items grouped in clusters (scenes of artists, families of
  subreddits); each item has two successors in its cluster (album / related-artist runs);
- users: log-normal activity; a taste of a few cluster slots that drift from session to session;
  a time zone, an evening peak hour and a weekday profile; a visit interval and a lifetime that
  follows from it (light users come and go, heavy ones span the window); some churn (stop coming back
  well before the end of the window);
- sessions: log-normal lengths; each next item repeats the current one, follows a successor, or is
  drawn from the session's cluster or from global popularity (the next-item signal);
- time: intra-session gaps below the sessionization threshold (track lengths for lastfm, comment
  spacing for reddit); session starts from uniform candidates over the user's lifetime thinned by the
  hour-of-day and weekday profile (daily and weekly rhythm), a weekly activity level (bursts) and
  Pareto breaks (heavy tail), then pushed forward so that every between-session gap exceeds the
  threshold: the generator's sessions are exactly the sessions the sessionize job finds.
"""

from synth.blocks import Block, block_bounds, events_per_user, generate_block, iter_blocks
from synth.catalog import TRACKS_PER_ARTIST, Catalog, build_catalog
from synth.config import FORMATS, SynthConfig
from synth.corruption import MALFORMED_KINDS, malformed_count
from synth.profiles import PROFILES, FormatProfile
from synth.writers import format_block, generate, write

__all__ = [
    "FORMATS", "MALFORMED_KINDS", "PROFILES", "TRACKS_PER_ARTIST", "Block", "Catalog", "FormatProfile",
    "SynthConfig", "block_bounds", "build_catalog", "events_per_user", "format_block", "generate",
    "generate_block", "iter_blocks", "malformed_count", "write",
]
