"""Class raster to GIS vectors: per-block polygons, instance split, regularisation, road centerlines, and the
reduction that joins objects and cells across blocks (see the module docstrings, in data-flow order:
``options`` → ``instances``/``regularize``/``centerlines`` → ``polygons`` → ``blocks`` (worker) → ``reduce``).
"""

from geoseg.vectorize.blocks import BlockVectors, vectorize_block
from geoseg.vectorize.options import ClassVectors, VectorSpec
from geoseg.vectorize.reduce import Reducer

__all__ = ["BlockVectors", "ClassVectors", "Reducer", "VectorSpec", "vectorize_block"]
