"""Word lists and the names built from them: artists, tracks, subreddits, MBIDs and user keys."""

from __future__ import annotations

import numpy as np

ADJ = ["Silent", "Electric", "Golden", "Broken", "Velvet", "Crimson", "Hollow", "Wild", "Neon", "Frozen", "Lunar", "Paper", "Iron", "Glass", "Midnight", "Burning", "Quiet", "Distant", "Strange", "Blue", "Black", "White", "Red", "Green", "Lost", "Young", "Old", "Sweet", "Bitter", "Static", "Solar", "Northern", "Southern", "Secret", "Little", "Sonic", "Cosmic", "Empty", "Hidden", "Bright", "Dark", "Fading", "Rising", "Falling", "Gentle"]
NOUN = ["Lantern", "Wolf", "River", "Engine", "Garden", "Mirror", "Signal", "Harbor", "Machine", "Forest", "Ocean", "Tiger", "Comet", "Shadow", "Crown", "Ghost", "Echo", "Anchor", "Arrow", "Bridge", "Canyon", "Desert", "Falcon", "Island", "Jungle", "Meadow", "Needle", "Orbit", "Pilot", "Rocket", "Saint", "Temple", "Thunder", "Valley", "Voyage", "Window", "Winter", "Summer", "Island", "Planet", "Circus", "Parade", "Cinema", "Radio"]
FIRST = ["Anna", "Ben", "Clara", "David", "Elena", "Felix", "Grace", "Hugo", "Iris", "Jonas", "Kira", "Leo", "Mia", "Nora", "Oscar", "Paula", "Quinn", "Rosa", "Sam", "Tara", "Uma", "Victor", "Wanda", "Yuki", "Zoe", "Lars", "Ines", "Marco", "Sofia"]
LAST = ["Adler", "Brooks", "Carter", "Dalton", "Ellis", "Fischer", "Garcia", "Hansen", "Ito", "Jensen", "Klein", "Larsen", "Moreau", "Novak", "Olsen", "Petrov", "Quist", "Rossi", "Sato", "Tanaka", "Unger", "Vance", "Weber", "Young", "Zimmer", "Lindqvist", "Kowalski"]
# Non-ASCII names keep the UTF-8 path of the readers honest (the real file has e.g. 坂本龍一).
INTL = ["坂本龍一", "久石譲", "椎名林檎", "Sigur", "Rós", "Björk", "Mötley", "Crüe", "Émilie", "Simon", "Café", "Tacvba", "Маша", "Ночь", "Кино", "Żywiołak", "Håkan", "Hellström", "Amaral", "Mão", "Morta", "Ñu", "Zoë"]
GROUP = ["Trio", "Quartet", "Orchestra", "Collective", "Ensemble", "Project", "Society", "Club", "Band", "Experience"]
SUB_WORDS = ["ask", "science", "music", "games", "movies", "pics", "funny", "news", "world", "tech", "art", "books", "food", "travel", "history", "space", "photo", "battles", "cats", "dogs", "memes", "code", "linux", "python", "data", "crypto", "fitness", "diy", "garden", "bikes", "cars", "retro", "jazz", "metal", "indie", "anime", "chess", "soccer", "nba", "nfl", "hockey", "politics", "finance", "jobs", "writing", "design"]


def artist_names(rng: np.random.Generator, n: int) -> list[str]:
    """Unique artist names, except about 1 % that deliberately repeat an earlier name."""
    names: list[str] = []
    seen: set[str] = set()
    draws = rng.integers(0, 1 << 30, size=(n, 4))
    for i in range(n):
        a, b, c, d = (int(x) for x in draws[i])
        if i > 10 and d % 100 == 0:
            names.append(names[a % len(names)])  # two artists sharing a name, with different MBIDs
            continue
        for attempt in range(30):
            kind = (d + attempt) % 24
            x, y, z = (a + attempt) % 1000, b % 1000, c % 1000
            if kind < 5:
                name = f"The {ADJ[x % len(ADJ)]} {NOUN[y % len(NOUN)]}s"
            elif kind < 9:
                name = f"{FIRST[x % len(FIRST)]} {LAST[y % len(LAST)]}"
            elif kind < 13:
                name = f"{ADJ[x % len(ADJ)]} {NOUN[y % len(NOUN)]}"
            elif kind < 16:
                name = f"{NOUN[x % len(NOUN)]} & the {NOUN[z % len(NOUN)]}s"
            elif kind < 18:
                name = f"{INTL[x % len(INTL)]} {NOUN[z % len(NOUN)]}"
            elif kind < 21:
                name = f"{ADJ[x % len(ADJ)]} {NOUN[y % len(NOUN)]} {GROUP[z % len(GROUP)]}"
            else:
                name = f"{FIRST[x % len(FIRST)]} {LAST[y % len(LAST)]} {GROUP[z % len(GROUP)]}"
            if name not in seen:
                break
        else:
            name = f"{name} {i}"
        seen.add(name)
        names.append(name)
    return names


def subreddit_names(rng: np.random.Generator, n: int) -> list[str]:
    """Unique subreddit names, also when case is ignored (as Reddit does)."""
    names: list[str] = []
    seen: set[str] = set()
    draws = rng.integers(0, 1 << 30, size=(n, 3))
    w = len(SUB_WORDS)
    for i in range(n):
        a, b, c = (int(x) for x in draws[i])
        for attempt in range(20):
            x, y = SUB_WORDS[(a + attempt) % w], SUB_WORDS[(b + 3 * attempt) % w]
            if (attempt == 0 and c % 4 == 0) or x == y:
                name = x
            else:
                name = f"{x}{y}" if c % 2 else f"{x.title()}{y.title()}"
            if name.lower() not in seen:
                break
        else:
            name = f"{name}{i}"
        seen.add(name.lower())
        names.append(name)
    return names


def uuids(rng: np.random.Generator, n: int) -> list[str]:
    raw = rng.integers(0, 256, size=(n, 16), dtype=np.uint8)
    raw[:, 6] = (raw[:, 6] & 0x0F) | 0x40  # version 4
    raw[:, 8] = (raw[:, 8] & 0x3F) | 0x80  # RFC 4122 variant
    hexes = raw.tobytes().hex()
    return [
        f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"
        for h in (hexes[i : i + 32] for i in range(0, 32 * n, 32))
    ]


def user_keys(fmt: str, users: np.ndarray, seed: int) -> list[str]:
    """User keys from the global user index alone, so any block can name its users."""
    if fmt == "lastfm":
        return [f"user_{u + 1:06d}" for u in users]
    keys = []
    for u in users:
        h = (int(u) * 2654435761 + seed * 40503) & 0xFFFFFFFF
        a, b = ADJ[h % len(ADJ)], NOUN[(h >> 8) % len(NOUN)]
        # The digits are exactly str(u) and the words have none, so keys are unique.
        keys.append(f"{a.lower()}_{b.lower()}{u}" if (h >> 16) % 3 == 0 else f"{a}{b}{u}")
    return keys
