"""One root error; each subclass also inherits the matching builtin (as rasterio does).

Every message names the file, what is wrong and what to do, because the CLI prints it as one line.
"""

from __future__ import annotations


class GeosegError(Exception):
    """Root of every error geoseg raises on purpose; the CLI prints these without a traceback.

    Messages are redacted when made (:func:`geoseg.remote.redact`): a scene URL's password or signature never
    reaches a terminal, a log or a manifest, wherever the message is built or shown.
    """

    def __init__(self, *args: object) -> None:
        from geoseg.remote import redact

        super().__init__(*(redact(a) if isinstance(a, str) else a for a in args))


class SceneError(GeosegError, ValueError):
    """The input scene cannot be used (no CRS, GCP-only, wrong bands, not a raster...)."""


class SceneNotFoundError(GeosegError, FileNotFoundError):
    """The input scene does not exist."""


class SceneReadError(GeosegError, OSError):
    """Reading pixels failed part-way (corrupt or truncated file)."""


class BundleError(GeosegError, ValueError):
    """A model bundle is missing, unsafe, or does not fit the scene."""


class ConfigError(GeosegError, ValueError):
    """A pipeline YAML or an option value is invalid."""


class OutputError(GeosegError, OSError):
    """An output cannot be written (exists without --overwrite, folder not writable...)."""
