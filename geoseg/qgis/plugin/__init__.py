"""geoseg Processing provider for QGIS. QGIS imports this package; it must not import torch or geoseg itself."""


def classFactory(iface):  # noqa: N802 - the name QGIS calls
    from .plugin import GeosegPlugin

    return GeosegPlugin(iface)
