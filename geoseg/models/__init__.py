"""Model registry and self-describing bundles.

The registry (smp, torch) is imported on first use: ``geoseg.models.bundle`` alone reads metadata without torch.
"""

from typing import Any

from geoseg.models.bundle import Bundle, BundleMeta, ClassInfo, load_bundle, save_bundle

__all__ = ["Bundle", "BundleMeta", "ClassInfo", "build_model", "list_architectures", "load_bundle", "save_bundle"]


def __getattr__(name: str) -> Any:
    if name in ("build_model", "list_architectures"):
        from geoseg.models import registry

        return getattr(registry, name)
    raise AttributeError(f"module 'geoseg.models' has no attribute {name!r}")
