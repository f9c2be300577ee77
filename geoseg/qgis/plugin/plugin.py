"""The plugin object QGIS holds: it registers the Processing provider (desktop and qgis_process alike)."""

from qgis.core import QgsApplication

from .provider import GeosegProvider


class GeosegPlugin:
    def __init__(self, iface):
        self.iface = iface
        self.provider = None

    def initProcessing(self):  # noqa: N802 - QGIS calls it (qgis_process too, which has no GUI)
        if self.provider is not None:  # the desktop may call it, then initGui again
            return
        self.provider = GeosegProvider()
        QgsApplication.processingRegistry().addProvider(self.provider)

    def initGui(self):  # noqa: N802
        self.initProcessing()

    def unload(self):
        if self.provider is not None:
            QgsApplication.processingRegistry().removeProvider(self.provider)
            self.provider = None
