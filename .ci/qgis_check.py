"""Open geoseg outputs the way an analyst does: in QGIS (headless). Run with the system python3 that has
python3-qgis, not the project venv:  QT_QPA_PLATFORM=offscreen /usr/bin/python3 .ci/qgis_check.py OUT.gpkg [RASTER.tif]
Prints one JSON line per layer; exits 1 if any layer is invalid, empty of CRS, or unreadable."""

import json
import sys

from qgis.core import QgsApplication, QgsRasterLayer, QgsVectorLayer

app = QgsApplication([], False)
app.initQgis()
ok = True
gpkg = sys.argv[1]
for name in ("buildings", "roads"):
    layer = QgsVectorLayer(f"{gpkg}|layername={name}", name, "ogr")
    feats = list(layer.getFeatures()) if layer.isValid() else []
    valid_geoms = sum(f.geometry().isGeosValid() for f in feats)
    info = {"layer": name, "valid": layer.isValid(), "crs": layer.crs().authid(), "features": layer.featureCount(),
            "geos_valid": valid_geoms, "fields": [f.name() for f in layer.fields()],
            "extent": layer.extent().toString(2)}
    ok &= layer.isValid() and bool(info["crs"]) and valid_geoms == len(feats)
    print(json.dumps(info))
for path in sys.argv[2:]:
    layer = QgsRasterLayer(path, "raster")
    prov = layer.dataProvider() if layer.isValid() else None
    info = {"raster": path, "valid": layer.isValid(), "crs": layer.crs().authid(),
            "size": [layer.width(), layer.height()], "overviews": bool(prov and prov.hasPyramids())}
    ok &= layer.isValid() and bool(info["crs"])
    print(json.dumps(info))
app.exitQgis()
sys.exit(0 if ok else 1)
