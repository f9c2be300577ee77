"""The Grid value (geoseg.grid): crops compose, buffers and resolution changes keep the area, footprints and
pixel↔map agree with rasterio, and the value is immutable and hashable."""

import dataclasses
import pickle

import numpy as np
import pytest
import rasterio.transform
import rasterio.windows
import shapely
from affine import Affine
from rasterio.crs import CRS
from rasterio.windows import Window

from geoseg.grid import Grid, within

UTM = CRS.from_epsg(32631)
# rotated by 17 degrees and sheared: nothing may assume a north-up grid
ROTATED = Affine.translation(500000, 5000000) @ Affine.rotation(17) @ Affine.shear(3, 0) @ Affine.scale(0.5, -0.5)


@pytest.fixture(params=["north-up", "rotated"])
def grid(request) -> Grid:
    transform = Affine(0.5, 0, 500000, 0, -0.5, 5000000) if request.param == "north-up" else ROTATED
    return Grid(transform, 300, 200, UTM)


def test_crops_compose(grid):
    outer, inner = Window(40, 30, 120, 90), Window(7, 11, 50, 20)
    twice = grid.window(outer).window(inner)
    once = grid.window(Window(47, 41, 50, 20))
    assert twice.shape == once.shape == (20, 50)
    assert np.allclose(tuple(twice.transform), tuple(once.transform), rtol=0, atol=1e-6)
    assert grid.window(outer).transform == rasterio.windows.transform(outer, grid.transform)
    assert grid.window(grid.full) == grid


def test_buffer_grows_every_side(grid):
    big = grid.buffered(16)
    assert big.shape == (grid.height + 32, grid.width + 32)
    # the old top-left pixel is pixel (16, 16) of the buffered grid
    assert np.allclose(big.xy(np.array([16]), np.array([16]), "ul"), grid.xy(np.array([0]), np.array([0]), "ul"))
    assert big.footprint().contains(grid.footprint())
    assert big.buffered(-16).shape == grid.shape


def test_at_resolution_keeps_bounds_and_origin(grid):
    coarse = grid.at_resolution(1.0)  # 0.5 m pixels to 1 m
    assert coarse.shape == (100, 150)
    assert coarse.gsd_m == pytest.approx(1.0)
    assert coarse.transform.c == grid.transform.c and coarse.transform.f == grid.transform.f
    assert shapely.equals_exact(coarse.footprint(), grid.footprint(), 1e-6)
    assert grid.at_resolution(0.5 * (1 + 1e-4)) is grid  # within the epsilon: the grid itself
    assert grid.at_resolution(0.25).shape == (400, 600)


def test_footprint_matches_rasterio(grid):
    corners = [rasterio.transform.xy(grid.transform, r, c, offset="ul") for r, c in
               ((0, 0), (0, grid.width), (grid.height, grid.width), (grid.height, 0))]
    assert shapely.equals_exact(grid.footprint(), shapely.Polygon(corners), 1e-6)
    assert grid.footprint().area == pytest.approx(grid.width * grid.height * grid.pixel_area)
    left, bottom, right, top = grid.bounds
    assert (left, bottom, right, top) == tuple(shapely.bounds(grid.footprint()))


def test_xy_rowcol_round_trip_on_arrays(grid):
    rng = np.random.default_rng(0)
    rows, cols = rng.integers(0, grid.height, 500), rng.integers(0, grid.width, 500)
    xs, ys = grid.xy(rows, cols)
    want_x, want_y = rasterio.transform.xy(grid.transform, rows, cols)
    assert np.allclose(xs, want_x, rtol=0, atol=1e-6) and np.allclose(ys, want_y, rtol=0, atol=1e-6)
    back_r, back_c = grid.rowcol(xs, ys)
    assert (back_r == rows).all() and (back_c == cols).all()
    cc, rr = grid.to_pixel(*grid.to_map(cols + 0.25, rows + 0.75))
    assert np.allclose(cc, cols + 0.25) and np.allclose(rr, rows + 0.75)
    pts = np.column_stack([cols, rows]).astype(float)
    assert np.array_equal(grid.apply(pts), np.column_stack(grid.to_map(cols, rows)))


def test_window_of_bounds_on_a_north_up_grid():
    grid = Grid(Affine(0.5, 0, 500000, 0, -0.5, 5000000), 300, 200, UTM)
    win = Window(40, 30, 120, 90)
    got = grid.window_of(grid.window(win).bounds)
    assert (round(got.col_off), round(got.row_off), round(got.width), round(got.height)) == (40, 30, 120, 90)


def test_immutable_hashable_picklable(grid):
    with pytest.raises(dataclasses.FrozenInstanceError):
        grid.width = 10  # type: ignore[misc]
    assert pickle.loads(pickle.dumps(grid)) == grid
    assert len({grid, Grid(grid.transform, grid.width, grid.height, UTM), grid.buffered(1)}) == 2
    assert grid != dataclasses.replace(grid, crs=CRS.from_epsg(32632))


def test_within_slices_a_window_out_of_an_outer_array(grid):
    outer, inner = Window(40, 30, 120, 90), Window(47, 41, 50, 20)
    scene = np.arange(grid.height * grid.width).reshape(grid.shape)
    assert np.array_equal(scene[outer.toslices()][within(inner, outer)], scene[inner.toslices()])
    # and the crop's grid is the scene grid's window: its top-left pixel maps where the scene's pixel does
    assert np.allclose(grid.window(inner).xy(np.array([0]), np.array([0])), grid.xy(np.array([41]), np.array([47])))
