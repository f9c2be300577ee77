"""geoseg: large GeoTIFFs in, GIS-ready building and road vectors out.

Importing geoseg changes nothing in the process: the process-wide settings (GDAL's cache, torch's huge pages,
OpenCV's threads, rasterio's warnings) are one explicit step, :func:`geoseg.startup.configure`, which the
``geoseg`` command runs at start. The data flow, the vocabulary and the invariants the code cites by name are in
the README's "How it works".
"""

__version__ = "0.1.0"
