"""geoseg: large GeoTIFFs in, GIS-ready building and road vectors out."""

import os

__version__ = "0.1.0"

# GDAL's block cache defaults to 5% of RAM and fills up with the blocks of every raster written, so peak memory
# would grow with the scene (DESIGN invariant 3). A bounded cache, read by GDAL on first use; users may override.
os.environ.setdefault("GDAL_CACHEMAX", "64")
# Model activations of a large tile are hundreds of MB, freshly mapped by every forward pass; with 4 kB pages
# the kernel spent as much CPU faulting them in as the model spent computing (measured: 3.2M page faults and
# 10.7 s system time for 9.4 s user time over 8 tiles of 1024²). PyTorch's CPU allocator backs allocations of
# 2 MB and more with transparent huge pages when this is set (read once, at torch's first allocation):
# 20x fewer faults, 40% less CPU per tile. Users may override it. The CLI does better still: its malloc policy
# (geoseg.allocator) keeps those buffers in the heap between forwards, where 2 MB-aligned huge-page allocations
# would fragment it, so the policy turns this off again unless the user set it.
THP_SET_BY_USER = "THP_MEM_ALLOC_ENABLE" in os.environ
os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")
