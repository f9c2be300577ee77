"""Run by QGIS's Python (the system python3 with python3-qgis), not by pytest: what tests/test_qgis.py checks
inside QGIS. Prints one JSON object on stdout.

  qgis_probe.py layers GPKG [RASTER]        how QGIS opens geoseg's outputs (renderers, class labels)
  qgis_probe.py load PLUGINS_DIR JSON       run geoseg:infer as the toolbox does, outputs loaded into the project
  qgis_probe.py cancel PLUGINS_DIR JSON     run geoseg:infer with JSON parameters, cancelling at the first progress
"""

import json
import sys

from qgis.core import (QgsApplication, QgsProcessingContext, QgsProcessingFeedback, QgsProject, QgsRasterLayer,
                       QgsVectorLayer)

app = QgsApplication([], False)
app.initQgis()


def layers(gpkg, raster=None):
    out = {}
    for name in ("buildings", "roads"):
        layer = QgsVectorLayer(f"{gpkg}|layername={name}", name, "ogr")
        renderer = layer.renderer() if layer.isValid() else None
        out[name] = {"valid": layer.isValid(), "crs": layer.crs().authid(), "features": layer.featureCount(),
                     "renderer": renderer.type() if renderer else None,
                     "colour": renderer.symbol().color().name() if renderer and renderer.type() == "singleSymbol"
                     else None}
    if raster:
        layer = QgsRasterLayer(raster, "classes")
        renderer = layer.renderer()
        out["raster"] = {"valid": layer.isValid(), "renderer": renderer.type(),
                         "classes": [[int(c.value), c.label, c.color.name(), c.color.alpha()]
                                     for c in renderer.classes()] if renderer.type() == "paletted" else []}
    return out


def start_plugin(plugins_dir):
    sys.path.insert(0, plugins_dir)
    import geoseg  # the plugin package, as QGIS imports it

    plugin = geoseg.classFactory(None)
    plugin.initProcessing()
    return plugin


def load(plugins_dir, params):
    """The toolbox's path: run, then Processing loads the outputs into the project (with post-processors)."""
    sys.path.insert(0, "/usr/share/qgis/python/plugins")
    import processing
    from processing.core.Processing import Processing

    Processing.initialize()
    plugin = start_plugin(plugins_dir)  # noqa: F841 - keeps the provider alive
    results = processing.runAndLoadResults("geoseg:infer", params)
    out = {"results": {k: str(v) for k, v in results.items()}, "layers": {}}
    for layer in QgsProject.instance().mapLayers().values():
        renderer = layer.renderer()
        info = {"renderer": renderer.type() if renderer else None, "features": getattr(layer, "featureCount",
                                                                                        lambda: None)()}
        if renderer and renderer.type() == "singleSymbol":
            info["colour"] = renderer.symbol().color().name()
        if renderer and renderer.type() == "paletted":
            info["classes"] = [[int(c.value), c.label, c.color.name(), c.color.alpha()] for c in renderer.classes()]
        out["layers"][layer.name()] = info
    return out


def cancel(plugins_dir, params):
    plugin = start_plugin(plugins_dir)  # noqa: F841
    alg = QgsApplication.processingRegistry().algorithmById("geoseg:infer").create()
    context = QgsProcessingContext()
    context.setProject(QgsProject.instance())
    errors = []

    class Feedback(QgsProcessingFeedback):
        def reportError(self, message, fatalError=False):  # noqa: N802 - a C++ virtual, called by alg.run
            errors.append(message)

    feedback = Feedback()
    seen = []

    def on_progress(percent):  # an event, not a timer: the first block of the scene is done
        seen.append(percent)
        if percent > 0 and not feedback.isCanceled():
            feedback.cancel()

    feedback.progressChanged.connect(on_progress)
    results, ok = alg.run(params, context, feedback)
    return {"ok": ok, "results": results or {}, "progress": seen, "cancelled": feedback.isCanceled(),
            "errors": errors}


if sys.argv[1] == "layers":
    result = layers(*sys.argv[2:])
else:
    result = {"load": load, "cancel": cancel}[sys.argv[1]](sys.argv[2], json.loads(sys.argv[3]))
print(json.dumps(result))
app.exitQgis()
