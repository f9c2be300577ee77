"""The shipped user-data recipe fine-tunes the bundled default model: it loads, its model takes the default's
weights tensor for tensor, and its bundle would infer on the default's grid."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from geoseg.models import build_model
from geoseg.models.bundle import load_bundle, read_meta
from geoseg.train import load_train_config
from geoseg.train.loop import _model_config, warm_start

REPO = Path(__file__).resolve().parents[1]


def test_user_data_recipe_warm_starts_from_the_default_bundle(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO)  # the recipe's paths (tiles/, geoseg/bundled/) are relative to the repository
    cfg = _model_config(load_train_config("pipelines/train-user-data.yaml"))
    default = read_meta(cfg.init)
    assert (cfg.tile, cfg.halo, cfg.gsd) == (default.tile, default.halo, default.gsd)
    assert cfg.head_channels() == tuple(default.heads)
    assert [c["name"] for c in cfg.classes] == [c.name for c in default.classes]
    model = build_model(cfg.arch, **cfg.arch_args)
    warm_start(model, cfg)
    start = load_bundle(cfg.init).model.state_dict()
    assert all(torch.equal(v, start[k].float()) for k, v in model.state_dict().items())
    head = {h.name: h for h in cfg.heads}["boundary"]
    assert head.shared_weight > 1.0  # shared walls weigh more: what splits terraced rows
