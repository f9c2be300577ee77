"""Model registry and self-describing bundles."""

from geoseg.models.bundle import Bundle, BundleMeta, ClassInfo, load_bundle, save_bundle
from geoseg.models.registry import build_model, list_architectures

__all__ = ["Bundle", "BundleMeta", "ClassInfo", "build_model", "list_architectures", "load_bundle", "save_bundle"]
