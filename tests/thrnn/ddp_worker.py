"""Run under ``torchrun``: the training jobs of a JSON file through the Python API, in one launch.

``python -m torch.distributed.run --standalone --nproc-per-node 2 -m tests.thrnn.ddp_worker JOBS.json``

Each job is ``{"data": split folder, "out": run folder, "config": TrainConfig dict}``; the process group
is made by the first :func:`thrnn.train.train` call from the torchrun environment and reused by the
others. Every rank appends the epochs it was called back for to ``out/on_epoch_rank<R>.txt``.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from thrnn.config import TrainConfig
from thrnn.train import train


def main(jobs_file: str) -> None:
    rank = int(os.environ["RANK"])
    for job in json.loads(Path(jobs_file).read_text()):
        out = Path(job["out"])
        calls = out.parent / f"{out.name}.on_epoch_rank{rank}.txt"

        def on_epoch(epoch: int, record: dict, calls: Path = calls) -> None:
            with calls.open("a") as f:
                f.write(f"{epoch}\n")

        train(job["data"], out, TrainConfig.from_dict(job["config"]), progress=False, on_epoch=on_epoch)


if __name__ == "__main__":
    main(sys.argv[1])
