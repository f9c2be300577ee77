"""Where a training run writes (bundle, run folder, synthetic data), checked before the first step.

A run can take hours: a folder that does not exist or cannot be written must fail at once, not at the first save.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from geoseg.errors import OutputError
from geoseg.train.config import TrainConfig


def check_outputs(cfg: TrainConfig) -> None:
    """Fail in one line if the bundle, the run folder or the synthetic-data folder cannot be written."""
    out = Path(cfg.out)
    where = f"{cfg.recipe}: train.out (or --out) {out}"
    if out.is_dir():
        raise OutputError(f"{where}: is a folder; name the bundle file, e.g. {out / 'model.safetensors'}")
    if not out.parent.is_dir():
        raise OutputError(f"{where}: folder {out.parent} does not exist; create it (mkdir -p {out.parent}) "
                          "or point train.out elsewhere")
    _probe(out.parent, where)
    for source in _inputs(cfg):
        if _same(out, source):
            raise OutputError(f"{where}: is the training input {source}; write the bundle to another file")
    made = [(cfg.resolved_run_dir, f"{cfg.recipe}: train.run_dir (or --run-dir) {cfg.resolved_run_dir}")]
    if cfg.synth is not None:
        made.append((Path(cfg.data_dir), f"{cfg.recipe}: train.data_dir {cfg.data_dir}"))
    for folder, what in made:
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise OutputError(f"{what}: cannot create the folder ({err.strerror}); choose a writable one") from None
        _probe(folder, what)


def _probe(folder: Path, where: str) -> None:
    """Create and remove a temporary file: the only reliable test (read-only mounts, ACLs, quotas)."""
    try:
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".geoseg-probe.tmp-"):
            pass
    except OSError as err:
        raise OutputError(f"{where}: folder {folder} is not writable ({err.strerror}); "
                          "choose a folder you can write") from None


def _inputs(cfg: TrainConfig) -> list[Path]:
    if cfg.data is None:
        return []
    return [Path(p) for s in cfg.data.scenes for p in (s.image, s.labels, s.label_raster) if p]


def _same(a: Path, b: Path) -> bool:
    """Same path, symlink or hard link."""
    if a.exists() and b.exists():
        return os.path.samefile(a, b)
    return a.resolve() == b.resolve()
