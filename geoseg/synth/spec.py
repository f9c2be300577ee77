"""The scene recipe: :class:`SynthSpec` and the constants shared by the synthetic-scene modules."""

from __future__ import annotations

import functools
from dataclasses import dataclass

from affine import Affine
from pyproj import CRS

from geoseg.errors import ConfigError
from geoseg.synth.looks import LOOK_NAMES

CLASSES = ("background", "building", "road")
LAYERS = ("buildings", "roads", "road_centerlines")
DTYPES = ("uint8", "uint16", "float32")
_M_PER_DEGREE = 111_320.0


@dataclass(frozen=True)
class SynthSpec:
    """Everything that defines a synthetic scene; equal specs give byte-identical scenes.

    uint16 scenes are the uint8 look times 257 (full 0-65535 range); float32 scenes are the uint8 look / 255.
    Valid pixels are never 0, so 0 can be the nodata value of every dtype. ``rotation`` turns the pixel grid
    counter-clockwise (degrees) about ``origin``. For a geographic CRS a degree counts as 111.32 km on both
    axes (the ground look is slightly stretched east-west; labels and vectors still agree exactly).
    """

    width: int
    height: int
    seed: int = 0
    crs: str = "EPSG:32631"
    gsd: float = 0.5
    origin: tuple[float, float] | None = None
    dtype: str = "uint8"
    bands: int = 3
    nodata_border: int = 0
    density: float = 1.0
    rotation: float = 0.0
    look: str = "classic"  # a name in geoseg.synth.looks (palettes, sun, haze, confusers), or "random"

    def __post_init__(self) -> None:
        def bad(what: str) -> ConfigError:
            return ConfigError(f"SynthSpec: {what}")

        if int(self.width) < 1 or int(self.height) < 1 or int(self.seed) < 0:
            raise bad(f"width, height must be >= 1 and seed >= 0, got {self.width}x{self.height}, seed {self.seed}")
        for name in ("width", "height", "seed", "bands", "nodata_border"):  # normalised, so specs hash alike
            object.__setattr__(self, name, int(getattr(self, name)))
        if self.origin is not None:
            object.__setattr__(self, "origin", (float(self.origin[0]), float(self.origin[1])))
        if self.dtype not in DTYPES:
            raise bad(f"dtype {self.dtype!r} is not one of {', '.join(DTYPES)}")
        if not 1 <= int(self.bands) <= 16:
            raise bad(f"bands must be 1..16, got {self.bands}")
        if not self.gsd > 0:
            raise bad(f"gsd must be > 0, got {self.gsd}")
        if self.look not in LOOK_NAMES:
            raise bad(f"look {self.look!r} is not one of {', '.join(LOOK_NAMES)}")
        if self.nodata_border < 0 or self.density < 0:
            raise bad("nodata_border and density must be >= 0")
        try:
            crs = CRS.from_user_input(self.crs)
        except Exception as err:  # pyproj raises CRSError, but any failure means the same to the user
            raise bad(f"unknown CRS {self.crs!r} ({err}); use e.g. EPSG:32631") from err
        if crs.is_geographic and self.gsd > 1e-3:
            raise bad(f"gsd {self.gsd} is in degrees for the geographic CRS {self.crs}; pass e.g. 5e-6")

    @functools.cached_property
    def transform(self) -> Affine:
        """North-up (or rotated) affine of the scene's top-left pixel corner."""
        if self.origin is not None:
            x0, y0 = self.origin
        else:
            x0, y0 = (2.0, 48.0) if CRS.from_user_input(self.crs).is_geographic else (500_000.0, 5_000_000.0)
        return Affine.translation(x0, y0) @ Affine.rotation(self.rotation) @ Affine.scale(self.gsd, -self.gsd)

    @functools.cached_property
    def m_per_px(self) -> float:
        """Ground metres per pixel: object sizes are drawn in metres whatever the CRS unit."""
        crs = CRS.from_user_input(self.crs)
        if crs.is_geographic:
            return self.gsd * _M_PER_DEGREE
        return self.gsd * crs.axis_info[0].unit_conversion_factor
