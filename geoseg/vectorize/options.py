"""What the vectoriser needs to know about a run: small frozen values that travel to every block task."""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property

from affine import Affine

from geoseg.grid import Grid
from geoseg.post import ClassPost, is_network

CELL_MARGIN = 64  # context pixels around a network cell: skeletons and spur pruning are local within this
MAX_SKELETON_STEP = 8  # coarsest skeleton grid, in scene pixels; cells and CELL_MARGIN are multiples of it
MIN_CELL_PX = 64  # smallest network cell side, whatever cell_m and the pixel size


@dataclass(frozen=True)
class ClassVectors:
    """One vectorised class: its index in the class raster, names of its layers and its post-processing."""

    k: int
    name: str
    layer: str
    post: ClassPost

    @property
    def network(self) -> bool:
        """Network classes (roads) are cut on a global cell grid and get a centerline layer."""
        return is_network(self.name, self.post)

    @property
    def split(self) -> bool:
        return self.post.instance_split if self.post.instance_split is not None else not self.network

    @property
    def line_layer(self) -> str:
        return f"{self.name}_centerlines"


@dataclass(frozen=True)
class VectorSpec:
    """The scene's grid and per-class options; identical for every block of a run."""

    classes: tuple[ClassVectors, ...]
    grid: Grid                   # the scene's: polygons traced in its pixel coordinates map through its affine
    block_side: int
    m_per_px: float
    unit_m: float                # metres per CRS unit (1 for a geographic CRS: areas go through UTM there)

    @property
    def transform(self) -> Affine:
        return self.grid.transform

    @property
    def scene_shape(self) -> tuple[int, int]:
        return self.grid.shape

    @cached_property
    def crs(self) -> str:
        """The scene's CRS as WKT (written once per run into every frame)."""
        assert self.grid.crs is not None, "vectors are written in the scene's CRS"
        return self.grid.crs.to_wkt()

    @property
    def block_grid(self) -> tuple[int, int]:
        return (math.ceil(self.scene_shape[0] / self.block_side), math.ceil(self.scene_shape[1] / self.block_side))

    def cell_px(self, opts: ClassVectors) -> int:
        """Side of the global cell grid of a network class in pixels (a function of the scene, not the blocks)."""
        return max(MIN_CELL_PX, int(round(opts.post.cell_m / self.m_per_px / MAX_SKELETON_STEP)) * MAX_SKELETON_STEP)

    def skeleton_step(self, opts: ClassVectors) -> int:
        """Scene pixels per side of a skeleton pixel: the largest power of two (at most MAX_SKELETON_STEP) whose
        pixel is no coarser than ``centerline_m``. Cells and their margins are whole skeleton pixels on a grid
        global to the scene, so neighbouring cells still thin the same pixels."""
        step = 1
        while step < MAX_SKELETON_STEP and 2 * step * self.m_per_px <= opts.post.centerline_m + 1e-9:
            step *= 2
        return step

    def layers(self) -> dict[str, str]:
        """Every output layer and its geometry type."""
        out = {}
        for c in self.classes:
            out[c.layer] = "Polygon"
            if c.network:
                out[c.line_layer] = "LineString"
        return out
