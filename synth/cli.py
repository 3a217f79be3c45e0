"""``python -m synth``: write one generated file and print its JSON summary."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import fields
from pathlib import Path

from synth.config import FORMATS, SynthConfig
from synth.writers import write


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows a default only where there is one (None means: derived from --events, or required)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        if action.default is None or action.required:
            return action.help or ""
        return super()._get_help_string(action) or ""


def build_parser() -> argparse.ArgumentParser:
    helps = {f.name: f.metadata.get("help", "") for f in fields(SynthConfig)}
    p = argparse.ArgumentParser(
        prog="python -m synth",
        description="Write a seeded synthetic raw interaction log (lastfm TSV or reddit CSV), streaming.",
        epilog="Prints a JSON summary (events, malformed lines by kind, users, items, time span). "
        "See docs/synthetic_data.md.",
        formatter_class=_HelpFormatter,
    )
    p.add_argument("--format", dest="fmt", choices=FORMATS, required=True, help=helps["fmt"])
    p.add_argument("--events", dest="n_events", metavar="N", type=int, required=True, help=helps["n_events"])
    p.add_argument("--out", metavar="PATH", type=Path, required=True, help=helps["out"] + " (written atomically)")
    p.add_argument("--users", metavar="U", type=int, default=None, help=helps["users"])
    p.add_argument("--items", metavar="I", type=int, default=None, help=helps["items"])
    p.add_argument("--seed", metavar="S", type=int, default=0, help=helps["seed"])
    p.add_argument("--start", metavar="DATE", default="2024-01-01", help=helps["start"])
    p.add_argument("--days", metavar="D", type=float, default=None, help=helps["days"])
    p.add_argument("--malformed-fraction", metavar="F", type=float, default=0.0, help=helps["malformed_fraction"])
    p.add_argument("--gzip", action=argparse.BooleanOptionalAction, default=None, help=helps["gzip"])
    p.add_argument("--block-events", metavar="E", type=int, default=1 << 16, help=helps["block_events"])
    p.add_argument("--max-user-events", metavar="E", type=int, default=200_000, help=helps["max_user_events"])
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=True, help=helps["progress"])
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    cfg = SynthConfig(**vars(args))
    try:
        cfg = cfg.resolved()
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    summary = write(cfg)
    print(json.dumps(summary, ensure_ascii=False, indent=2))
    return 0
