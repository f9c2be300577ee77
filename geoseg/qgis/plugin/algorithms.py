"""geoseg:infer, geoseg:batch and geoseg:eval: Processing algorithms that run the geoseg CLI (see runner.py).

Every parameter carries help written for a GIS analyst; outputs are loaded into the project styled (the GeoPackage's
``layer_styles``, the class raster's colour table and class names).
"""

import html
import json
import os
import uuid
from pathlib import Path

from qgis.core import (QgsProcessing, QgsProcessingAlgorithm, QgsProcessingContext, QgsProcessingException,
                       QgsProcessingLayerPostProcessorInterface, QgsProcessingOutputNumber,
                       QgsProcessingOutputVectorLayer, QgsProcessingParameterBoolean, QgsProcessingParameterEnum,
                       QgsProcessingParameterFile, QgsProcessingParameterFileDestination,
                       QgsProcessingParameterFolderDestination, QgsProcessingParameterNumber,
                       QgsProcessingParameterRasterDestination, QgsProcessingParameterRasterLayer,
                       QgsProcessingParameterString, QgsVectorLayer)

from .runner import run_geoseg

DEVICES = ["auto", "cpu", "cuda"]
GROUP = "Segmentation"


def _param(param, help_text):
    param.setHelp(help_text)
    return param


def _model_param():
    return _param(QgsProcessingParameterString("MODEL", "Model (bundle file or name)", optional=True),
                  "The trained model to use: a geoseg bundle file (.safetensors) or the name of one registered with "
                  "'geoseg models'. Leave empty for the model that comes with geoseg (buildings and roads in "
                  "0.5 m RGB imagery). The image must have the bands the model was trained on.")


def _device_param():
    return _param(QgsProcessingParameterEnum("DEVICE", "Processor", options=DEVICES, defaultValue=0),
                  "Where the model runs. auto uses an NVIDIA graphics card (CUDA) when one is available, otherwise "
                  "the CPU. cuda fails with a message if there is no usable graphics card.")


def _classes_param(default=None):
    return _param(QgsProcessingParameterString("CLASSES", "Classes", defaultValue=default, optional=default is None),
                  "Comma-separated feature classes, e.g. building,road. Leave empty for every class the model "
                  "knows.")


class _GeosegAlgorithm(QgsProcessingAlgorithm):
    def createInstance(self):  # noqa: N802
        return type(self)()

    def group(self):
        return GROUP

    def groupId(self):  # noqa: N802
        return "segmentation"

    def _common_args(self, parameters, context):
        args = []
        model = self.parameterAsString(parameters, "MODEL", context).strip()
        if model:
            args += ["--model", model]
        classes = self.parameterAsString(parameters, "CLASSES", context).replace(" ", "")
        if classes:
            args += ["--classes", classes]
        args += ["--device", DEVICES[self.parameterAsEnum(parameters, "DEVICE", context)]]
        return args


class ClassRasterStyle(QgsProcessingLayerPostProcessorInterface):
    """Applies the class raster's own QML (written beside it by geoseg) when Processing loads it."""

    instances: list = []  # Processing keeps only a raw pointer: the Python objects must outlive the algorithm

    def postProcessLayer(self, layer, context, feedback):  # noqa: N802
        qml = Path(layer.source()).with_suffix(".qml")
        if qml.is_file():
            layer.loadNamedStyle(str(qml))
            layer.triggerRepaint()

    @classmethod
    def create(cls):
        cls.instances.append(cls())
        return cls.instances[-1]


def vector_layers(gpkg):
    """Names of the spatial layers of a GeoPackage written by geoseg (not its layer_styles table)."""
    from osgeo import ogr  # QGIS ships GDAL's Python bindings

    ds = ogr.Open(str(gpkg))
    if ds is None:
        return []
    return [ds.GetLayer(i).GetName() for i in range(ds.GetLayerCount())
            if ds.GetLayer(i).GetGeomType() != ogr.wkbNone]


