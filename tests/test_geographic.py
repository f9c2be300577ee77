"""Ground metres per pixel of geographic scenes, against the exact ellipsoidal area of the scene's footprint."""

from __future__ import annotations

import pyproj
import pytest
from affine import Affine

from geoseg.grid import metres_per_unit
from geoseg.scene import open_scene

DEG = 5e-6  # degrees per pixel: about 0.55 m at the equator


@pytest.mark.parametrize("lat", [0.0, 45.0, 70.0, -60.0])
def test_gsd_of_a_geographic_scene_matches_its_geodesic_area(make_scene, lat):
    width, height = 400, 300
    top = lat + height * DEG / 2  # the scene is centred on ``lat``
    scene = make_scene(f"geo{lat}.tif", width=width, height=height, crs="EPSG:4326",
                       transform=Affine(DEG, 0, 3.0, 0, -DEG, top))
    info = open_scene(scene)
    lons = [3.0, 3.0 + width * DEG, 3.0 + width * DEG, 3.0]
    lats = [top, top, top - height * DEG, top - height * DEG]
    area, _ = pyproj.Geod(ellps="WGS84").polygon_area_perimeter(lons, lats)  # Karney: exact on the ellipsoid
    assert info.gsd_m ** 2 * width * height == pytest.approx(abs(area), rel=1e-3)


def test_metres_per_degree_follow_the_square_root_of_the_cosine():
    """Pixel area scales with cos(latitude): at 60 deg a degree-square pixel is sqrt(0.5) as wide as at 0."""
    crs = pyproj.CRS("EPSG:4326")
    from rasterio.crs import CRS

    geographic = CRS.from_wkt(crs.to_wkt())
    at = {lat: metres_per_unit(geographic, Affine(DEG, 0, 3.0, 0, -DEG, lat)) for lat in (0.0, 60.0)}
    assert at[60.0] / at[0.0] == pytest.approx(0.5 ** 0.5, rel=1e-2)  # the ellipsoid adds 0.5 % to the sphere


def test_projected_units_are_unchanged():
    from rasterio.crs import CRS

    assert metres_per_unit(CRS.from_epsg(32631), Affine.identity()) == 1.0
    assert metres_per_unit(CRS.from_epsg(2263), Affine.identity()) == pytest.approx(0.3048006)  # US survey foot
