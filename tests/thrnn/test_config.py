"""TrainConfig: validation from each field's metadata, the preset table, layering, the train CLI's preset."""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
from pathlib import Path

import pytest

from thrnn import config as C
from thrnn.config import MODELS, PRESETS, TrainConfig, config_for, config_from_args

REPO = Path(__file__).resolve().parents[2]
FIELDS = {f.name: f for f in dataclasses.fields(TrainConfig)}

# The paper's settings as `_DATASET_DEFAULTS` held them before the presets (Table 2, research code).
PAPER_BEFORE = {
    "lastfm": {
        "thrnn": {"item_embedding": 100, "epochs": 24, "dropout": 0.2},
        "hrnn": {"item_embedding": 100, "epochs": 21, "dropout": 0.2},
        "gru4rec": {"item_embedding": 100, "epochs": 30, "dropout": 0.2},
    },
    "reddit": {
        "thrnn": {"item_embedding": 50, "epochs": 30, "dropout": 0.2},
        "hrnn": {"item_embedding": 50, "epochs": 20, "dropout": 0.0},
        "gru4rec": {"item_embedding": 50, "epochs": 30, "dropout": 0.0},
    },
}


@pytest.mark.parametrize("dataset", ["lastfm", "reddit"])
@pytest.mark.parametrize("model", MODELS)
def test_paper_presets_reproduce_the_papers_settings(dataset, model):
    cfg = config_for(f"paper-{dataset}", model)
    assert cfg == TrainConfig(model=model, **PAPER_BEFORE[dataset][model])
    assert (cfg.lr, cfg.lr_schedule, cfg.tie_embeddings, cfg.user_embedding, cfg.seed) == (1e-3, "constant", False,
                                                                                            10, 42)


def test_product_presets_are_the_validated_settings():
    lastfm = config_for("lastfm")
    assert (lastfm.tie_embeddings, lastfm.lr_schedule, lastfm.user_embedding, lastfm.epochs, lastfm.item_embedding,
            lastfm.lr, lastfm.dropout, lastfm.mixture) == (True, "cosine", 50, 10, 100, 1e-3, 0.2, True)
    reddit = {m: config_for("reddit", m) for m in MODELS}
    assert {(c.lr, c.tie_embeddings, c.epochs, c.item_embedding, c.lr_schedule, c.mixture)
            for c in reddit.values()} == {(2e-3, True, 10, 50, "constant", True)}
    assert [reddit[m].dropout for m in MODELS] == [0.2, 0.0, 0.0]  # dropout as the paper's table
    for m in MODELS:
        assert config_for("events", m) == config_for("lastfm", m)  # generic logs: LastFM-like sizes
        assert config_for("lastfm", m).tie_embeddings and config_for("lastfm", m).lr_schedule == "cosine"
    assert config_for("lastfm", "hrnn").user_embedding == 10  # user embedding 50 was chosen for THRNN only


def test_product_presets_are_the_plain_models_overrides_plus_the_mixture():
    # the file holds what validation chose for the plain softmax; the product adds the mixture on top
    overrides = json.loads((REPO / "bench" / "configs" / "quality_overrides.json").read_text())
    for dataset, per_model in overrides.items():
        for model, ov in per_model.items():
            expected = config_for(f"paper-{dataset}", model, **{**ov, **C._PRODUCT_EXTRA})
            assert config_for(dataset, model) == expected, (dataset, model)


def test_unknown_preset_or_model_fails_clearly():
    with pytest.raises(ValueError, match=r"unknown preset 'tiny'; presets: lastfm, reddit, events, paper-lastfm, "
                                         r"paper-reddit"):
        config_for("tiny")
    with pytest.raises(ValueError, match="model must be one of"):
        config_for("lastfm", "sasrec")
    assert set(PRESETS) == {"lastfm", "reddit", "events", "paper-lastfm", "paper-reddit"}
    assert all(set(per_model) == set(MODELS) for per_model in PRESETS.values())


def test_presets_by_format():
    assert [C.preset_for_format(f) for f in ("lastfm", "reddit", "events", None, "other")] == [
        "lastfm", "reddit", "events", "events", "events"]


def test_overrides_layer_on_the_preset():
    cfg = config_for("reddit", "thrnn", epochs=3, mixture=True)
    assert (cfg.epochs, cfg.mixture, cfg.item_embedding, cfg.lr) == (3, True, 50, 2e-3)
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="unknown TrainConfig keys"):
        TrainConfig.from_dict({"modle": "thrnn"})


def test_every_field_declares_help_and_only_known_metadata():
    known = {"help", "title", "choices", *C.BOUNDS}
    for f in FIELDS.values():
        assert f.metadata.get("help"), f.name
        assert set(f.metadata) <= known, (f.name, set(f.metadata) - known)
        TrainConfig(**{f.name: f.default})  # every default is valid


