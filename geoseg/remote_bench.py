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


ORDER = ("local", "remote", "remote", "local")  # ABBA: warm-up and drift fall on both sides alike


def bench_infer_remote(size: int, config: Any, folder: Path | None = None, vectors: bool = True) -> dict[str, Any]:
    """``infer`` on the bench scene (as a COG) from disk and over loopback HTTP, in ABBA order, then a read-only
    pass of every block both ways (the I/O path alone); Mpx/s per side from its total time."""
    from geoseg.bench import bench_scene
    from geoseg.remote import clear_cache

    with tempfile.TemporaryDirectory() as tmp:
        work = folder or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        cog = _bench_cog(bench_scene(size, work))
        # untimed: torch, the model and the thread pools start once, not inside the first timed run
        _one_infer(str(_bench_cog(bench_scene(256, work))), Path(tmp) / "warm-up", config, vectors, None)
        with serve(cog.parent) as server:
            paths = {"local": str(cog), "remote": f"{server.url}/{cog.name}"}
            runs = []
            for i, where in enumerate(ORDER):
                clear_cache()  # each remote run fetches what it reads
                runs.append((where, *_one_infer(paths[where], Path(tmp) / f"{i}-{where}", config, vectors, server)))
            reads = []
            for where in ORDER:
                clear_cache()
                reads.append((where, _read_all(paths[where], config)))
            kind = server.kind
    size_b = cog.stat().st_size
    mpx = runs[0][2]["megapixels"]
    side: dict[str, dict[str, Any]] = {w: {"wall_s": [r[2]["wall_s"] for r in runs if r[0] == w]}
                                       for w in ("local", "remote")}
    for w, d in side.items():
        d["mpx_per_s"] = round(mpx * len(d["wall_s"]) / sum(d["wall_s"]), 3)
    read_rate = {w: round(mpx * 2 / sum(s for x, s in reads if x == w), 2) for w in ("local", "remote")}
    fetched = max(r[2]["bytes"] for r in runs if r[0] == "remote")
    return {
        "bench": "infer-remote", "size": size, "megapixels": round(mpx, 2), "server": kind, "order": list(ORDER),
        "file_bytes": size_b, "bytes_fetched": fetched, "bytes_fetched_per_file_size": round(fetched / size_b, 3),
        "identical_outputs": len({r[1] for r in runs}) == 1, **side,
        "remote_over_local_mpx_per_s": round(side["remote"]["mpx_per_s"] / side["local"]["mpx_per_s"], 3),
        "read_only_mpx_per_s": read_rate,
        "read_only_remote_over_local": round(read_rate["remote"] / read_rate["local"], 3),
        "scheduler": config.scheduler, "workers": config.workers, "device": config.device,
    }


def _one_infer(path: str, out: Path, config: Any, vectors: bool, server: Server | None
               ) -> tuple[str, dict[str, Any]]:
    from geoseg.infer import infer

    out.mkdir(parents=True)
    sent = server.bytes_sent() if server else 0
    summary = infer(path, out / "v.gpkg" if vectors else None, config, raster_out=out / "c.tif", overwrite=True)
    digest = hashlib.sha256(repr(_contents(out)).encode()).hexdigest()
    return digest, {"wall_s": round(summary.seconds, 2), "megapixels": summary.megapixels,
                    "bytes": server.bytes_sent() - sent if server else 0}


def _bench_cog(scene: Path) -> Path:
    """The bench scene as a COG (what archives serve), made once beside it."""
    import rasterio.shutil

    from geoseg.tempfiles import atomic_path

    cog = scene.with_name(f"{scene.stem}_cog.tif")
    if not cog.exists():
        with atomic_path(cog) as tmp:
            rasterio.shutil.copy(scene, tmp, driver="COG", COMPRESS="DEFLATE", PREDICTOR="YES", BLOCKSIZE=512)
    return cog


def _contents(folder: Path) -> tuple[str, dict[str, list[bytes]]]:
    """The class raster's pixels (digest) and every vector layer's geometries (sorted WKB)."""
    import geopandas as gpd
    import rasterio

    h = hashlib.sha256()
    with rasterio.open(folder / "c.tif") as src:
        for _, win in src.block_windows(1):
            h.update(src.read(window=win).tobytes())
    layers: dict[str, list[bytes]] = {}
    gpkg = folder / "v.gpkg"
    if gpkg.exists():
        listed = gpd.list_layers(gpkg)
        for name in listed[listed["geometry_type"].notna()]["name"]:
            layers[name] = sorted(gpd.read_file(gpkg, layer=name).geometry.to_wkb().tolist())
    return h.hexdigest(), layers


def _read_all(path: str, config: Any) -> float:
    """Every block window of a 1024-px plan read through :func:`geoseg.scene.read_block`, on the threads
    ``infer`` would use: the reading alone."""
    from concurrent.futures import ThreadPoolExecutor

    from rasterio.windows import Window

    from geoseg.predict import cpu_count
    from geoseg.scene import open_scene, read_block

    info = open_scene(path)
    block, halo = config.block_size or 1024, 64
    jobs = [Window(c - halo, r - halo, min(block, info.width - c) + 2 * halo, min(block, info.height - r) + 2 * halo)
            for r in range(0, info.height, block) for c in range(0, info.width, block)]
    bands = tuple(range(1, info.data_bands + 1))

    def read(job: Window) -> int:
        data, _ = read_block(info, bands, job)
        return int(data.size)

    t0 = time.perf_counter()
    with ThreadPoolExecutor(config.workers or cpu_count()) as pool:
        list(pool.map(read, jobs))
    return time.perf_counter() - t0
