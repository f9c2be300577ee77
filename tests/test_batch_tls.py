"""``geoseg batch --scheduler tls://`` with certificate files: a real TLS scheduler on loopback.

The CA and the node certificate are made here with the openssl command line; the scheduler and its worker
(in this process) require encryption, so the batch only runs if the client's Security is right.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from geoseg.batch import BatchOptions, ClusterSpec, run_batch
from geoseg.cli import main
from tests.test_batch import tiny_config


@pytest.fixture
def certs(tmp_path: Path) -> dict[str, str]:
    d = tmp_path / "tls"
    d.mkdir()

    def ssl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=d, check=True, capture_output=True)

    ssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
        "-subj", "/CN=geoseg-test-ca")
    ssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "node.key", "-out", "node.csr", "-subj", "/CN=127.0.0.1")
    (d / "ext.cnf").write_text("subjectAltName=IP:127.0.0.1\n")
    ssl("x509", "-req", "-in", "node.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial", "-out", "node.pem",
        "-days", "2", "-extfile", "ext.cnf")
    return {"ca": str(d / "ca.pem"), "cert": str(d / "node.pem"), "key": str(d / "node.key")}


def test_batch_over_tls(certs: dict[str, str], tmp_path: Path, make_scene: Any, tiny_bundle: Path) -> None:
    from distributed import LocalCluster
    from distributed.security import Security

    sec = Security(tls_ca_file=certs["ca"], tls_scheduler_cert=certs["cert"], tls_scheduler_key=certs["key"],
                   tls_worker_cert=certs["cert"], tls_worker_key=certs["key"], tls_client_cert=certs["cert"],
                   tls_client_key=certs["key"], require_encryption=True)
    scene = make_scene("one.tif")
    with LocalCluster(n_workers=1, threads_per_worker=2, processes=False, protocol="tls://", host="127.0.0.1",
                      security=sec, dashboard_address=None) as cluster:
        address = cluster.scheduler_address
        assert address.startswith("tls://127.0.0.1:")
        spec = ClusterSpec(scheduler=address, tls_ca_file=certs["ca"], tls_cert=certs["cert"], tls_key=certs["key"])
        summary = run_batch(str(scene), tmp_path / "out", tiny_config(tiny_bundle), BatchOptions(), spec)
        assert [s.status for s in summary.scenes] == ["done"]

        # no certificates for a tls:// scheduler: one line, before anything is written
        result = CliRunner().invoke(main, ["batch", str(scene), "--out-dir", str(tmp_path / "o2"), "--scheduler",
                                           address])
        assert result.exit_code == 1 and "needs --tls-ca-file, --tls-cert and --tls-key" in result.stderr
        assert not (tmp_path / "o2").exists()
