"""``python -m thrnn {train,evaluate,baselines,score} ...``; each subcommand's module is imported lazily."""

from __future__ import annotations

import argparse
import importlib
import sys

COMMANDS = {
    "train": ("thrnn.train", "train THRNN, HRNN or the GRU4Rec-style GRU on a sessionize output folder"),
    "evaluate": ("thrnn.evaluate", "evaluate a trained run on the test split (metrics.json)"),
    "baselines": ("thrnn.baselines", "run the non-neural baselines on a split"),
    "score": ("thrnn.scoring", "score users: next-session recommendations and churn risk"),
    "backtest": ("thrnn.backtest", "check the churn figures of a past run date against what happened next"),
}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog="python -m thrnn", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True, metavar="{" + ",".join(COMMANDS) + "}")
    chosen = next((a for a in argv if not a.startswith("-")), None)
    modules = {}
    for name, (module_name, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        if name == chosen:  # only the chosen command pays for its imports (torch, pyspark, ...)
            try:
                module = importlib.import_module(module_name)
            except ModuleNotFoundError as exc:
                parser.error(f"subcommand {name!r} is unavailable: {exc}")
            module.configure_parser(p)
            modules[name] = module
    args = parser.parse_args(argv)
    return int(modules[args.command].main(args))


if __name__ == "__main__":
    sys.exit(main())
