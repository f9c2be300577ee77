"""Run the geoseg CLI as a child process and bridge it to a Processing feedback.

The child prints ``--progress json`` events (one JSON object per line) and plain log lines on stderr; events drive
``feedback.setProgress``, log lines go to the Processing log, and ``geoseg: error: ...`` becomes the
QgsProcessingException. Cancelling sends SIGINT, the CLI's Ctrl-C path: it removes its temporary files and exits
130. A plain ``subprocess`` with reader threads is used rather than QgsBlockingProcess, whose cancel kills the
child outright (no cleanup).
"""

import json
import os
import queue
import signal
import subprocess
import sys
import threading
from pathlib import Path

from qgis.core import QgsProcessingException

ENV_FILE = Path(__file__).with_name("geoseg_env.json")
# variables QGIS sets for its own GDAL/PROJ/Python that would make the child load the wrong libraries or data
_QGIS_ONLY = ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "GDAL_DATA", "GDAL_DRIVER_PATH", "PROJ_LIB", "PROJ_DATA",
              "QGIS_PREFIX_PATH")
ERROR_PREFIX = "geoseg: error: "
POLL_S = 0.2  # how often a running child is checked for a cancel request


def geoseg_command():
    """The command recorded by ``geoseg qgis install`` (a Python and ``-m geoseg``), or [] when missing."""
    try:
        return list(json.loads(ENV_FILE.read_text(encoding="utf-8"))["command"])
    except (OSError, ValueError, KeyError, TypeError):
        return []


def child_env():
    env = {k: v for k, v in os.environ.items() if k not in _QGIS_ONLY}
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _pump(stream, tag, lines):
    for line in stream:
        lines.put((tag, line.rstrip("\n")))
    lines.put((tag, None))


def _interrupt(proc):
    if sys.platform == "win32":  # no SIGINT for a child on Windows: stop it (geoseg removes stale temps next run)
        proc.terminate()
    else:
        proc.send_signal(signal.SIGINT)


def run_geoseg(args, feedback):
    """Run ``geoseg ARGS --progress json``; return its stdout. Raises QgsProcessingException on failure or cancel."""
    command = geoseg_command()
    if not command:
        raise QgsProcessingException("geoseg is not set up for this QGIS profile: run 'geoseg qgis install' in the "
                                     "environment where geoseg is installed")
    argv = command + list(args) + ["--progress", "json"]
    feedback.pushCommandInfo(" ".join(argv))
    try:
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
                                text=True, encoding="utf-8", errors="replace", env=child_env(),
                                creationflags=getattr(subprocess, "CREATE_NO_WINDOW", 0))  # no console on Windows
    except OSError as err:
        raise QgsProcessingException(f"cannot start geoseg ({command[0]}: {err.strerror}); run 'geoseg qgis "
                                     "install' again from the environment geoseg is installed in") from None
    lines = queue.Queue()
    for stream, tag in ((proc.stdout, "out"), (proc.stderr, "err")):
        threading.Thread(target=_pump, args=(stream, tag, lines), daemon=True).start()
    out, errors, tail, open_streams, cancelled = [], [], [], 2, False
    while open_streams:
        if feedback.isCanceled() and not cancelled:
            cancelled = True
            feedback.pushInfo("cancelling geoseg: its partial outputs are removed")
            _interrupt(proc)
        try:
            tag, line = lines.get(timeout=POLL_S)
        except queue.Empty:
            continue
        if line is None:
            open_streams -= 1
        elif tag == "out":
            out.append(line)
        else:
            _handle_stderr(line, feedback, errors, tail)
    rc = proc.wait()
    proc.stdout.close()
    proc.stderr.close()
    if cancelled and rc != 0:
        raise QgsProcessingException("geoseg was cancelled; no output was written")
    if rc != 0:
        message = errors[-1] if errors else (tail[-1] if tail else f"geoseg exited with status {rc}")
        raise QgsProcessingException(message)
    return "\n".join(out)


def _handle_stderr(line, feedback, errors, tail):
    if line.startswith("{"):
        try:
            event = json.loads(line)
        except ValueError:
            event = None
        if isinstance(event, dict) and event.get("event") == "progress":
            feedback.setProgress(float(event.get("percent", 0.0)))
            return
    if line.startswith(ERROR_PREFIX):  # reported once, as the QgsProcessingException's message
        errors.append(line[len(ERROR_PREFIX):])
    elif line.strip():
        tail.append(line)
        del tail[:-20]
        feedback.pushInfo(line)