def _bad_values(f: dataclasses.Field) -> list[tuple[object, str]]:
    """Values breaking field ``f``'s declared type, bounds or choices, with the expected message."""
    m = f.metadata
    bad: list[tuple[object, str]] = []
    if "minimum" in m:
        bad.append((m["minimum"] - 1, f"{f.name} must be >= {m['minimum']}"))
    if "maximum" in m:
        bad.append((m["maximum"] + 1, f"{f.name} must be <= {m['maximum']}"))
    if "exclusiveMinimum" in m:
        bad.append((m["exclusiveMinimum"], f"{f.name} must be > {m['exclusiveMinimum']}"))
    if "exclusiveMaximum" in m:
        bad.append((m["exclusiveMaximum"], f"{f.name} must be < {m['exclusiveMaximum']}"))
    if "choices" in m:
        bad.append(("nope", f"{f.name} must be one of {m['choices']}"))
    if isinstance(f.default, bool):
        bad.append((1, f"{f.name} must be true or false"))
    elif isinstance(f.default, int):
        bad += [(2.5, f"{f.name} must be an integer"), (True, f"{f.name} must be an integer"),
                ("3", f"{f.name} must be an integer")]
    elif isinstance(f.default, float):
        bad += [(math.nan, f"{f.name} must be a finite number"), (math.inf, f"{f.name} must be a finite number"),
                (-math.inf, f"{f.name} must be a finite number"), ("1e-3", f"{f.name} must be a number")]
    return bad


@pytest.mark.parametrize("name", list(FIELDS))
def test_values_outside_a_fields_declaration_are_refused_naming_it(name):
    f = FIELDS[name]
    for value, message in _bad_values(f):
        with pytest.raises(ValueError) as err:
            TrainConfig(**{name: value})
        assert message in str(err.value), (value, str(err.value))


def test_numbers_are_normalized():
    cfg = TrainConfig(epochs=3.0, lr=1, item_embedding=8)
    assert cfg.epochs == 3 and isinstance(cfg.epochs, int)
    assert cfg.lr == 1.0 and isinstance(cfg.lr, float)


def test_known_bounds_and_cross_checks():
    assert TrainConfig(dropout=0.0).dropout == 0.0
    with pytest.raises(ValueError, match="dropout must be < 1"):
        TrainConfig(dropout=1.0)
    with pytest.raises(ValueError, match="gap_exponent must be > 0"):
        TrainConfig(gap_exponent=0)
    with pytest.raises(ValueError, match="decay must be < 1"):
        TrainConfig(decay=1.0)


def _args(**kw: object) -> argparse.Namespace:
    from thrnn.train import configure_parser

    p = argparse.ArgumentParser()
    configure_parser(p)
    argv = ["--data", str(kw.pop("data")), "--out", "unused"]
    for k, v in kw.items():
        argv += [f"--{k.replace('_', '-')}", str(v)]
    return p.parse_args(argv)


def test_train_cli_picks_the_preset_by_flag_alias_or_split_format(tmp_path):
    from thrnn.train import _preset

    assert _preset(_args(data=tmp_path)) == "events"  # no stats.json: the generic preset
    (tmp_path / "stats.json").write_text(json.dumps({"format": "reddit"}))
    assert _preset(_args(data=tmp_path)) == "reddit"
    assert _preset(_args(data=tmp_path, preset="paper-lastfm")) == "paper-lastfm"
    assert _preset(_args(data=tmp_path, dataset="lastfm")) == "lastfm"  # the old flag
    with pytest.raises(SystemExit, match="--dataset 'tiny' is not a preset; use --preset"):
        _preset(_args(data=tmp_path, dataset="tiny"))
    with pytest.raises(SystemExit, match="disagree"):
        _preset(_args(data=tmp_path, dataset="lastfm", preset="reddit"))
    with pytest.raises(SystemExit):  # argparse refuses unknown presets
        _args(data=tmp_path, preset="tiny")


def test_layering_defaults_preset_file_flags(tmp_path):
    from thrnn.train import _preset

    (tmp_path / "stats.json").write_text(json.dumps({"format": "reddit"}))
    conf = tmp_path / "c.yaml"
    conf.write_text("epochs: 5\nlr: 0.01\nseed: 7\n")
    args = _args(data=tmp_path, config=conf, epochs=2, model="hrnn")
    cfg = config_from_args(args, _preset(args), args.config)
    # flag (epochs, model) > file (lr, seed) > preset (item embedding, dropout, tied) > dataclass defaults
    assert (cfg.model, cfg.epochs, cfg.lr, cfg.seed) == ("hrnn", 2, 0.01, 7)
    assert (cfg.item_embedding, cfg.dropout, cfg.tie_embeddings, cfg.batch_size) == (50, 0.0, True, 100)
    with pytest.raises(ValueError, match="lr must be a finite number"):
        config_from_args(_args(data=tmp_path, lr="nan"), "reddit")
