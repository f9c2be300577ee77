"""Synthetic georeferenced aerial scenes with exact ground-truth vectors.

Tests, the sample tiles, the default model's training data and the benchmarks all need scenes of any size,
CRS and dtype whose labels are known exactly. A scene is a pure function of its :class:`SynthSpec`:

* :func:`make_truth` lays out roads, buildings (detached, L-shaped, terraced rows, large flat roofs) and the
  decor (fields, parks, trees, shadows) in a local metric frame and returns the truth layers in map
  coordinates (the decor stays private, cached per spec).
* :func:`render_window` paints any window. Every random value is a hash of (seed, global row, global col)
  or lives on a global lattice, so a pixel is the same whatever window renders it: scenes stream in any
  block size.
* Roads and buildings are painted from the class raster that :func:`label_window` rasterises from the truth
  with the window's own transform, so pixels and vectors agree exactly. Trees may overhang roads: those
  pixels still count as road (labels come from the vectors only); trees never overlap buildings.
"""

from geoseg.synth.model import make_truth
from geoseg.synth.render import label_window, render_window
from geoseg.synth.spec import CLASSES, DTYPES, LAYERS, SynthSpec
from geoseg.synth.write import write_scene

__all__ = ["CLASSES", "DTYPES", "LAYERS", "SynthSpec", "label_window", "make_truth", "render_window", "write_scene"]
