"""geoseg: large GeoTIFFs in, GIS-ready building and road vectors out."""

import os

__version__ = "0.1.0"

# GDAL's block cache defaults to 5% of RAM and fills up with the blocks of every raster written, so peak memory
# would grow with the scene (DESIGN invariant 3). A bounded cache, read by GDAL on first use; users may override.
os.environ.setdefault("GDAL_CACHEMAX", "64")
