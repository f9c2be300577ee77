"""Training state for ``--resume``, without pickle: every tensor in a safetensors file, everything else JSON.

Holds the fp32 weights, the optimiser's moments, the scheduler, torch's RNG state and the step (the window
sampler seeds every batch from the step), so a resumed run continues bit for bit where the checkpoint left it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from geoseg.errors import ConfigError
from geoseg.tempfiles import atomic_path

STATE_FILE = "state.safetensors"
_TENSOR = "__tensor__"


def _split(obj: Any, prefix: str, tensors: dict[str, torch.Tensor]) -> Any:
    """Replace each tensor in a nested state dict by a reference to its key in ``tensors`` (JSON-safe rest)."""
    if isinstance(obj, torch.Tensor):
        tensors[prefix] = obj.detach().cpu().contiguous()
        return {_TENSOR: prefix}
    if isinstance(obj, dict):
        return {"__dict__": [[_split(k, f"{prefix}.k{i}", tensors), _split(v, f"{prefix}.{i}", tensors)]
                             for i, (k, v) in enumerate(obj.items())]}
    if isinstance(obj, (list, tuple)):
        kind = "__tuple__" if isinstance(obj, tuple) else "__list__"
        return {kind: [_split(v, f"{prefix}.{i}", tensors) for i, v in enumerate(obj)]}
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    raise TypeError(f"cannot checkpoint a {type(obj).__name__} at {prefix}")


def _join(obj: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(obj, dict):
        if _TENSOR in obj:
            return tensors[obj[_TENSOR]]
        if "__dict__" in obj:
            return {_join(k, tensors): _join(v, tensors) for k, v in obj["__dict__"]}
        if "__tuple__" in obj:
            return tuple(_join(v, tensors) for v in obj["__tuple__"])
        return [_join(v, tensors) for v in obj["__list__"]]
    return obj


def save_state(run_dir: Path, state: dict[str, Any]) -> Path:
    """Write the nested ``state`` (tensors anywhere inside) atomically to ``run_dir/state.safetensors``."""
    from safetensors.torch import save_file

    run_dir.mkdir(parents=True, exist_ok=True)
    tensors: dict[str, torch.Tensor] = {}
    tree = _split(state, "s", tensors)
    path = run_dir / STATE_FILE
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={"state": json.dumps(tree)})
    return path


def load_state(run_dir: Path) -> dict[str, Any]:
    """Read a state written by :func:`save_state` (no pickle: safetensors + JSON)."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    path = run_dir / STATE_FILE
    if not path.exists():
        raise ConfigError(f"{path}: no checkpoint to resume from; run without --resume first")
    with safe_open(str(path), framework="pt") as handle:
        tree = json.loads((handle.metadata() or {})["state"])
    return _join(tree, load_file(str(path)))
