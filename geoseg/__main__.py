"""``python -m geoseg`` runs the CLI."""

from geoseg.cli import entry

entry()
