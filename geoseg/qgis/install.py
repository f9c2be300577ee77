"""Copy the QGIS plugin into a QGIS profile and record which geoseg it runs.

The plugin calls the geoseg CLI as a subprocess, with the Python of the environment it was installed from (stored
in ``geoseg_env.json`` beside the plugin), so QGIS's own Python needs neither torch nor geoseg.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

from geoseg import __version__
from geoseg.errors import OutputError
from geoseg.tempfiles import atomic_path

PLUGIN_NAME = "geoseg"
ENV_FILE = "geoseg_env.json"
PLUGIN_SOURCE = Path(__file__).with_name("plugin")


def default_profiles_dir() -> Path:
    """Where QGIS 3 keeps its user profiles on this platform (QStandardPaths' AppDataLocation + QGIS3)."""
    if sys.platform == "win32":
        return Path(os.environ.get("APPDATA", Path.home() / "AppData" / "Roaming")) / "QGIS" / "QGIS3" / "profiles"
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Application Support" / "QGIS" / "QGIS3" / "profiles"
    data = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(data) / "QGIS" / "QGIS3" / "profiles"


def plugin_dir(profile: str = "default", profiles_dir: str | os.PathLike[str] | None = None) -> Path:
    """``<profiles>/<profile>/python/plugins/geoseg``."""
    root = Path(profiles_dir) if profiles_dir else default_profiles_dir()
    return root / profile / "python" / "plugins" / PLUGIN_NAME


def geoseg_command() -> list[str]:
    """How the plugin starts this environment's geoseg: its Python (unresolved, so a venv stays a venv)."""
    return [sys.executable, "-m", "geoseg"]


def install(profile: str = "default", profiles_dir: str | os.PathLike[str] | None = None) -> Path:
    """Install (or replace) the plugin in ``profile``; returns its folder. The copy is staged beside the target
    and renamed into place, so QGIS never sees half a plugin."""
    target = plugin_dir(profile, profiles_dir)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(target) as stage:
            shutil.copytree(PLUGIN_SOURCE, stage, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
            env = {"command": geoseg_command(), "geoseg_version": __version__, "prefix": sys.prefix}
            (stage / ENV_FILE).write_text(json.dumps(env, indent=1) + "\n", encoding="utf-8")
            if target.exists():  # a folder is renamed only onto nothing
                shutil.rmtree(target)
    except OSError as err:
        raise OutputError(f"{target}: cannot install the QGIS plugin ({err.strerror or err}); check the profile "
                          "folder or pass --profiles-dir") from None
    return target


def uninstall(profile: str = "default", profiles_dir: str | os.PathLike[str] | None = None) -> Path | None:
    """Remove the plugin from ``profile``; returns the folder removed, or None if it was not installed."""
    target = plugin_dir(profile, profiles_dir)
    if not target.exists():
        return None
    if not (target / "metadata.txt").is_file() or not (target / ENV_FILE).is_file():
        raise OutputError(f"{target}: is not a plugin installed by 'geoseg qgis install'; remove it by hand")
    shutil.rmtree(target)
    return target
