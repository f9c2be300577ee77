"""Pipeline YAMLs are checked against the config dataclasses' types (pydantic): every wrong container, type or
key is one line naming the file and the key path, never a traceback; CLI-style names are not split into letters."""

from __future__ import annotations

import subprocess
import sys

import pytest

from geoseg.errors import ConfigError
from geoseg.pipeline import DEFAULT_POST, load_pipeline
from geoseg.train.config import load_train_config

TRAIN = "train:\n  out: x.safetensors\n  synth: {count: 1}\n  classes: [{name: background}, {name: building}]\n"


@pytest.mark.parametrize("text,needle", [
    ("infer: {classes: 5}\n", "infer.classes: should be a list (got 5)"),
    ("infer: {post: [1, 2]}\n", "infer.post: should be a mapping"),
    ("infer: {post: {building: 5}}\n", "infer.post.building: should be a mapping"),
    ("infer: {post: {building: {min_area_m2: [3]}}}\n", "infer.post.building.min_area_m2: should be a valid number"),
    ("infer: {post: {road: {holes: maybe}}}\n", "infer.post.road.holes: should be a valid boolean"),
    ("infer: {tile: 12.5}\n", "infer.tile: should be a valid integer"),
    ("infer: [tile]\n", "infer: should be a mapping"),
    ("infer: {device: [cpu]}\n", "infer.device: should be a valid string"),
    ("nmae: x\n", "unknown key nmae; did you mean name?"),
    ("- infer\n", "expected a mapping"),
    (TRAIN + "  heads: {boundary: 1}\n", "train.heads: should be a list"),
    (TRAIN + "  heads: [{kind: boundary}]\n", "train.heads[0].name: required key missing"),
    (TRAIN + "  synth: [1]\n", "train.synth: should be a mapping"),
    (TRAIN + "  mean: [0.5, half, 0.5]\n", "train.mean[1]: should be a valid number"),
    (TRAIN + "  data: {scenes: [{image: a.tif, label: b.gpkg}]}\n",
     "train.data.scenes[0]: unknown key label; did you mean labels?"),
    (TRAIN + "  arch_args: [encoder_name]\n", "train.arch_args: should be a mapping"),
    ("train:\n  synth: {count: 1}\n", "train.out: required key missing"),
])
def test_wrong_type_or_container_is_one_line(tmp_path, text, needle):
    bad = tmp_path / "bad.yaml"
    bad.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_train_config(bad) if "train:" in text else load_pipeline(bad)
    message = str(err.value)
    assert message.startswith(f"{bad}: ") and "\n" not in message
    assert needle in message, message


@pytest.mark.parametrize("value,names", [("building", ("building",)), ("'building, road'", ("building", "road")),
                                         ("[road]", ("road",))])
def test_classes_string_is_names_not_letters(tmp_path, value, names):
    path = tmp_path / "p.yaml"
    path.write_text(f"infer: {{classes: {value}}}\n")
    assert load_pipeline(path).classes == names


def test_post_keys_override_the_class_defaults_only(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text("infer:\n  tile: 256\n  post:\n    road: {min_area_m2: 5}\n    tree:\n")
    config = load_pipeline(path)
    assert config.tile == 256 and config.post["road"].min_area_m2 == 5.0
    assert config.post["road"].simplify_m == DEFAULT_POST["road"].simplify_m  # not reset to ClassPost()'s
    assert config.post["tree"].min_area_m2 == 4.0 and config.post["building"] == DEFAULT_POST["building"]


def test_cli_bad_pipeline_exits_1_with_one_line(tmp_path, make_scene):
    scene = make_scene("s.tif", width=64, height=64)
    bad = tmp_path / "bad.yaml"
    bad.write_text("infer:\n  post: [1, 2]\n")
    run = subprocess.run([sys.executable, "-m", "geoseg", "infer", str(scene), "--out", str(tmp_path / "o.gpkg"),
                          "--pipeline", str(bad)], capture_output=True, text=True)
    assert run.returncode == 1
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and str(bad) in lines[0] and "infer.post" in lines[0], run.stderr
    assert not (tmp_path / "o.gpkg").exists()
