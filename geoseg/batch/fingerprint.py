"""Fingerprints that decide whether a finished scene can be skipped: input + model + parameters.

- input: absolute path, size and modification time (ns) — a stat, not a read, so a nightly rerun over a large
  archive costs nothing for unchanged scenes; a scene replaced in place gets a new mtime and is recomputed.
  A remote scene: URL, size and ETag (else Last-Modified) from one HEAD request, never a download.
- model: sha256 of the bundle file (weights and metadata).
- parameters: the settings that change outputs. Block size, batch size, workers and scheduler are left out on
  purpose: outputs do not depend on them (DESIGN invariant 1, tested bit for bit).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from pathlib import Path
from typing import Any

from geoseg.pipeline import InferConfig
from geoseg.remote import is_remote, redact, remote_stat

# InferConfig fields with no effect on the outputs (partition invariance); everything else is fingerprinted
NOT_FINGERPRINTED = frozenset({"model", "block_size", "batch_size", "workers", "scheduler"})


def sha256_file(path: str | os.PathLike[str]) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def input_fingerprint(path: str) -> str:
    """``path|size|mtime_ns``, for a remote scene ``url|size|ETag or Last-Modified`` (a HEAD request; the URL
    without credentials or signature, so a re-signed URL of the same object is the same scene). Raises OSError
    when a local scene is missing or cannot be stat'ed, a :mod:`geoseg.remote` error when a remote one cannot."""
    if is_remote(path):
        head = remote_stat(path)
        validator = (head.etag or head.last_modified).replace("|", "/")
        return f"{redact(path)}|{head.size}|{validator}"
    st = os.stat(path)
    return f"{path}|{st.st_size}|{st.st_mtime_ns}"


def params_fingerprint(config: InferConfig, outputs: tuple[str, ...]) -> dict[str, Any]:
    """The output-changing parameters as plain JSON-able data (stored in the manifest for reading)."""
    params = {f.name: getattr(config, f.name) for f in dataclasses.fields(config) if f.name not in NOT_FINGERPRINTED}
    params["post"] = {k: dataclasses.asdict(v) for k, v in sorted(config.post.items())}
    params["classes"] = list(config.classes) if config.classes else None
    params["outputs"] = list(outputs)
    return params


def digest(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()


@dataclasses.dataclass(frozen=True)
class RunKey:
    """The model and parameter halves of every scene's fingerprint in one run."""

    model_sha256: str
    params: dict[str, Any]

    @classmethod
    def make(cls, bundle: Path, config: InferConfig, outputs: tuple[str, ...]) -> "RunKey":
        return cls(sha256_file(bundle), params_fingerprint(config, outputs))

    def scene(self, input_fp: str) -> str:
        """The fingerprint of one scene: changes if the input, the model or any output parameter changes."""
        return digest({"input": input_fp, "model": self.model_sha256, "params": self.params})
