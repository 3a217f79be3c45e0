"""Launch data-parallel training in child processes (``torchrun``) and wait for it, from a process
that must not load torch itself (the Airflow train task). docs/operations.md says how to use it."""

from __future__ import annotations

import collections
import json
import logging
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


def torchrun_command(data_dir: Path, run_dir: Path, config_file: Path, nproc: int) -> list[str]:
    """``python -m torch.distributed.run --standalone --nproc-per-node N -m thrnn train ...`` with every
    TrainConfig field from ``config_file`` (so the preset of the split does not matter)."""
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(nproc),
            "-m", "thrnn", "train", "--data", str(data_dir), "--out", str(run_dir), "--config", str(config_file),
            "--no-progress"]


def train_distributed(data_dir: Path, run_dir: Path, cfg: Any, nproc: int) -> dict[str, Any]:
    """Train ``cfg`` with ``nproc`` data-parallel processes (torchrun) and return the run's history.

    The processes' output goes to this task's log line by line; a failed run raises with its tail."""
    import thrnn

    root = str(Path(thrnn.__file__).resolve().parents[1])  # thrnn and jobs, importable by the children
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))}
    tail: collections.deque[str] = collections.deque(maxlen=40)
    with tempfile.TemporaryDirectory(prefix="thrnn-train-") as tmp:
        config_file = Path(tmp) / "config.json"
        config_file.write_text(json.dumps(cfg.to_dict()))
        cmd = torchrun_command(data_dir, run_dir, config_file, nproc)
        log.info("training with %d processes: %s", nproc, " ".join(cmd))
        with subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) as proc:
            assert proc.stdout is not None
            try:
                for line in proc.stdout:
                    log.info("%s", line.rstrip())
                    tail.append(line)
            except BaseException:  # the task is being stopped (timeout, kill): stop the training with it
                proc.terminate()  # torchrun passes SIGTERM on to its workers
                try:
                    proc.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    proc.kill()
                raise
        if proc.returncode:
            raise RuntimeError(f"torchrun training with {nproc} processes exited with {proc.returncode}:\n"
                               + "".join(tail))
    # thrnn.checkpoint.HISTORY_FILE, spelled out: importing it would load torch into this waiting process
    return json.loads((run_dir / "history.json").read_text())
