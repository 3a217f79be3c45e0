"""bench/gpu_check.py, the one-call script of a lent GPU machine, proven on CPU at a tiny size."""

from __future__ import annotations

import json

import numpy as np
import pytest

from bench import gpu_check
from bench.train_speed import generated_split
from contract import columns as C


def test_clock_per_user_keeps_every_gap_and_item():
    one_clock = generated_split(30, 4, 50, seed=3)
    own_clocks = generated_split(30, 4, 50, seed=3, clock_per_user=True)
    for a, b in ((one_clock.train, own_clocks.train), (one_clock.test, own_clocks.test)):
        assert a[C.ITEM_ID].tolist() == b[C.ITEM_ID].tolist()
        assert a[C.SESSION_ID].tolist() == b[C.SESSION_ID].tolist()
        np.testing.assert_allclose(a[C.GAP_BEFORE_SECONDS], b[C.GAP_BEFORE_SECONDS], rtol=0, atol=1e-3)
    # every user starts from the same origin: the first session starts one gap + one session after it
    firsts = own_clocks.train.groupby(C.USER_ID)[C.EVENT_TIME].min()
    assert firsts.max() - firsts.min() < np.timedelta64(301 * 3600 + 20 * 60, "s")


@pytest.mark.slow
def test_tiny_cpu_run_writes_every_figure(tmp_path):
    out = tmp_path / "gpu_check.json"
    assert gpu_check.main(["--tiny", "--device", "cpu", "--out", str(out)]) == 0
    res = json.loads(out.read_text())
    assert res["device"] == "cpu" and "cuda_tests" not in res  # pytest -m gpu runs on CUDA only
    fp32, bf16 = res["runs"]
    assert fp32["amp"] is False and len(fp32["epochs"]) == 1
    assert fp32["epochs"][0]["targets"] == res["data"]["train_targets"]
    assert fp32["last_epoch_targets_per_s"] == pytest.approx(
        fp32["epochs"][0]["targets"] / fp32["epochs"][0]["seconds"])
    assert bf16 == {"amp": True, "skipped": "bfloat16 autocast is CUDA-only in training"}
