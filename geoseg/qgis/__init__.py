"""geoseg in QGIS: a Processing provider (``plugin/``, run by QGIS's own Python, never importing torch or geoseg)
and the installer that copies it into a QGIS profile (:mod:`geoseg.qgis.install`)."""
