"""`slowctl init`: .env with random secrets and TLS material; idempotent, never overwrites."""

from __future__ import annotations

import re
import shutil
import ssl
import stat
import subprocess
import sys

import pytest
from cryptography import x509
from tests.harness import REPO

from slowctl.stack.init import OPTIONAL, read_env


@pytest.fixture
def project(tmp_path):
    (tmp_path / "config").mkdir()
    shutil.copy(REPO / "config" / "bench.yaml", tmp_path / "config" / "bench.yaml")
    return tmp_path


def init(project, *args):
    return subprocess.run(
        [sys.executable, "-m", "slowctl", "init", "--config", "config/bench.yaml", *args],
        cwd=project,
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_writes_every_variable_with_random_secrets(project):
    r = init(project, "--hostname", "dcs.lab.example")
    assert r.returncode == 0, r.stderr
    env = read_env(project / ".env")
    example = set(re.findall(r"^([A-Z_0-9]+)=", (REPO / ".env.example").read_text(), re.M))
    assert set(env) == example - set(OPTIONAL), "everything but the optional notification settings"
    assert stat.S_IMODE((project / ".env").stat().st_mode) == 0o600
    secrets = {k: v for k, v in env.items() if re.search("PASSWORD|TOKEN|SECRET", k)}
    assert len(secrets) == 21 and all(len(v) >= 32 for v in secrets.values())
    assert len(set(secrets.values())) == len(secrets), "every secret is its own"
    assert env["SLOWCTL_HOSTNAME"] == "dcs.lab.example" and env["SLOWCTL_CONFIG"] == "bench.yaml"


def test_second_run_changes_nothing_and_fills_only_gaps(project):
    init(project)
    first = (project / ".env").read_text()
    tls_before = {p.name: p.read_bytes() for p in (project / "secrets").glob("*/*")}
    r = init(project)
    assert "nothing changed" in r.stdout and (project / ".env").read_text() == first
    assert {p.name: p.read_bytes() for p in (project / "secrets").glob("*/*")} == tls_before
    # a hand-set value and comments stay; an emptied or missing one is filled in
    text = first.replace(read_env(project / ".env")["GRAFANA_ADMIN_PASSWORD"], "chosen-by-the-lab")
    text = re.sub(r"^INFLUXDB_TOKEN=.*$", "INFLUXDB_TOKEN=", text, flags=re.M)
    text = re.sub(r"^MONGO_PASSWORD=.*\n", "", text, flags=re.M) + "# our note\n"
    (project / ".env").write_text(text)
    r = init(project)
    assert "added INFLUXDB_TOKEN, MONGO_PASSWORD" in r.stdout, r.stdout
    env = read_env(project / ".env")
    assert env["GRAFANA_ADMIN_PASSWORD"] == "chosen-by-the-lab" and len(env["INFLUXDB_TOKEN"]) > 40
    assert "# our note" in (project / ".env").read_text()
    assert (project / ".env").read_text().count("INFLUXDB_TOKEN=") == 1


def test_new_device_gets_a_password(project):
    init(project)
    cfg = project / "config" / "bench.yaml"
    cfg.write_text(
        cfg.read_text().replace(
            "\n  lv:\n",
            "\n  lv3:\n    model: hmp4040\n    address: socket://x:5025\n"
            "    channels: {0: {name: a, vmax: 5, imax: 1}}\n  lv:\n",
            1,
        )
    )
    r = init(project)
    assert r.returncode == 0, r.stderr
    assert "added MQTT_PASSWORD_LV3" in r.stdout


def test_another_hostname_later_is_refused_not_ignored(project):
    init(project, "--hostname", "dcs.lab.example")
    before = (project / ".env").read_text()
    r = init(project, "--hostname", "new.lab.example")
    assert r.returncode == 2 and "already says SLOWCTL_HOSTNAME=dcs.lab.example" in r.stderr
    assert (project / ".env").read_text() == before
    assert init(project, "--hostname", "dcs.lab.example").returncode == 0


def test_tls_material(project):
    init(project, "--hostname", "dcs.lab.example")
    tls = project / "secrets" / "tls"
    assert stat.S_IMODE((project / "secrets" / "ca" / "ca.key").stat().st_mode) == 0o600
    assert sorted(p.name for p in tls.iterdir()) == ["ca.crt", "server.crt", "server.key"]  # what servers mount
    assert stat.S_IMODE((tls / "server.key").stat().st_mode) == 0o600
    cert = x509.load_pem_x509_certificate((tls / "server.crt").read_bytes())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert {"dcs.lab.example", "localhost"} <= set(san.get_values_for_type(x509.DNSName))
    cert.verify_directly_issued_by(x509.load_pem_x509_certificate((tls / "ca.crt").read_bytes()))
    ctx = ssl.create_default_context(cafile=str(tls / "ca.crt"))  # loads as a trust anchor
    assert ctx.cert_store_stats()["x509_ca"] == 1


def test_the_labs_own_certificate_is_kept(project, tmp_path):
    from slowctl.stack.tls import ensure_tls

    own = ensure_tls(tmp_path / "their-ca", ["dcs.lab.example"])
    tls = project / "secrets" / "tls"
    tls.mkdir(parents=True)
    shutil.copy(own.cert, tls / "server.crt")
    shutil.copy(own.key, tls / "server.key")
    init(project, "--hostname", "other.name")
    assert (tls / "server.crt").read_bytes() == own.cert.read_bytes()


def test_bad_config_refused_with_the_key_and_nothing_written(project):
    cfg = project / "config" / "bench.yaml"
    cfg.write_text(cfg.read_text().replace("model: julabo", "model: julabo9"))
    r = init(project)
    assert r.returncode == 1 and "devices.chiller.model: unknown model 'julabo9'" in r.stderr
    assert not (project / ".env").exists() and not (project / "secrets").exists()


def test_config_outside_the_mounted_directory_refused(project):
    shutil.copy(project / "config" / "bench.yaml", project / "elsewhere.yaml")
    r = subprocess.run(
        [sys.executable, "-m", "slowctl", "init", "--config", "elsewhere.yaml"],
        cwd=project,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert r.returncode == 2 and "must be in ./config" in r.stderr
    assert not (project / ".env").exists()
