"""``geoseg bench infer --remote``: the bench scene read over loopback HTTP against the same scene on disk.

A real HTTP server serves the scene: nginx when installed (what an archive's web server or a CDN is like), else
a range-capable server from the standard library. Reported: whether the outputs are identical, the bytes the
server sent against the file's size (range reads should fetch about one copy of the pixels), and Mpx/s remote
against local, measured in one run.

:func:`serve` is also the tests' server (tests/test_remote.py): one launcher for both.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.server
import os
import re
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

_NGINX_CONF = """
daemon off;
master_process off;
worker_processes 1;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 256; }}
http {{
    types {{ image/tiff tif tiff; application/json json; }}
    default_type application/octet-stream;
    log_format counted '$status $body_bytes_sent $request_method $uri $http_range';
    access_log {prefix}/access.log counted;
    client_body_temp_path {prefix}/body; proxy_temp_path {prefix}/proxy; fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi; scgi_temp_path {prefix}/scgi;
    server {{
        listen 127.0.0.1:{port};
        root {root};
        location /norange/ {{ max_ranges 0; }}
        {extra}
    }}
}}
"""


@dataclass
class Server:
    """A loopback HTTP server over a folder: ``url`` is its root; ``bytes_sent()`` counts body bytes served."""

    url: str
    kind: str
    bytes_sent: Callable[[], int]
    stop: Callable[[], None] = field(repr=False)
    log: str = ""  # nginx's access log (status, bytes, method, path per request)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_listening(port: int, proc: subprocess.Popen[bytes] | None = None, errors: Path | None = None) -> None:
    """Until the port accepts (or the process died): the server's own start time, never a fixed sleep."""
    while True:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        if proc is not None and proc.poll() is not None:
            said = errors.read_text()[-500:] if errors is not None and errors.exists() else ""
            raise RuntimeError(f"nginx exited with {proc.returncode} before listening: {said}")
        threading.Event().wait(0.02)


@contextlib.contextmanager
def serve(root: str | os.PathLike[str], *, nginx: bool | None = None, extra: str = "") -> Iterator[Server]:
    """Serve ``root`` on 127.0.0.1 (a free port): nginx if ``nginx`` is not False and it is installed, else the
    standard library's server with range support. ``extra``: nginx location blocks (tests: 403s, redirects)."""
    binary = shutil.which("nginx") or next((p for p in ("/usr/sbin/nginx", "/sbin/nginx") if os.path.exists(p)),
                                           None)
    if nginx is not False and binary:
        with _nginx(binary, Path(root), extra) as server:
            yield server
    elif nginx:
        raise RuntimeError("nginx is not installed (apt-get install nginx)")
    else:
        with _python_server(Path(root)) as server:
            yield server


@contextlib.contextmanager
def _nginx(binary: str, root: Path, extra: str) -> Iterator[Server]:
    with tempfile.TemporaryDirectory(prefix="geoseg-nginx-") as prefix:
        port = free_port()
        conf = Path(prefix) / "nginx.conf"
        conf.write_text(_NGINX_CONF.format(prefix=prefix, port=port, root=root.resolve(), extra=extra))
        log = Path(prefix) / "access.log"
        proc = subprocess.Popen([binary, "-p", prefix, "-c", str(conf), "-e", f"{prefix}/error.log"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        try:
            _wait_listening(port, proc, Path(prefix) / "error.log")

            def sent() -> int:
                text = log.read_text() if log.exists() else ""
                return sum(int(m.group(1)) for m in re.finditer(r"^\d+ (\d+) ", text, re.M))

            yield Server(f"http://127.0.0.1:{port}", "nginx", sent, proc.terminate, str(log))
        finally:
            proc.terminate()
            proc.wait()


class _RangeHandler(http.server.SimpleHTTPRequestHandler):
    """The standard library's file server plus single-range GETs (what GDAL asks for), counting body bytes."""

    counter: list[int]

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def send_head(self) -> Any:
        spec = self.headers.get("Range", "")
        match = re.fullmatch(r"bytes=(\d+)-(\d*)", spec.strip())
        path = Path(self.translate_path(self.path))
        if not match or not path.is_file():
            return super().send_head()
        size = path.stat().st_size
        start, end = int(match.group(1)), min(int(match.group(2) or size - 1), size - 1)
        if start >= size:
            self.send_error(416)
            return None
        f = open(path, "rb")
        f.seek(start)
        self.send_response(206)
        self.send_header("Content-Type", "image/tiff")
        self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        self.send_header("Content-Length", str(end - start + 1))
        self.send_header("Accept-Ranges", "bytes")
        self.end_headers()
        self._remaining = end - start + 1
        return f

    def copyfile(self, source: Any, outputfile: Any) -> None:
        remaining = getattr(self, "_remaining", None)
        while remaining is None or remaining > 0:
            chunk = source.read(1 << 16 if remaining is None else min(1 << 16, remaining))
            if not chunk:
                break
            outputfile.write(chunk)
            self.counter[0] += len(chunk)
            if remaining is not None:
                remaining -= len(chunk)


@contextlib.contextmanager
def _python_server(root: Path) -> Iterator[Server]:
    counter = [0]
    handler = type("Handler", (_RangeHandler,), {"counter": counter})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), lambda *a: handler(*a, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield Server(f"http://127.0.0.1:{server.server_address[1]}", "python", lambda: counter[0], server.shutdown)
    finally:
        server.shutdown()
        server.server_close()


def _digest(paths: list[Path]) -> str:
    h = hashlib.sha256()
    for p in paths:
        import rasterio

        with rasterio.open(p) as src:  # pixels, not file bytes (a COG's header holds no path, but be exact)
            for _, win in src.block_windows(1):
                h.update(src.read(window=win).tobytes())
    return h.hexdigest()


def bench_remote(scene: Path, run: Callable[[str, Path], float], workdir: Path) -> dict[str, Any]:
    """``run(scene_path_or_url, out_folder) -> seconds``, on disk then over HTTP; outputs compared by content."""
    import geopandas as gpd

    out: dict[str, Any] = {}
    results = {}
    with serve(scene.parent) as server:
        for where, path in (("local", str(scene)), ("remote", f"{server.url}/{scene.name}")):
            folder = workdir / where
            folder.mkdir(parents=True, exist_ok=True)
            before = server.bytes_sent()
            t0 = time.perf_counter()
            seconds = run(path, folder)
            out[f"{where}_s"] = round(seconds or time.perf_counter() - t0, 3)
            if where == "remote":
                out["bytes_fetched"] = server.bytes_sent() - before
            rasters = sorted(folder.glob("*.tif"))
            vectors = sorted(folder.glob("*.gpkg"))
            results[where] = (_digest(rasters), [gpd.read_file(v, layer=None).to_wkb().values.tolist()
                                                  for v in vectors])
        out["server"] = server.kind
    mpx = _mpx(scene)
    size = scene.stat().st_size
    out.update({"file_bytes": size, "bytes_fetched_per_file_size": round(out["bytes_fetched"] / size, 3),
                "mpx": round(mpx, 3), "local_mpx_per_s": round(mpx / out["local_s"], 3),
                "remote_mpx_per_s": round(mpx / out["remote_s"], 3),
                "remote_over_local_mpx_per_s": round(out["local_s"] / out["remote_s"], 3),
                "identical_outputs": results["local"] == results["remote"]})
    return out


def _mpx(scene: Path) -> float:
    import rasterio

    with rasterio.open(scene) as src:
        return src.width * src.height / 1e6
