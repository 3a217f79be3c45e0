"""Training killed with SIGKILL in the middle of an epoch, then resumed: the same weights, bit for bit.

``tests/thrnn/test_train.py::test_resume_is_bit_identical`` stops training cleanly between epochs;
here the process ``python -m thrnn train`` is killed while it computes epoch 2, so the only state left
is what the last checkpoint wrote (atomically) after epoch 1.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from tests.conftest import tiny_split
from thrnn.checkpoint import CHECKPOINT_FILE, MODEL_FILE, load_checkpoint

pytestmark = pytest.mark.slow  # two training subprocesses

REPO = Path(__file__).resolve().parents[2]
TIMING = ("seconds", "targets_per_s")


def _train(split: Path, out: Path, *extra: str) -> subprocess.Popen:
    # dropout and sampled softmax draw random numbers: the RNG states must come back exactly too
    return subprocess.Popen(
        [sys.executable, "-m", "thrnn", "train", "--data", str(split), "--out", str(out), "--preset", "paper-lastfm",
         "--item-embedding", "16", "--epochs", "3", "--batch-size", "4", "--dropout", "0.3", "--sampled-softmax", "5",
         "--device", "cpu", "--seed", "7", "--threads", "1", "--no-progress", *extra],
        cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def test_training_killed_mid_epoch_resumes_to_the_same_weights(tmp_path):
    split = tmp_path / "split"
    tiny_split(split, n_users=120, n_items=40, max_sessions=12)  # an epoch lasts a fraction of a second
    full = _train(split, tmp_path / "full")  # the uninterrupted run, alongside
    killed = _train(split, tmp_path / "killed")
    checkpoint = tmp_path / "killed" / CHECKPOINT_FILE
    deadline = time.monotonic() + 180
    while not checkpoint.exists():  # written by rename: when it exists, epoch 1 is complete
        assert killed.poll() is None and time.monotonic() < deadline, killed.stderr.read()[-2000:]
        time.sleep(0.005)
    killed.kill()  # SIGKILL: no handler, no flush, no cleanup
    assert killed.wait(60) == -9
    assert load_checkpoint(tmp_path / "killed")["epoch"] == 1  # killed inside epoch 2
    assert not (tmp_path / "killed" / MODEL_FILE).exists()

    resumed = _train(split, tmp_path / "killed", "--resume")
    assert resumed.wait(300) == 0
    resumed_log = resumed.stderr.read()
    assert full.wait(300) == 0, full.stderr.read()[-2000:]
    a, b = (torch.load(tmp_path / run / MODEL_FILE, weights_only=True)["state_dict"] for run in ("full", "killed"))
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name
    epochs = [[{k: v for k, v in e.items() if k not in TIMING} for e in load_checkpoint(tmp_path / run)["history"]
               ["epochs"]] for run in ("full", "killed")]
    assert len(epochs[0]) == 3 and epochs[0] == epochs[1]
    assert "after epoch 1" in resumed_log  # it did resume, not start over
