"""``geoseg models``: list architectures and bundles, show a bundle, import a checkpoint, export to ONNX."""

from __future__ import annotations

import json

import click

from geoseg.cli.options import overwrite_opt, user_errors, verbose_opt


@click.group()
def models() -> None:
    """Architectures and model bundles."""


@models.command("list")
@verbose_opt
@user_errors
def list_cmd(verbose: int) -> None:
    """Architectures build_model accepts and the bundled models."""
    from geoseg.models.bundle import BUNDLED_DIR, read_meta
    from geoseg.models.registry import list_architectures

    click.echo("architectures:")
    for name in list_architectures():
        click.echo(f"  {name}")
    click.echo("bundled models:")
    for path in sorted(BUNDLED_DIR.glob("*.safetensors")):
        meta = read_meta(path)
        classes = ",".join(c.name for c in meta.classes)
        click.echo(f"  {path.stem}: {meta.arch} {meta.n_bands} bands, {meta.gsd} m, tile {meta.tile}, "
                   f"halo {meta.halo}, classes {classes}")


@models.command("show")
@click.argument("bundle")
@click.option("--measure-halo/--no-measure-halo", "measure", default=True, show_default=True,
              help="Measure the halo the model needs (one forward of 3 tiles).")
@verbose_opt
@user_errors
def show_cmd(bundle: str, measure: bool, verbose: int) -> None:
    """Metadata, parameter count and GFLOP per tile of BUNDLE (path or registered name); prints JSON."""
    from geoseg.models.bundle import load_bundle
    from geoseg.models.cost import count_params, gflop_per_tile
    from geoseg.models.receptive import measure_halo

    loaded = load_bundle(bundle)
    meta = loaded.meta
    info = json.loads(meta.to_json())
    info["path"] = str(loaded.path)
    info["params"] = count_params(loaded.model)
    info["gflop_per_tile"] = round(gflop_per_tile(loaded.model, meta.n_bands, meta.tile), 3)
    if measure:
        report = measure_halo(loaded.model, meta.n_bands, meta.tile, stride=meta.stride,
                              n_classes=len(meta.classes), softmax=meta.activation == "softmax")
        info["halo_measured"] = report.to_dict()
    click.echo(json.dumps(info, indent=2))


def _floats(text: str | None) -> tuple[float, ...] | None:
    return tuple(float(v) for v in text.split(",")) if text else None


@models.command("import")
@click.argument("checkpoint", type=click.Path(dir_okay=False))
@click.option("--arch", required=True, help="Architecture name (see 'geoseg models list').")
@click.option("--arch-args", default="{}", show_default=True, help="JSON of builder arguments, e.g. "
              '\'{"encoder_name": "resnet34", "classes": 3}\'.')
@click.option("--classes", required=True, help="Comma-separated class names, background first; name:#rrggbb.")
@click.option("--heads", help='Extra output heads after the classes as JSON, e.g. \'[["boundary", 1]]\' '
              "(default: what the architecture declares).")
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="Bundle to write (.safetensors).")
@click.option("--tile", type=int, default=512, show_default=True)
@click.option("--halo", type=int, help="Default: measured on the model.")
@click.option("--gsd", type=float, default=0.5, show_default=True, help="Ground sample distance in metres.")
@click.option("--mean", help="Per-band mean after scaling to 0..1, comma-separated.")
@click.option("--std", help="Per-band std after scaling to 0..1, comma-separated.")
@overwrite_opt
@verbose_opt
@user_errors
def import_cmd(checkpoint: str, arch: str, arch_args: str, classes: str, heads: str | None, out: str, tile: int,
               halo: int | None, gsd: float, mean: str | None, std: str | None, overwrite: bool,
               verbose: int) -> None:
    """Convert a torch.save state dict (CHECKPOINT) into a bundle; read with weights_only=True only."""
    from pathlib import Path

    from geoseg.errors import ConfigError, OutputError
    from geoseg.models.convert import import_checkpoint, parse_classes

    if not out.endswith(".safetensors"):
        raise ConfigError(f"--out {out}: a bundle is a .safetensors file; name it e.g. model.safetensors")
    if Path(out).exists() and not overwrite:
        raise OutputError(f"{out}: exists; use --overwrite to replace it")
    try:
        args = json.loads(arch_args)
        head_spec = tuple((str(n), int(c)) for n, c in json.loads(heads)) if heads else None
    except (ValueError, TypeError) as err:
        raise ConfigError(f"--arch-args/--heads: not valid JSON ({err})") from None
    class_info = parse_classes(classes)
    args.setdefault("classes", len(class_info) + sum(c for _, c in head_spec or ()))
    path, meta = import_checkpoint(checkpoint, out, arch, args, class_info, heads=head_spec, tile=tile, halo=halo,
                                   gsd=gsd, mean=_floats(mean), std=_floats(std))
    click.echo(f"wrote {path} ({meta.arch}, {meta.n_bands} bands, {len(meta.classes)} classes, halo {meta.halo})",
               err=True)


@models.command("export")
@click.argument("bundle")
@click.option("--onnx", "onnx_out", required=True, type=click.Path(dir_okay=False), help="ONNX file to write.")
@overwrite_opt
@verbose_opt
@user_errors
def export_cmd(bundle: str, onnx_out: str, overwrite: bool, verbose: int) -> None:
    """Export BUNDLE to ONNX with the metadata the QGIS Deepness plugin reads."""
    from pathlib import Path

    from geoseg.errors import OutputError
    from geoseg.models.bundle import load_bundle
    from geoseg.models.onnx_export import export_onnx

    if Path(onnx_out).exists() and not overwrite:
        raise OutputError(f"{onnx_out}: exists; use --overwrite to replace it")
    path = export_onnx(load_bundle(bundle), onnx_out)
    click.echo(f"wrote {path}", err=True)