class InferAlgorithm(_GeosegAlgorithm):
    def name(self):
        return "infer"

    def displayName(self):  # noqa: N802
        return "Extract buildings and roads from an image"

    def shortHelpString(self):  # noqa: N802
        return ("Finds buildings and roads in an aerial or satellite image (GeoTIFF of any size) and writes them as "
                "polygons (and road centrelines) to a GeoPackage, in the image's coordinate reference system, styled "
                "for QGIS. Optionally also writes a class raster (a Cloud-Optimised GeoTIFF: 0 background, then one "
                "value per class, 255 no data), coloured and with class names.<br><br>Large images are processed "
                "in blocks with a progress bar; Cancel stops the run and leaves no partial files.")

    def initAlgorithm(self, config=None):  # noqa: N802
        self.addParameter(_param(QgsProcessingParameterRasterLayer("INPUT", "Image"),
                                 "The aerial or satellite image (GeoTIFF or COG, georeferenced). Its pixel size should "
                                 "be close to the model's (0.5 m for the bundled model)."))
        self.addParameter(_param(QgsProcessingParameterFileDestination("OUTPUT", "Buildings and roads (GeoPackage)",
                                                                       fileFilter="GeoPackage (*.gpkg)"),
                                 "The GeoPackage to write: one layer per class (buildings, roads, road_centerlines), "
                                 "with area, perimeter and a confidence score per feature."))
        self.addParameter(_param(QgsProcessingParameterRasterDestination("RASTER_OUTPUT", "Class raster",
                                                                         optional=True, createByDefault=False),
                                 "Optional: also save the per-pixel classes as a GeoTIFF (COG), coloured by class."))
        self.addParameter(_model_param())
        self.addParameter(_classes_param())
        self.addParameter(_param(QgsProcessingParameterBoolean("REGULARIZE", "Square building outlines",
                                                               defaultValue=False),
                                 "Straighten building outlines to right angles, as drawn by hand."))
        self.addParameter(_param(QgsProcessingParameterNumber("MIN_AREA_M2", "Smallest building (m²)",
                                                              type=QgsProcessingParameterNumber.Double, minValue=0,
                                                              optional=True),
                                 "Drop buildings smaller than this area in square metres (e.g. sheds, noise). Empty: "
                                 "the model's default."))
        self.addParameter(_device_param())
        for name, label in (("buildings", "Buildings"), ("roads", "Roads")):
            self.addOutput(QgsProcessingOutputVectorLayer(name.upper(), label, QgsProcessing.TypeVectorPolygon))

    def processAlgorithm(self, parameters, context, feedback):  # noqa: N802
        layer = self.parameterAsRasterLayer(parameters, "INPUT", context)
        if layer is None:
            raise QgsProcessingException(self.invalidRasterError(parameters, "INPUT"))
        scene = layer.source().split("|")[0]
        if layer.providerType() != "gdal" or not os.path.isfile(scene):
            raise QgsProcessingException(f"{layer.name()}: geoseg reads GeoTIFF files; this layer is not a local file "
                                         "(save it with Export > Save As... GeoTIFF first)")
        out = self.parameterAsFileOutput(parameters, "OUTPUT", context)
        raster = self.parameterAsOutputLayer(parameters, "RASTER_OUTPUT", context)
        args = ["infer", scene, "--out", out, "--overwrite"] + self._common_args(parameters, context)
        if raster:
            args += ["--raster-out", raster]
        if self.parameterAsBool(parameters, "REGULARIZE", context):
            args.append("--regularize")
        if parameters.get("MIN_AREA_M2") not in (None, ""):
            args += ["--min-area-m2", repr(self.parameterAsDouble(parameters, "MIN_AREA_M2", context))]
        run_geoseg(args, feedback)
        results = {"OUTPUT": out}
        for name in vector_layers(out):
            uri = f"{out}|layername={name}"
            if name.upper() in ("BUILDINGS", "ROADS"):
                results[name.upper()] = uri
            vl = QgsVectorLayer(uri, name, "ogr")  # opens with its default style from layer_styles
            if vl.isValid() and context.project() is not None:
                context.temporaryLayerStore().addMapLayer(vl)
                context.addLayerToLoadOnCompletion(vl.id(), QgsProcessingContext.LayerDetails(name, context.project(),
                                                                                              "OUTPUT"))
        if raster:
            results["RASTER_OUTPUT"] = raster
            if context.willLoadLayerOnCompletion(raster):
                context.layerToLoadOnCompletionDetails(raster).setPostProcessor(ClassRasterStyle.create())
        return results


