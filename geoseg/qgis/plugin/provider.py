"""The ``geoseg`` Processing provider: its algorithms, and whether the geoseg it calls is there."""

from qgis.core import QgsProcessingProvider

from .algorithms import BatchAlgorithm, EvalAlgorithm, InferAlgorithm
from .runner import geoseg_command


class GeosegProvider(QgsProcessingProvider):
    def id(self):
        return "geoseg"

    def name(self):
        return "geoseg"

    def longName(self):  # noqa: N802
        return "geoseg: buildings and roads from imagery"

    def loadAlgorithms(self):  # noqa: N802
        for alg in (InferAlgorithm(), BatchAlgorithm(), EvalAlgorithm()):
            self.addAlgorithm(alg)

    def supportedOutputRasterLayerExtensions(self):  # noqa: N802 - geoseg writes Cloud-Optimised GeoTIFFs only
        return ["tif"]

    def canBeActivated(self):  # noqa: N802
        return bool(geoseg_command())

    def warningMessage(self):  # noqa: N802
        if geoseg_command():
            return ""
        return "geoseg is not set up: run 'geoseg qgis install' from the environment geoseg is installed in"
