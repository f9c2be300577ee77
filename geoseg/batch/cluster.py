"""Where a batch runs: the ``infer`` schedulers, or a cluster started through dask-jobqueue / dask-kubernetes.

Those two are optional extras, imported only when asked for; the error names the extra to install.
Nothing started here binds beyond loopback unless a deployer (SLURM, Kubernetes) needs it to.
"""

from __future__ import annotations

import logging
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Iterator

from geoseg.engine import configure_workers, dask_client
from geoseg.errors import ConfigError

CLUSTERS = ("local", "slurm", "kubernetes")
_EXTRAS = {"slurm": ("dask_jobqueue", "geoseg[slurm]", "dask-jobqueue"),
           "kubernetes": ("dask_kubernetes.operator", "geoseg[kubernetes]", "dask-kubernetes")}


@dataclass(frozen=True)
class ClusterSpec:
    """How to reach the workers: a scheduler (threads, processes, tcp://, tls://) or a deployer by name."""

    scheduler: str = "threads"
    cluster: str | None = None           # local | slurm | kubernetes
    workers: int = 2                      # local workers, SLURM jobs or Kubernetes worker pods
    options: dict[str, Any] = field(default_factory=dict)  # passed to the deployer's cluster class
    tls_ca_file: str | None = None
    tls_cert: str | None = None
    tls_key: str | None = None

    def security(self) -> Any:
        """A ``distributed.security.Security`` from the certificate files, or None without them."""
        files = (self.tls_ca_file, self.tls_cert, self.tls_key)
        if not any(files):
            return None
        if not all(files):
            raise ConfigError("TLS needs all three of --tls-ca-file, --tls-cert and --tls-key")
        from distributed.security import Security

        try:
            return Security(tls_ca_file=self.tls_ca_file, tls_client_cert=self.tls_cert,
                            tls_client_key=self.tls_key, require_encryption=True)
        except (OSError, ValueError) as err:
            raise ConfigError(f"TLS certificate files: {err}; check --tls-ca-file/--tls-cert/--tls-key") from None


def _import_deployer(cluster: str) -> Any:
    module, extra, package = _EXTRAS[cluster]
    try:
        return __import__(module, fromlist=["_"])
    except ImportError:
        raise ConfigError(f"--cluster {cluster} needs {package}: pip install '{extra}' (or pip install "
                          f"{package})") from None


def check_spec(spec: ClusterSpec) -> None:
    """Fail before any work if the cluster cannot be asked for: unknown name, conflicting options, a missing
    extra, unreadable TLS files."""
    if spec.cluster is not None and spec.cluster not in CLUSTERS:
        raise ConfigError(f"--cluster {spec.cluster}: use one of {', '.join(CLUSTERS)}")
    if spec.cluster is not None and spec.scheduler not in ("threads", "processes"):
        raise ConfigError("--cluster and --scheduler tcp://... both name a cluster; give one of them")
    if spec.cluster in _EXTRAS:
        _import_deployer(spec.cluster)
    if spec.security() is None and spec.scheduler.startswith("tls://"):
        raise ConfigError(f"--scheduler {spec.scheduler}: a tls:// scheduler needs --tls-ca-file, --tls-cert and "
                          "--tls-key")


@contextmanager
def connect(spec: ClusterSpec, verbose: bool = False) -> Iterator[Any]:
    """A ``distributed.Client`` on the cluster the spec names, closed (with any cluster started here) on exit."""
    check_spec(spec)
    if spec.cluster in (None, "local"):
        scheduler = "processes" if spec.cluster == "local" else spec.scheduler
        with dask_client(scheduler, spec.workers, verbose, security=spec.security()) as client:
            yield client
        return
    deployer = _import_deployer(spec.cluster)
    from distributed import Client

    logging.getLogger("distributed").setLevel(logging.WARNING if verbose else logging.ERROR)
    if spec.cluster == "slurm":
        # queue, account, cores, memory, walltime, job_extra_directives...: from --cluster-opt or the
        # jobqueue.slurm section of the Dask config (~/.config/dask/jobqueue.yaml)
        security = spec.security()
        options = {**({"security": security} if security is not None else {}), **spec.options}
        cluster = deployer.SLURMCluster(**options)
        cluster.scale(jobs=spec.workers)
    else:
        # image, namespace, resources...: from --cluster-opt (the image must have geoseg installed)
        options = {"name": "geoseg-batch", **spec.options}
        cluster = deployer.KubeCluster(n_workers=spec.workers, **options)
    try:
        with Client(cluster, set_as_default=False) as client:
            client.wait_for_workers(1, timeout=600)
            configure_workers(client)
            yield client
    finally:
        cluster.close()
