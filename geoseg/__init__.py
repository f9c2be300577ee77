"""geoseg: large GeoTIFFs in, GIS-ready building and road vectors out."""

__version__ = "0.1.0"
