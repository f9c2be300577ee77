"""Training never loses work to an output it cannot write: every output location is checked before the first
step, and each epoch's checkpoint is written before its bundle, so a failed save leaves a resumable run."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from geoseg.cli import main
from geoseg.errors import OutputError
from geoseg.models.bundle import read_meta
from geoseg.train import load_train_config, train
from geoseg.train.checkpoint import load_state
from tests.conftest import TINY_ARGS


def recipe(tmp_path: Path, out: Path, **keys: object) -> Path:
    args = {**TINY_ARGS, "decoder_channels": list(TINY_ARGS["decoder_channels"])}
    section = {"out": str(out), "run_dir": str(tmp_path / "run"), "data_dir": str(tmp_path / "data"),
               "arch": "smp:Unet", "arch_args": args, "synth": {"count": 1, "size": 192},
               "classes": [{"name": "background"}, {"name": "building", "layer": "buildings"},
                           {"name": "road", "layer": "roads"}],
               "window": 64, "batch_size": 2, "steps": 2, "epoch_steps": 1, "log_every": 1, "tile": 64,
               "halo": 16, "half": False, "threads": 1, **keys}
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump({"name": "t", "train": section}))
    return path


def test_missing_out_folder_fails_before_any_step(tmp_path):
    path = recipe(tmp_path, tmp_path / "nowhere" / "model.safetensors")
    steps: list[dict] = []
    with pytest.raises(OutputError, match=r"folder .*nowhere does not exist; create it"):
        train(load_train_config(path), log=steps.append)
    assert steps == []
    assert not (tmp_path / "data").exists() and not (tmp_path / "run").exists()  # nothing made, nothing run
    res = CliRunner().invoke(main, ["train", str(path), "-q"])
    assert res.exit_code == 1 and len(res.stderr.strip().splitlines()) == 1, res.output
    assert str(path) in res.stderr and "nowhere" in res.stderr


@pytest.mark.parametrize("bad", ["folder", "input"])
def test_out_that_is_a_folder_or_an_input_is_refused(tmp_path, bad):
    scene = tmp_path / "scene.tif"
    scene.write_bytes(b"not read: refused before")
    out = tmp_path if bad == "folder" else scene
    keys = {} if bad == "folder" else {"synth": None, "data": {"scenes": [{"image": str(scene), "labels": "x"}]}}
    with pytest.raises(OutputError, match="is a folder" if bad == "folder" else "is the training input"):
        train(load_train_config(recipe(tmp_path, out, **keys)))
    assert scene.read_bytes() == b"not read: refused before"


@pytest.mark.parametrize("fail_at", [1, 2])
def test_bundle_save_failure_leaves_a_resumable_checkpoint(tmp_path, fail_at):
    folder = tmp_path / "models"
    folder.mkdir()
    cfg = load_train_config(recipe(tmp_path, folder / "model.safetensors"))

    def remove_folder(rec: dict) -> None:  # the bundle's folder vanishes during the epoch (e.g. a lost mount)
        if rec["kind"] == "train" and rec["step"] == fail_at:
            shutil.rmtree(folder)

    with pytest.raises(OutputError, match="could not write the bundle.*--resume"):
        train(cfg, log=remove_folder)
    assert load_state(cfg.resolved_run_dir)["step"] == fail_at  # the epoch's checkpoint was written first
    folder.mkdir()
    train(cfg, resume=True)
    assert read_meta(cfg.out).provenance["steps"] == cfg.steps
