"""Training end to end on CPU: a tiny train → bundle → infer → eval beats the untrained model; an interrupted
then resumed run gives bit-identical weights; bad recipes fail in one line through the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pyogrio
import pytest
import torch
import yaml
from click.testing import CliRunner
from safetensors.torch import load_file

from geoseg.cli import main
from geoseg.evaluate import evaluate
from geoseg.infer import infer
from geoseg.models import BundleMeta, build_model, save_bundle
from geoseg.models.bundle import read_meta
from geoseg.pipeline import ClassPost, InferConfig
from geoseg.synth import SynthSpec, write_scene
from geoseg.train import load_train_config, train
from tests.conftest import CLASSES, TINY_ARGS

CLASS_LIST = [{"name": "background"}, {"name": "building", "layer": "buildings"}, {"name": "road", "layer": "roads"}]


@pytest.fixture(scope="module")
def scenes(tmp_path_factory) -> list[tuple[Path, Path]]:
    folder = tmp_path_factory.mktemp("scenes")
    out = []
    for seed in (11, 12, 13):
        image, truth = folder / f"s{seed}.tif", folder / f"s{seed}_truth.gpkg"
        write_scene(SynthSpec(384, 384, seed=seed), image, truth)
        out.append((image, truth))
    return out


def recipe(tmp_path: Path, scenes: list[tuple[Path, Path]], **train_keys) -> Path:
    args = {k: v for k, v in TINY_ARGS.items() if k != "classes"}
    args["decoder_channels"] = list(args["decoder_channels"])
    section = {"out": str(tmp_path / "model.safetensors"), "run_dir": str(tmp_path / "run"), "arch": "smp:Unet",
               "arch_args": args, "classes": CLASS_LIST, "window": 128, "batch_size": 4, "steps": 8,
               "epoch_steps": 4, "log_every": 2, "tile": 128, "halo": 32, "half": False, "threads": 1,
               "data": {"scenes": [{"image": str(i), "labels": str(t), "split": "val" if k == 2 else ""}
                                   for k, (i, t) in enumerate(scenes)], "split": "scene"}}
    section.update(train_keys)
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump({"name": "t", "train": section}))
    return path


def scores(bundle: Path, scene: Path, truth: Path, folder: Path) -> dict:
    keep_all = {n: ClassPost(min_area_m2=0.0) for n in ("building", "road")}
    config = InferConfig(model=str(bundle), device="cpu", workers=1, post=keep_all)
    infer(scene, folder / "pred.gpkg", config, raster_out=folder / "classes.tif", overwrite=True)
    return evaluate(folder / "classes.tif", truth, pred_vectors=folder / "pred.gpkg")


def test_tiny_training_beats_the_untrained_model(tmp_path, scenes):
    path = recipe(tmp_path, scenes, steps=24, epoch_steps=12, log_every=6, lr=0.01,
                  augment={"flip": {}, "rot90": {}, "colour": {}, "scale_rotate": {"p": 0.3}})
    res = CliRunner().invoke(main, ["train", str(path)])
    assert res.exit_code == 0, res.output
    cfg = load_train_config(path)
    # the untrained twin: same architecture and metadata, weights as initialised
    torch.manual_seed(0)
    untrained = save_bundle(tmp_path / "untrained.safetensors", build_model("smp:Unet", **TINY_ARGS),
                            BundleMeta(arch="smp:Unet", arch_args=dict(TINY_ARGS), classes=CLASSES, tile=128, halo=32))
    image, truth = scenes[2]  # the held-out validation scene
    before = scores(untrained, image, truth, tmp_path)
    after = scores(Path(cfg.out), image, truth, tmp_path)
    for name in ("building", "road"):  # measured: building 0.12 -> 0.37, road 0.00 -> 0.73
        assert after[name]["pixel_iou"] > before[name]["pixel_iou"] + 0.1, (before, after)
    # each epoch validated through the tiled infer path on the held-out scene, logged and plotted
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    val = [r for r in records if r["kind"] == "val"]
    assert [r["step"] for r in val] == [12, 24] and 0 <= val[-1]["building_iou"] <= 1
    assert val[-1]["building_iou"] == pytest.approx(after["building"]["pixel_iou"], abs=0.02)
    assert (tmp_path / "run" / "curves.png").read_bytes()[:4] == b"\x89PNG"
    meta = read_meta(cfg.out)
    assert meta.provenance["steps"] == 24 and json.loads(meta.provenance["validation"])["building_iou"] > 0


def test_interrupted_then_resumed_run_gives_identical_weights(tmp_path, scenes):
    multitask = {"arch_args": {**{k: v for k, v in TINY_ARGS.items() if k != "decoder_channels"},
                               "decoder_channels": [16, 8, 8], "classes": 5},
                 "heads": [{"name": "boundary", "loss": "bce"}, {"name": "distance", "loss": "tanimoto"}],
                 "loss": {"ce": 1.0, "lovasz": 0.5}, "schedule": "cosine", "steps": 6, "epoch_steps": 3,
                 "log_every": 1, "augment": {"flip": {}, "scale_rotate": {}, "colour": {}, "noise": {}}}
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    whole = load_train_config(recipe(tmp_path / "a", scenes[:2], **multitask))
    train(whole)
    cut = load_train_config(recipe(tmp_path / "b", scenes[:2], **multitask))

    def interrupt(rec: dict) -> None:
        if rec["step"] == 5:  # after the checkpoint at step 3: steps 4-5 are lost and redone on resume
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(cut, log=interrupt)
    assert read_meta(cut.out).provenance["steps"] == 3
    train(cut, resume=True)
    a, b = load_file(whole.out), load_file(cut.out)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    meta = read_meta(cut.out)
    assert meta.heads == (("boundary", 1), ("distance", 1)) and meta.n_outputs == 5
    steps = [json.loads(line)["step"] for line in (Path(cut.run_dir) / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4, 5, 6]  # the log continues without the redone steps twice


def test_training_keeps_its_thread_count_after_validation(tmp_path, scenes):
    # validation predicts through infer, whose threads set one torch thread each: the training thread keeps its own
    cfg = load_train_config(recipe(tmp_path, scenes, steps=1, epoch_steps=1, log_every=1, threads=2))
    seen: list[tuple[str, int]] = []  # the val record is logged in the training thread once validation is done
    train(cfg, log=lambda rec: seen.append((rec["kind"], torch.get_num_threads())))
    assert seen == [("train", 2), ("val", 2)]


def test_init_starts_from_a_bundle_and_refuses_one_that_does_not_fit(tmp_path, scenes):
    torch.manual_seed(1)
    start = save_bundle(tmp_path / "start.safetensors", build_model("smp:Unet", **TINY_ARGS),
                        BundleMeta(arch="smp:Unet", arch_args=dict(TINY_ARGS), classes=CLASSES, tile=128, halo=32))
    cfg = load_train_config(recipe(tmp_path, scenes, steps=1, epoch_steps=1, lr=1e-9, init=str(start)))
    train(cfg)
    a, b = load_file(start), load_file(cfg.out)  # one step at a vanishing learning rate: the start's weights
    assert a.keys() == b.keys()
    weights = [k for k in a if "running" not in k and a[k].is_floating_point()]  # BN statistics move in a step
    assert all(torch.allclose(a[k].float(), b[k].float(), atol=1e-5) for k in weights)
    assert read_meta(cfg.out).provenance["init"] == str(start)
    heads = recipe(tmp_path, scenes, init=str(start), heads=[{"name": "boundary", "loss": "bce"}],
                   arch_args={**{k: v for k, v in TINY_ARGS.items() if k != "decoder_channels"},
                              "decoder_channels": list(TINY_ARGS["decoder_channels"]), "classes": 4})
    res = CliRunner().invoke(main, ["train", str(heads), "-q"])
    assert res.exit_code == 1 and "does not fit this recipe's model" in res.stderr, res.output
    assert len(res.stderr.strip().splitlines()) == 1
    res = CliRunner().invoke(main, ["train", str(recipe(tmp_path, scenes, init=str(tmp_path / "nope.st"))), "-q"])
    assert res.exit_code == 1 and "nope.st not found" in res.stderr, res.output


@pytest.mark.parametrize("change,needle", [
    ({"loss": {"ce": 1.0, "hinge": 1.0}}, "unknown hinge; valid: ce, bce"),
    ({"data": {"scenes": [{"image": "missing.tif", "labels": "x.gpkg"}]}}, "missing.tif: no such file"),
    ({"data": {"scenes": [{"image": "SCENE", "labels": "nolabels.gpkg"}]}}, "nolabels.gpkg: label file not found"),
    ({"data": {"scenes": [{"image": "SCENE", "labels": "WRONGCRS"}]}}, "overlap scene"),
    ({"heads": [{"name": "edges"}]}, "kind must be one of boundary, distance, colour"),
])
def test_bad_recipes_fail_in_one_line(tmp_path, scenes, change, needle):
    image, truth = scenes[0]
    wrong = tmp_path / "wrong_crs.gpkg"  # the labels' coordinates with a wrong CRS: nowhere near the scene
    for layer in ("buildings", "roads"):
        frame = pyogrio.read_dataframe(truth, layer=layer)
        frame.set_crs("EPSG:32633", allow_override=True).to_file(wrong, layer=layer)
    text = json.dumps(change).replace("SCENE", str(image)).replace("WRONGCRS", str(wrong))
    text = text.replace('"x.gpkg"', json.dumps(str(truth))).replace('"nolabels.gpkg"',
                                                                    json.dumps(str(tmp_path / "nolabels.gpkg")))
    path = recipe(tmp_path, scenes, **json.loads(text))
    res = CliRunner().invoke(main, ["train", str(path), "-q"])
    assert res.exit_code == 1
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0] and "Traceback" not in res.output, res.stderr


def test_resume_without_a_checkpoint_fails_in_one_line(tmp_path, scenes):
    res = CliRunner().invoke(main, ["train", str(recipe(tmp_path, scenes)), "--resume", "-q"])
    assert res.exit_code == 1 and "no checkpoint to resume from" in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1


def test_bench_train_prints_json(tmp_path, scenes):
    res = CliRunner().invoke(main, ["bench", "train", "--pipeline", str(recipe(tmp_path, scenes)), "--steps", "2",
                                    "--batch-size", "2", "--window", "64", "--size", "128", "--device", "cpu"])
    assert res.exit_code == 0, res.output
    report = json.loads(res.output.strip().splitlines()[-1])
    assert report["device"] == "cpu" and report["threads"] == 1 and report["steps"] == 2
    assert all(report[k] > 0 for k in ("loop_samples_per_s", "sampler_samples_per_s", "model_samples_per_s"))
