"""Training: completeness, overfitting, resume equality, NaN guard, validation split, CLI."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from contract import columns as C
from tests.conftest import T0, H, tiny_split
from thrnn.checkpoint import load_checkpoint, load_run
from thrnn.config import TrainConfig, config_for
from thrnn.data import load_sessions, user_parallel_batches
from thrnn.inference import replay
from thrnn.io import Split, split_from_sessions
from thrnn.train import finalize_state, train, train_sessions

torch.set_num_threads(1)


def _cfg(model: str = "thrnn", **kw) -> TrainConfig:
    base = {"item_embedding": 16, "epochs": 1, "batch_size": 4, "device": "cpu", "seed": 7}
    return config_for("paper-lastfm", model, **{**base, **kw})


def _state(path) -> dict[str, torch.Tensor]:
    return torch.load(path / "model.pt", weights_only=True)["state_dict"]


def test_every_training_target_is_trained_on(tmp_path):
    # a heavy user (30 sessions) among light ones: the research batching would skip its tail
    sessions = {0: [[(1 + s % 5, T0 + s * 10 * H), (2 + s % 3, T0 + s * 10 * H + 60)] for s in range(30)]}
    for u in range(1, 7):
        sessions[u] = [[(u, T0 + s * 20 * H), (u + 1, T0 + s * 20 * H + 60), (3, T0 + s * 20 * H + 90)]
                       for s in range(3)]
    split = split_from_sessions(sessions)
    data = load_sessions(split)
    hist = train_sessions(data, tmp_path, _cfg(batch_size=4), progress=False)
    expected = int((split.train.groupby([C.USER_ID, C.SESSION_INDEX]).size() - 1).sum())
    assert hist["train_targets"] == expected == hist["epochs"][0]["targets"]
    assert hist["epochs"][0]["batches"] == 24  # floor(0.8 * 30): one batch per heavy-user session
    # the heavy user's last training session (trained alone, where the research code had stopped)
    # changes the model
    last = 23
    sessions[0][last] = [(4, sessions[0][last][0][1]), (5, sessions[0][last][1][1])]
    other = train_sessions(load_sessions(split_from_sessions(sessions)), tmp_path / "b", _cfg(batch_size=4),
                           progress=False)
    assert other["train_targets"] == expected
    assert not torch.equal(_state(tmp_path)["out.weight"], _state(tmp_path / "b")["out.weight"])


@pytest.mark.slow  # tens of seconds on 2 cores: kept out of `make test-fast`
def test_overfits_a_tiny_dataset(tmp_path):
    """Deterministic sequences are learned to Recall@1 = 1 and the time loss falls."""
    sessions = {}
    for u in range(4):
        seq = [1 + (u + k) % 6 for k in range(5)]
        gap = (5 + 10 * u) * H
        sessions[u] = [[(i, T0 + s * gap + 60 * k) for k, i in enumerate(seq)] for s in range(6)]
    split = split_from_sessions(sessions, train_fraction=1.0)
    data = load_sessions(split)
    cfg = _cfg(epochs=60, lr=0.02, time_lr=0.02, dropout=0.0, item_embedding=16, batch_size=4)
    hist = train_sessions(data, tmp_path, cfg, progress=False)
    model, cfg = load_run(tmp_path)
    everything = torch.ones(data.n_sessions, dtype=torch.bool)
    r = replay(model, data, cfg, everything, everything)
    assert r.next_ranks.size == data.n_targets()
    assert (r.next_ranks == 1).all()
    # first items are user-specific: learned from the user/gap context (all but the first sessions)
    assert (r.first_ranks[data.session_index.numpy()[r.first_rows] > 0] == 1).all()
    losses = [e["loss_time"] for e in hist["epochs"]]
    assert losses[-1] < losses[0] - 0.5


@pytest.mark.parametrize("model", ["thrnn", "hrnn"])
def test_resume_is_bit_identical(tmp_path, model):
    split = tiny_split(n_users=5)
    data = load_sessions(split)
    kw = {"dropout": 0.3, "sampled_softmax": 5}
    full = train_sessions(data, tmp_path / "full", _cfg(model, epochs=2, **kw), progress=False)
    train_sessions(data, tmp_path / "part", _cfg(model, epochs=1, **kw), progress=False)
    assert load_checkpoint(tmp_path / "part")["epoch"] == 1
    resumed = train_sessions(data, tmp_path / "part", _cfg(model, epochs=2, **kw), resume=True, progress=False)
    a, b = _state(tmp_path / "full"), _state(tmp_path / "part")
    for k in a:
        assert torch.equal(a[k], b[k]), k
    strip = ("seconds", "targets_per_s")
    assert [{k: v for k, v in e.items() if k not in strip} for e in full["epochs"]] == \
        [{k: v for k, v in e.items() if k not in strip} for e in resumed["epochs"]]


def test_resume_refuses_a_different_model_config(tmp_path):
    data = load_sessions(tiny_split())
    train_sessions(data, tmp_path, _cfg(epochs=1), progress=False)
    with pytest.raises(ValueError, match="item_embedding"):
        train_sessions(data, tmp_path, _cfg(epochs=2, item_embedding=8), resume=True, progress=False)


def test_cosine_schedule_learning_rates_and_resume(tmp_path):
    """lr of epoch e is lr * 0.5 (1 + cos(pi e / E)) for both groups; an interrupted run resumes exactly."""
    data = load_sessions(tiny_split(n_users=5))
    cfg = _cfg(epochs=3, lr=0.004, time_lr=0.002, lr_schedule="cosine")
    full = train_sessions(data, tmp_path / "full", cfg, progress=False)
    assert [e["lr"] for e in full["epochs"]] == pytest.approx([0.004, 0.004 * 0.75, 0.004 * 0.25])
    assert [cfg.lr_factor(e) * cfg.time_lr for e in range(3)] == pytest.approx([0.002, 0.0015, 0.0005])

    class Stop(Exception):
        pass

    def stop_after_first(epoch: int, record: dict) -> None:
        raise Stop

    with pytest.raises(Stop):
        train_sessions(data, tmp_path / "part", cfg, progress=False, on_epoch=stop_after_first)
    with pytest.raises(ValueError, match="epochs"):  # the schedule depends on the epoch count
        train_sessions(data, tmp_path / "part", cfg.replace(epochs=4), resume=True, progress=False)
    resumed = train_sessions(data, tmp_path / "part", cfg, resume=True, progress=False)
    assert [e["lr"] for e in resumed["epochs"]] == [e["lr"] for e in full["epochs"]]
    a, b = _state(tmp_path / "full"), _state(tmp_path / "part")
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert _cfg(epochs=3).lr_factor(2) == 1.0
    with pytest.raises(ValueError, match="lr_schedule"):
        _cfg(lr_schedule="step")


def test_same_seed_same_model_different_seed_different_model(tmp_path):
    data = load_sessions(tiny_split())
    for name, seed in (("a", 1), ("b", 1), ("c", 2)):
        train_sessions(data, tmp_path / name, _cfg(seed=seed), progress=False)
    a, b, c = (_state(tmp_path / n) for n in "abc")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_non_finite_steps_are_skipped_then_abort(tmp_path):
    data = load_sessions(tiny_split(n_users=8))
    with pytest.raises(FloatingPointError, match="max_bad_steps=2"):
        train_sessions(data, tmp_path, _cfg(lr=1e30, time_lr=1e30, epochs=3, max_bad_steps=2), progress=False)


def test_gradient_clipping_bounds_every_update(tmp_path):
    """Adam moves a weight by at most lr * |m| / eps per step (|m| <= the largest gradient, eps 1e-8):
    with every gradient clipped to norm 1e-9 that is 0.1 lr, so after S steps no weight is further than
    0.1 lr S from its initial value. The same run without clipping goes further: the clip did it."""
    from thrnn.models import build_model
    from thrnn.train import seed_everything

    data, lr = load_sessions(tiny_split()), 1e-3
    seed_everything(7)  # what training does before building the model
    init = build_model(_cfg(), data.n_items, data.n_users).state_dict()
    moved, steps = {}, {}
    for name, clip in (("clipped", 1e-9), ("plain", 0.0)):
        history = train_sessions(data, tmp_path / name, _cfg(grad_clip=clip, lr=lr), progress=False)
        state = torch.load(tmp_path / name / "checkpoint.pt", weights_only=False)["model"]
        moved[name] = max((state[k] - init[k]).abs().max().item() for k in init)
        steps[name] = history["epochs"][0]["batches"]
    assert steps["clipped"] == steps["plain"] > 0
    bound = 0.1 * lr * steps["clipped"]
    assert 0 < moved["clipped"] <= bound < moved["plain"], (moved, bound)


def test_validation_split_never_reads_test(tmp_path):
    split = tiny_split(n_users=6)
    other_test = split.test.copy()
    other_test[C.ITEM_ID] = 1 + (other_test[C.ITEM_ID] % split.n_items)  # different test items
    cfg = _cfg(epochs=2, val_sessions=1, patience=5)
    h1 = train(split, tmp_path / "a", cfg, progress=False)
    train(Split(split.train, other_test, split.items, split.users, {}), tmp_path / "b", cfg, progress=False)
    a, b = _state(tmp_path / "a"), _state(tmp_path / "b")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert h1["val_sessions"] == 6 and "val_recall@20" in h1["epochs"][0] and h1["best_epoch"] in (1, 2)
    assert 0 <= h1["epochs"][-1]["val_mae_hours"] < 500


def test_validation_only_at_the_chosen_epochs_trains_the_same_weights(tmp_path):
    data = load_sessions(tiny_split(n_users=6))
    cfg = _cfg(epochs=3, val_sessions=1)
    every = train_sessions(data, tmp_path / "every", cfg, progress=False)
    some = train_sessions(data, tmp_path / "some", cfg, progress=False, validate_at=[2])
    assert ["val_recall@20" in e for e in every["epochs"]] == [True, True, True]
    assert ["val_recall@20" in e for e in some["epochs"]] == [False, True, False]
    assert some["epochs"][1]["val_recall@20"] == every["epochs"][1]["val_recall@20"]
    # validation reads, never trains: the losses of every epoch are the same
    assert [e["loss"] for e in some["epochs"]] == [e["loss"] for e in every["epochs"]]
    assert some["best_epoch"] == 2


def test_train_writes_run_files_and_on_epoch(tmp_path):
    split = tiny_split()
    split_dir = tmp_path / "split"
    split = tiny_split(split_dir)
    seen = []
    hist = train(split_dir, tmp_path / "run", _cfg(epochs=2), progress=False,
                 on_epoch=lambda e, rec: seen.append((e, rec["loss"])))
    assert [e for e, _ in seen] == [1, 2]
    assert {p.name for p in (tmp_path / "run").iterdir()} == {"model.pt", "config.json", "history.json",
                                                               "checkpoint.pt"}
    assert json.loads((tmp_path / "run" / "history.json").read_text()) == json.loads(json.dumps(hist))
    assert TrainConfig.from_dict(json.loads((tmp_path / "run" / "config.json").read_text())).epochs == 2
    model, cfg = load_run(tmp_path / "run")
    assert model.n_items == split.n_items and not model.training


def test_untrained_items_get_the_mean_trained_input_embedding(tmp_path):
    sessions = {u: [[(1 + u, T0 + s * 9 * H), (2 + u, T0 + s * 9 * H + 60)] for s in range(4)] for u in range(3)}
    sessions[0][-1] = [(9, T0 + 50 * H), (1, T0 + 50 * H + 60)]  # item 9 only in test
    data = load_sessions(split_from_sessions(sessions))
    assert data.item_train_count[9] == 0
    train_sessions(data, tmp_path, _cfg(), progress=False)
    emb = _state(tmp_path)["item_emb.weight"]
    trained = (data.item_train_count > 0).nonzero().squeeze(1)
    torch.testing.assert_close(emb[9], emb[trained].mean(0))
    assert bool((emb[0] == 0).all())
    model, _ = load_run(tmp_path)
    assert torch.equal(finalize_state(model, data.item_train_count)["item_emb.weight"], emb)


def test_batches_cover_the_whole_train_split_on_a_skewed_split():
    counts = [37, 3, 3, 5, 12]
    sessions = {u: [[(1, T0 + s * 10 * H), (2, T0 + s * 10 * H + 60)] for s in range(n)]
                for u, n in enumerate(counts)}
    data = load_sessions(split_from_sessions(sessions))
    rows = np.concatenate(user_parallel_batches(data, ~data.is_test, 2))
    assert np.array_equal(np.sort(rows), np.flatnonzero(~data.is_test.numpy()))


@pytest.mark.slow  # a training subprocess
def test_cli_help_documents_every_option_and_trains(tmp_path):
    import argparse

    from thrnn import train as train_module

    parser = argparse.ArgumentParser()
    train_module.configure_parser(parser)
    out = parser.format_help()
    for f in TrainConfig.__dataclass_fields__:
        assert "--" + f.replace("_", "-") in out
    split_dir = tmp_path / "split"
    tiny_split(split_dir)
    cfg_file = tmp_path / "cfg.yaml"
    cfg_file.write_text("item_embedding: 8\nepochs: 3\n")
    subprocess.run([sys.executable, "-m", "thrnn", "train", "--data", str(split_dir), "--out", str(tmp_path / "run"),
                    "--model", "hrnn", "--config", str(cfg_file), "--epochs", "1", "--device", "cpu",
                    "--no-progress", "--threads", "1"], check=True, capture_output=True)
    cfg = TrainConfig.from_dict(json.loads((tmp_path / "run" / "config.json").read_text()))
    assert (cfg.model, cfg.item_embedding, cfg.epochs, cfg.dropout) == ("hrnn", 8, 1, 0.2)


@pytest.mark.gpu
def test_cuda_training_evaluation_and_scoring_agree_with_cpu(tmp_path):
    import datetime as dt

    from thrnn.inference import predict_test
    from thrnn.scoring import score_users

    split = tiny_split(n_users=6)
    data = load_sessions(split)
    cfg = _cfg(epochs=1, dropout=0.0)
    h_cpu = train_sessions(data, tmp_path / "cpu", cfg, progress=False)
    h_gpu = train_sessions(data, tmp_path / "gpu", cfg.replace(device="cuda"), progress=False)
    assert h_gpu["device"].startswith("cuda")
    assert h_gpu["epochs"][0]["loss"] == pytest.approx(h_cpu["epochs"][0]["loss"], rel=1e-3)
    model, cfg_gpu = load_run(tmp_path / "gpu", "cuda")
    on_gpu = predict_test(model, split, cfg_gpu, device="cuda")
    on_cpu = predict_test(model.cpu(), split, cfg_gpu, device="cpu")
    assert (on_gpu.next_item_ranks == on_cpu.next_item_ranks).mean() > 0.95
    np.testing.assert_allclose(on_gpu.gap_median_hours, on_cpu.gap_median_hours, rtol=1e-3)
    recs_g, churn_g = score_users(model.cuda(), split, cfg_gpu, run_date=dt.date(2030, 1, 1), device="cuda")
    recs_c, churn_c = score_users(model.cpu(), split, cfg_gpu, run_date=dt.date(2030, 1, 1), device="cpu")
    assert len(recs_g) == len(recs_c)
    np.testing.assert_allclose(churn_g["median_return_hours"], churn_c["median_return_hours"], rtol=1e-3)
    # amp (bfloat16 autocast) trains without non-finite steps
    h_amp = train_sessions(data, tmp_path / "amp", cfg.replace(device="cuda", amp=True), progress=False)
    assert h_amp["epochs"][0]["bad_steps"] == 0 and np.isfinite(h_amp["epochs"][0]["loss"])


def test_config_presets_layering_and_validation(tmp_path):
    assert (config_for("paper-reddit", "hrnn").item_embedding, config_for("paper-reddit", "hrnn").dropout,
            config_for("paper-reddit", "hrnn").epochs) == (50, 0.0, 20)
    lastfm = config_for("paper-lastfm")
    assert (lastfm.item_embedding, lastfm.epochs, lastfm.lr, lastfm.time_lr, lastfm.batch_size) == (100, 24, 1e-3, 1e-4, 100)
    assert (lastfm.loss_time, lastfm.loss_rec, lastfm.loss_first) == (0.45, 0.45, 0.1)
    with pytest.raises(ValueError, match="unknown preset"):
        config_for("somewhere-else", "thrnn")
    assert config_for("reddit", "thrnn", epochs=3).epochs == 3
    assert TrainConfig.from_dict(lastfm.to_dict()) == lastfm
    with pytest.raises(ValueError, match="unknown TrainConfig keys"):
        TrainConfig.from_dict({"modle": "thrnn"})
    with pytest.raises(ValueError, match="model must be one of"):
        config_for("paper-lastfm", "sasrec")
    with pytest.raises(ValueError, match="dropout"):
        TrainConfig(dropout=1.0)
    with pytest.raises(ValueError, match="gap_exponent"):
        TrainConfig(gap_exponent=0)
    assert TrainConfig(model="gru4rec").has_inter is False and TrainConfig(model="hrnn").has_time is False
