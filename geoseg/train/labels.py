"""Labels for training: they live in :mod:`geoseg.labels`, below both training and evaluation."""

from geoseg.labels import IGNORE, LabelSource, load_labels

__all__ = ["IGNORE", "LabelSource", "load_labels"]
