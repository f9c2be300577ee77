"""Process-wide settings are one explicit start-up step: importing geoseg changes nothing, configure() applies
them, the CLI runs it, and Dask workers get it through a worker plugin."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from geoseg.tempfiles import atomic_path

# what a process looks like after importing geoseg (and its vectoriser and CLI), then after configure()
PROBE = """
import json, os, sys, warnings
import cv2
from rasterio.errors import NotGeoreferencedWarning
cv2.setNumThreads(3)
before = dict(os.environ)
def ours():  # the filters geoseg would add (dependencies add their own on import)
    return sum(f[2] is NotGeoreferencedWarning for f in warnings.filters)
import geoseg, geoseg.vectorize, geoseg.cli
from geoseg import startup
imported = {"env_changed": sorted(k for k in set(before) | set(os.environ) if before.get(k) != os.environ.get(k)),
            "cv2_threads": cv2.getNumThreads(), "new_filters": ours()}
startup.configure()
configured = {"gdal": os.environ.get("GDAL_CACHEMAX"), "thp": os.environ.get("THP_MEM_ALLOC_ENABLE"),
              "cv2_threads": cv2.getNumThreads(), "new_filters": ours()}
print(json.dumps({"imported": imported, "configured": configured}))
"""


def _probe(env: dict[str, str]) -> dict:
    out = subprocess.run([sys.executable, "-c", PROBE], env=env, check=True, capture_output=True, text=True)
    return json.loads(out.stdout)


def test_import_changes_nothing_and_configure_applies_every_setting() -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("GDAL_CACHEMAX", "THP_MEM_ALLOC_ENABLE")}
    seen = _probe(env)
    assert seen["imported"] == {"env_changed": [], "cv2_threads": 3, "new_filters": 0}
    assert seen["configured"]["gdal"] == "64" and seen["configured"]["thp"] == "1"
    assert seen["configured"]["cv2_threads"] == 1 and seen["configured"]["new_filters"] == 2


def test_user_settings_win() -> None:
    env = {**os.environ, "GDAL_CACHEMAX": "200", "THP_MEM_ALLOC_ENABLE": "0"}
    seen = _probe(env)["configured"]
    assert (seen["gdal"], seen["thp"]) == ("200", "0")


def test_worker_plugin_configures_worker_processes() -> None:
    from geoseg.engine import dask_client
    from geoseg.startup import worker_plugin

    def threads() -> int:
        import cv2

        return cv2.getNumThreads()

    with dask_client("processes", 1) as client:
        client.register_plugin(worker_plugin())
        seen = client.run(threads)
    assert list(seen.values()) == [1]


def _housekeeping(dask_worker: object) -> dict[str, object]:
    callbacks = dask_worker.periodic_callbacks  # type: ignore[attr-defined]
    return {"profile": "profile" in callbacks, "heartbeat": "heartbeat" in callbacks,
            "monitor_ms": callbacks["monitor"].callback_time, "tick_ms": callbacks["tick"].callback_time,
            "disk": dask_worker.monitor.monitor_disk_io}  # type: ignore[attr-defined]


def test_worker_plugin_trims_housekeeping_of_a_worker_started_without_geoseg() -> None:
    """A worker started with distributed's defaults (as a user's ``dask worker`` is) gets the lean settings
    from the plugin at run time; its heartbeats stay."""
    import dask
    from distributed import Client, LocalCluster

    from geoseg.engine import LEAN_INTERVALS_MS, configure_workers

    with dask.config.set({"distributed.worker.profile.enabled": True, "distributed.admin.system-monitor.disk": True,
                          "distributed.admin.system-monitor.interval": "500ms"}):
        cluster = LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None)
    with cluster, Client(cluster, set_as_default=False) as client:
        before = next(iter(client.run(_housekeeping).values()))
        configure_workers(client)
        after = next(iter(client.run(_housekeeping).values()))
    assert before["profile"] and before["disk"] and before["monitor_ms"] < LEAN_INTERVALS_MS["monitor"]
    assert after == {"profile": False, "heartbeat": True, "monitor_ms": LEAN_INTERVALS_MS["monitor"],
                     "tick_ms": LEAN_INTERVALS_MS["tick"], "disk": False}


def test_lean_environ_is_what_dask_reads_as_the_lean_config() -> None:
    """The ``DASK_...`` variables the README gives cluster users (and the bench's workers get) mean LEAN_CONFIG."""
    import dask

    from geoseg.engine import LEAN_CONFIG, lean_environ

    read = dask.config.collect_env(lean_environ())
    for key, value in LEAN_CONFIG.items():
        node = read
        for part in key.split("."):
            node = node[part.replace("-", "_")] if part.replace("-", "_") in node else node[part]
        assert node == value, key
    readme = " ".join((Path(__file__).parents[1] / "README.md").read_text().split())
    assert " ".join(f"{k}={v}" for k, v in lean_environ().items()) in readme  # the line users copy


def test_atomic_path_renames_when_complete_and_keeps_the_old_file_on_error(tmp_path: Path) -> None:
    target = tmp_path / "report.json"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed")
    assert target.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["report.json"]
    with atomic_path(target) as tmp:
        assert tmp.parent == tmp_path and tmp.name.startswith(".report.json.tmp-")
        tmp.write_text("new")
        assert target.read_text() == "old"  # nothing changes until the body completes
    assert target.read_text() == "new" and sorted(p.name for p in tmp_path.iterdir()) == ["report.json"]
