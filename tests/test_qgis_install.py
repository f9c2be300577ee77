"""``geoseg qgis install/uninstall`` (no QGIS needed), and the plugin's promise never to import torch or geoseg
inside QGIS. Running the plugin in QGIS itself: tests/test_qgis.py."""

from __future__ import annotations

import ast
import json
import sys
from pathlib import Path

from click.testing import CliRunner

from geoseg.cli import main
from geoseg.qgis.install import PLUGIN_SOURCE


def test_install_reinstall_uninstall(tmp_path: Path) -> None:
    profiles = tmp_path / "profiles"
    args = ["--profile", "work", "--profiles-dir", str(profiles)]
    result = CliRunner().invoke(main, ["qgis", "install", *args])
    assert result.exit_code == 0, result.output
    target = profiles / "work" / "python" / "plugins" / "geoseg"
    assert str(target) in result.output and "qgis_process plugins enable geoseg" in result.output
    assert {"metadata.txt", "__init__.py", "provider.py", "algorithms.py", "runner.py"} <= \
        {p.name for p in target.iterdir()}
    env = json.loads((target / "geoseg_env.json").read_text())
    assert env["command"] == [sys.executable, "-m", "geoseg"] and env["prefix"] == sys.prefix
    assert "hasProcessingProvider=yes" in (target / "metadata.txt").read_text()

    (target / "left_over.py").write_text("stale")
    assert CliRunner().invoke(main, ["qgis", "install", *args]).exit_code == 0
    assert not (target / "left_over.py").exists()  # a reinstall replaces the folder
    assert [p.name for p in target.parent.iterdir()] == ["geoseg"]  # no staging folder left

    result = CliRunner().invoke(main, ["qgis", "uninstall", *args])
    assert result.exit_code == 0 and not target.exists(), result.output
    result = CliRunner().invoke(main, ["qgis", "uninstall", *args])
    assert result.exit_code == 0 and "nothing to remove" in result.output


def test_uninstall_refuses_a_foreign_plugin(tmp_path: Path) -> None:
    other = tmp_path / "default" / "python" / "plugins" / "geoseg"
    other.mkdir(parents=True)
    (other / "mine.py").write_text("someone else's")
    result = CliRunner().invoke(main, ["qgis", "uninstall", "--profiles-dir", str(tmp_path)])
    assert result.exit_code == 1 and "not a plugin installed by 'geoseg qgis install'" in result.stderr
    assert (other / "mine.py").exists()


def test_plugin_imports_only_qgis_and_the_standard_library() -> None:
    allowed = set(sys.stdlib_module_names) | {"qgis", "osgeo"}
    for source in PLUGIN_SOURCE.glob("*.py"):
        tree = ast.parse(source.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                roots = {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                roots = {(node.module or "").split(".")[0]}
            else:
                continue
            assert roots <= allowed, (source.name, roots)
