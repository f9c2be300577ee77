"""Real servers on loopback for the remote-input tests: nginx (Debian's package), moto's S3 server, a tiny STAC API.

Each starts on a free port, is waited for until it accepts (never a fixed sleep) and is stopped by its fixture.
Where a server cannot be installed, the tests that need it skip and say why.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Iterator

import pytest
import rasterio.shutil

from geoseg.remote_bench import Server, free_port, serve
from tests.waiting import accepts, wait_until

# locations the tests need besides plain files: a forbidden folder and a redirect to a local file
NGINX_EXTRA = """
        location /private/ {{ return 403; }}
        location /busy/ {{ return 503; }}
        location = /to-local.tif {{ return 302 file://{local}; }}
"""


def has_nginx() -> bool:
    return bool(shutil.which("nginx") or os.path.exists("/usr/sbin/nginx"))


def make_cog(src: Path, dst: Path) -> Path:
    """A real COG (GDAL's COG driver: tiled, overviews, header first) of ``src``."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    rasterio.shutil.copy(src, dst, driver="COG", BLOCKSIZE=128, COMPRESS="DEFLATE")
    return dst


@pytest.fixture
def web(tmp_path: Path) -> Iterator[tuple[Server, Path]]:
    """nginx serving a fresh folder; yields (server, its root folder)."""
    if not has_nginx():
        pytest.skip("nginx is not installed (apt-get install nginx; .ci/run installs it)")
    root = tmp_path / "www"
    root.mkdir()
    local = tmp_path / "local-only.tif"
    with serve(root, nginx=True, extra=NGINX_EXTRA.format(local=local)) as server:
        yield server, root


@pytest.fixture
def s3(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Any]:
    """moto's standalone S3 server; GDAL and boto3 reach it through the standard AWS_* variables."""
    pytest.importorskip("moto", reason="moto[server] is in the test extra: pip install -e '.[test]'")
    boto3 = pytest.importorskip("boto3")
    port = free_port()
    log = open(tmp_path / "moto.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                            stdout=log, stderr=log)
    try:
        wait_until(lambda: accepts(port), "moto_server listening", proc=proc)
        for key, value in {"AWS_ACCESS_KEY_ID": "GEOSEGTESTKEYID0001", "AWS_SECRET_ACCESS_KEY":
                           "geoseg-test-secret-6b1f0e", "AWS_REGION": "us-east-1",
                           "AWS_DEFAULT_REGION": "us-east-1", "AWS_S3_ENDPOINT": f"127.0.0.1:{port}",
                           "AWS_HTTPS": "NO", "AWS_VIRTUAL_HOSTING": "FALSE"}.items():
            monkeypatch.setenv(key, value)
        client = boto3.client("s3", endpoint_url=f"http://127.0.0.1:{port}")
        client.create_bucket(Bucket="archive")
        yield client
    finally:
        proc.terminate()
        proc.wait()
        log.close()


class StacApi:
    """A minimal STAC API: landing page, conformance and POST /search (collections + bbox filtering)."""

    def __init__(self, items: list[dict[str, Any]]) -> None:
        self.items = items
        self.searches: list[dict[str, Any]] = []
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        api = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _send(self, doc: dict[str, Any], status: int = 200) -> None:
                body = json.dumps(doc).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:
                if self.path.rstrip("/") in ("", "/conformance"):
                    self._send(api.landing())
                else:
                    self._send({"code": "NotFound", "description": self.path}, 404)

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])) or b"{}")
                api.searches.append(body)
                self._send(api.search(body))

        return Handler

    def landing(self) -> dict[str, Any]:
        return {"type": "Catalog", "id": "test-api", "stac_version": "1.0.0", "description": "loopback STAC API",
                "conformsTo": ["https://api.stacspec.org/v1.0.0/core", "https://api.stacspec.org/v1.0.0/item-search",
                               "https://api.stacspec.org/v1.0.0/item-search#query"],
                "links": [{"rel": "self", "href": self.url + "/", "type": "application/json"},
                          {"rel": "root", "href": self.url + "/", "type": "application/json"},
                          {"rel": "search", "href": self.url + "/search", "type": "application/geo+json",
                           "method": "POST"}]}

    def search(self, body: dict[str, Any]) -> dict[str, Any]:
        west, south, east, north = body.get("bbox") or (-180, -90, 180, 90)
        found = [i for i in self.items if i["collection"] in body.get("collections", [i["collection"]])
                 and i["bbox"][0] <= east and i["bbox"][2] >= west and i["bbox"][1] <= north and i["bbox"][3] >= south]
        return {"type": "FeatureCollection", "features": found, "links": []}

    def __enter__(self) -> "StacApi":
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


def stac_item(item_id: str, href: str, collection: str = "aerial",
              bbox: tuple[float, float, float, float] = (2.9, 45.1, 3.0, 45.2)) -> dict[str, Any]:
    west, south, east, north = bbox
    return {"type": "Feature", "stac_version": "1.0.0", "id": item_id, "collection": collection, "bbox": list(bbox),
            "geometry": {"type": "Polygon", "coordinates": [[[west, south], [east, south], [east, north],
                                                             [west, north], [west, south]]]},
            "properties": {"datetime": "2024-05-01T00:00:00Z"}, "links": [],
            "assets": {"visual": {"href": href, "type": "image/tiff; application=geotiff; profile=cloud-optimized"}}}
