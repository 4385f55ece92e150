"""influxdb/init/10-dbrp.sh, run with a recording stand-in for the `influx` CLI of the influxdb:2.7.12 image."""

from __future__ import annotations

import stat
import subprocess
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "influxdb" / "init" / "10-dbrp.sh"


def run(tmp_path: Path, **env: str) -> tuple[subprocess.CompletedProcess, list[str]]:
    record = tmp_path / "influx-args"
    fake = tmp_path / "bin" / "influx"
    fake.parent.mkdir()
    fake.write_text(f'#!/bin/sh\nprintf "%s\\n" "$@" > "{record}"\n')
    fake.chmod(0o755)
    full_env = {"PATH": f"{fake.parent}:/usr/bin:/bin", **env}
    result = subprocess.run(["bash", str(SCRIPT)], env=full_env, capture_output=True, text=True, timeout=10)
    return result, record.read_text().splitlines() if record.exists() else []


def test_the_image_can_run_it():
    # run-parts in the image runs executable *.sh files only
    assert SCRIPT.stat().st_mode & stat.S_IXUSR
    assert SCRIPT.read_text().startswith("#!/bin/bash\n")
    subprocess.run(["bash", "-n", str(SCRIPT)], check=True)


def test_maps_database_bucket_rp_autogen_default(tmp_path):
    result, args = run(
        tmp_path,
        DOCKER_INFLUXDB_INIT_ORG="lab",
        DOCKER_INFLUXDB_INIT_BUCKET="slowctl",
        DOCKER_INFLUXDB_INIT_BUCKET_ID="0123456789abcdef",
    )
    assert result.returncode == 0, result.stderr
    assert args[:3] == ["v1", "dbrp", "create"]
    flags = args[3:]
    assert "--default" in flags
    flags.remove("--default")
    opts = dict(zip(flags[::2], flags[1::2]))
    assert opts == {"--org": "lab", "--bucket-id": "0123456789abcdef", "--db": "slowctl", "--rp": "autogen"}


def test_refuses_to_run_without_the_setup_variables(tmp_path):
    result, args = run(tmp_path, DOCKER_INFLUXDB_INIT_ORG="lab")
    assert result.returncode != 0 and not args
    assert "DOCKER_INFLUXDB_INIT_" in result.stderr