class BatchAlgorithm(_GeosegAlgorithm):
    def name(self):
        return "batch"

    def displayName(self):  # noqa: N802
        return "Extract buildings and roads from many images"

    def shortHelpString(self):  # noqa: N802
        return ("Runs the extraction over every image of a folder (searched recursively for .tif/.tiff), a text file "
                "listing one image path per line, or a STAC catalog / item collection JSON file. Each image gets its "
                "own GeoPackage (and class raster) in the output folder. Images already done with the same model and "
                "settings are skipped, so a stopped run resumes where it stopped; an image that fails is reported "
                "and the others continue.")

    def initAlgorithm(self, config=None):  # noqa: N802
        self.addParameter(_param(QgsProcessingParameterString("INPUT", "Images (folder, list or STAC file)"),
                                 "A folder of GeoTIFFs, a .txt file with one image path per line, or a STAC JSON "
                                 "file (catalog or item collection) on disk."))
        self.addParameter(_param(QgsProcessingParameterFolderDestination("OUTPUT_DIR", "Output folder"),
                                 "Where each image's results go (<image>.gpkg, <image>_classes.tif), with the run's "
                                 "record (geoseg-batch.sqlite) and summary (JSON)."))
        self.addParameter(_param(QgsProcessingParameterBoolean("CLASS_RASTERS", "Also write class rasters",
                                                               defaultValue=True),
                                 "Write <image>_classes.tif (coloured class raster) next to each GeoPackage."))
        self.addParameter(_param(QgsProcessingParameterBoolean("RETRY_FAILED", "Retry images that failed before",
                                                               defaultValue=False),
                                 "Images that failed in an earlier run into this folder are skipped unless this is "
                                 "checked."))
        self.addParameter(_model_param())
        self.addParameter(_classes_param())
        self.addParameter(_device_param())
        self.addOutput(QgsProcessingOutputNumber("DONE", "Images done"))
        self.addOutput(QgsProcessingOutputNumber("FAILED", "Images failed"))

    def processAlgorithm(self, parameters, context, feedback):  # noqa: N802
        source = self.parameterAsString(parameters, "INPUT", context).strip()
        out_dir = self.parameterAsString(parameters, "OUTPUT_DIR", context)
        outputs = "vectors,classes" if self.parameterAsBool(parameters, "CLASS_RASTERS", context) else "vectors"
        args = ["batch", source, "--out-dir", out_dir, "--outputs", outputs, "--json", "--no-fail-exit"]
        if self.parameterAsBool(parameters, "RETRY_FAILED", context):
            args.append("--retry-failed")
        summary = json.loads(run_geoseg(args + self._common_args(parameters, context), feedback) or "{}")
        for scene in summary.get("scenes", []):
            if scene.get("status") in ("failed", "quarantined"):
                feedback.reportError(f"{scene['name']}: {scene.get('reason')}", fatalError=False)
        counts = summary.get("counts", {})
        return {"OUTPUT_DIR": out_dir, "DONE": counts.get("done", 0),
                "FAILED": counts.get("failed", 0) + counts.get("quarantined", 0)}


class EvalAlgorithm(_GeosegAlgorithm):
    def name(self):
        return "eval"

    def displayName(self):  # noqa: N802
        return "Score extracted buildings and roads against reference data"

    def shortHelpString(self):  # noqa: N802
        return ("Compares a result of the extraction with reference (ground-truth) data and reports, per class, how "
                "much of the area agrees (IoU, precision, recall, F1), how many buildings were found one-to-one, and "
                "how well the road network connects (APLS). Writes an HTML or JSON report.")

    def initAlgorithm(self, config=None):  # noqa: N802
        files = "GeoPackage or GeoTIFF (*.gpkg *.tif *.tiff)"
        self.addParameter(_param(QgsProcessingParameterFile("PRED", "Result to score", fileFilter=files),
                                 "The GeoPackage (or class raster) written by the extraction."))
        self.addParameter(_param(QgsProcessingParameterFile("TRUTH", "Reference data", fileFilter=files),
                                 "Reference features: a GeoPackage with one layer per class (buildings, roads) or a "
                                 "class raster with the same class values."))
        self.addParameter(_classes_param("building,road"))
        self.addParameter(_param(QgsProcessingParameterFileDestination(
            "OUTPUT", "Report", fileFilter="HTML report (*.html);;JSON (*.json)"),
            "The scores as an HTML page (shown in the Results Viewer) or as JSON for other tools."))

    def processAlgorithm(self, parameters, context, feedback):  # noqa: N802
        pred = self.parameterAsFile(parameters, "PRED", context)
        truth = self.parameterAsFile(parameters, "TRUTH", context)
        classes = self.parameterAsString(parameters, "CLASSES", context).replace(" ", "") or "building,road"
        out = self.parameterAsFileOutput(parameters, "OUTPUT", context)
        scores = json.loads(run_geoseg(["eval", "--pred", pred, "--truth", truth, "--classes", classes, "-q"],
                                       feedback))
        text = html_report(scores, pred, truth) if out.lower().endswith((".html", ".htm")) else \
            json.dumps(scores, indent=1) + "\n"
        # the plugin runs in QGIS's Python, where geoseg (and its tempfiles.atomic_path) is not importable
        tmp = Path(out).with_name(f".{Path(out).name}.tmp-{uuid.uuid4().hex[:8]}")
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, out)
        return {"OUTPUT": out}


def html_report(scores, pred, truth):
    """One table: a row per score, a column per class."""
    classes = list(scores)
    names = sorted({k for s in scores.values() for k in s})
    head = "".join(f"<th>{html.escape(c)}</th>" for c in classes)

    def cell(value):
        return f"<td>{value:.3f}</td>" if isinstance(value, float) else f"<td>{html.escape(str(value))}</td>"

    rows = "".join(f"<tr><th align='left'>{html.escape(n)}</th>"
                   + "".join(cell(scores[c].get(n, "")) for c in classes) + "</tr>" for n in names)
    return (f"<html><head><meta charset='utf-8'><title>geoseg eval</title></head><body><h2>geoseg eval</h2>"
            f"<p>{html.escape(pred)} against {html.escape(truth)}</p><table border='1'><tr><th>score</th>{head}"
            f"</tr>{rows}</table></body></html>\n")
