"""The scheduled-job examples in workflows/ are valid for the tools that run them, and call only ``geoseg batch``.

Shell: ``bash -n``; YAML: ``yaml.safe_load_all``; systemd units: ``systemd-analyze verify`` (configparser
checks of the required keys run always, as the fallback where systemd-analyze is absent).
"""

from __future__ import annotations

import configparser
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from geoseg.cli.batch_cmd import _cluster_opts

WORKFLOWS = Path(__file__).resolve().parent.parent / "workflows"
SHELL = sorted([*WORKFLOWS.rglob("*.sh"), *WORKFLOWS.rglob("*.sbatch")])
YAMLS = sorted(WORKFLOWS.rglob("*.yaml"))
UNITS = sorted([*WORKFLOWS.rglob("*.service"), *WORKFLOWS.rglob("*.timer")])


def test_every_kind_of_workflow_is_there() -> None:
    names = {p.relative_to(WORKFLOWS).as_posix() for p in WORKFLOWS.rglob("*") if p.is_file()}
    assert {"README.md", "cron/crontab", "cron/geoseg-nightly.sh", "systemd/geoseg-nightly.service",
            "systemd/geoseg-nightly.timer", "slurm/geoseg-batch.sbatch", "kubernetes/cronjob.yaml"} <= names


def test_shell_syntax() -> None:
    assert SHELL
    for path in SHELL:
        result = subprocess.run(["bash", "-n", str(path)], capture_output=True, text=True)
        assert result.returncode == 0, f"{path}: {result.stderr}"
        assert os.access(path, os.X_OK), f"{path} is not executable"


def test_only_geoseg_batch_is_called() -> None:
    """Every command line naming geoseg (outside comments) runs ``geoseg batch``."""
    for path in [*SHELL, *UNITS, WORKFLOWS / "cron" / "crontab"]:
        code = [line for line in path.read_text().splitlines() if not line.lstrip().startswith("#")]
        calls = [m.group(1) for line in code for m in re.finditer(r"(?:^|[\s/\"])geoseg\s+([a-z]+)", line)]
        assert set(calls) <= {"batch"}, (path, calls)
    assert "geoseg batch" in (WORKFLOWS / "slurm" / "geoseg-batch.sbatch").read_text()


def test_cron_wrapper_runs_geoseg_batch(tmp_path: Path) -> None:
    """The wrapper really runs: with GEOSEG_BIN=echo it prints the command it would execute."""
    env = {**os.environ, "GEOSEG_BIN": "echo", "GEOSEG_LANDING": str(tmp_path / "landing"),
           "GEOSEG_RESULTS": str(tmp_path / "results"), "GEOSEG_WORKERS": "3",
           "GEOSEG_ARGS": "--pipeline p.yaml --retry-failed"}
    result = subprocess.run([str(WORKFLOWS / "cron" / "geoseg-nightly.sh")], capture_output=True, text=True,
                            env=env)
    assert result.returncode == 0, result.stderr
    assert shlex.split(result.stdout) == ["batch", str(tmp_path / "landing"), "--out-dir", str(tmp_path / "results"),
                                          "--scheduler", "processes", "--workers", "3", "--json", "--pipeline",
                                          "p.yaml", "--retry-failed"]
    assert (tmp_path / "results").is_dir()


def test_crontab_line() -> None:
    lines = [line for line in (WORKFLOWS / "cron" / "crontab").read_text().splitlines()
             if line.strip() and not line.startswith("#") and "=" not in line.split()[0]]
    assert len(lines) == 1
    fields = lines[0].split()
    assert len(fields) > 5 and all(re.fullmatch(r"[\d*/,-]+", f) for f in fields[:5])
    assert fields[5].endswith("workflows/cron/geoseg-nightly.sh")


def test_yaml_parses() -> None:
    assert YAMLS
    docs = {p.name: list(yaml.safe_load_all(p.read_text())) for p in YAMLS}
    cron = next(d for d in docs["cronjob.yaml"] if d["kind"] == "CronJob")
    container = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]
    assert container["command"][:2] == ["geoseg", "batch"]
    cluster = docs["daskcluster.yaml"][0]
    assert cluster["kind"] == "DaskCluster"
    args = cluster["spec"]["worker"]["spec"]["containers"][0]["args"]
    assert args[args.index("--resources") + 1] == "GPU=1"
    assert docs["jobqueue.yaml"][0]["jobqueue"]["slurm"]["worker-extra-args"] == ["--resources", "GPU=1"]


def test_sbatch_cluster_options_parse_as_the_cli_reads_them() -> None:
    text = (WORKFLOWS / "slurm" / "geoseg-batch.sbatch").read_text()
    assert re.search(r"^#SBATCH --time=", text, re.M)
    words = shlex.split(text.split("exec geoseg", 1)[1].replace("\\\n", " ").splitlines()[0])
    opts = _cluster_opts(tuple(words[i + 1] for i, w in enumerate(words) if w == "--cluster-opt"))
    assert opts["worker_extra_args"] == ["--resources", "GPU=1"]
    assert opts["job_extra_directives"] == ["--gres=gpu:1"] and opts["cores"] == 8
    assert words[words.index("--cluster") + 1] == "slurm"


def test_systemd_units(tmp_path: Path) -> None:
    units = {}
    for path in UNITS:
        parser = configparser.ConfigParser(strict=False, interpolation=None)
        parser.optionxform = str  # type: ignore[assignment,method-assign]  # systemd keys are case-sensitive
        parser.read_string(path.read_text())
        units[path.name] = parser
    service, timer = units["geoseg-nightly.service"], units["geoseg-nightly.timer"]
    assert service["Service"]["Type"] == "oneshot"
    exec_start = shlex.split(service["Service"]["ExecStart"])
    assert Path(exec_start[0]).name == "geoseg" and exec_start[1] == "batch"
    assert timer["Timer"]["OnCalendar"] and timer["Timer"]["Unit"] == "geoseg-nightly.service"
    assert timer["Install"]["WantedBy"] == "timers.target"

    analyze = shutil.which("systemd-analyze")
    if analyze is None:  # configparser checks above are all this machine can do
        return
    # the unit names /opt/geoseg/...; point it at this environment's geoseg so the executable check can pass
    geoseg = Path(sys.executable).parent / "geoseg"
    assert geoseg.exists()
    for path in UNITS:
        (tmp_path / path.name).write_text(path.read_text().replace(exec_start[0], str(geoseg)))
    result = subprocess.run([analyze, "verify", *(str(tmp_path / p.name) for p in UNITS)], capture_output=True,
                            text=True)
    assert result.returncode == 0, result.stderr
    assert not re.search(r"Unknown (key|section)|Invalid|Failed to parse", result.stderr), result.stderr
