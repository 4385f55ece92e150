"""The gateway template: one file for compose (envsubst) and the native stack (slowctl.gateway.render)."""

import os
import re
import shutil
import subprocess

import pytest

from slowctl.stack import gateway
from slowctl.stack.tls import ensure_tls

NGINX_VARS = {
    "$host",
    "$request_uri",
    "$http_upgrade",
    "$connection_upgrade",
    "$http_host",
    "$remote_addr",
    "$proxy_add_x_forwarded_for",
    "$scheme",
    "$nodered",
    "$grafana",
    "$mqtt",
}

COMPOSE_ENV = {  # what the compose gateway service sets (docs/control-ui.md)
    "GATEWAY_HTTPS_LISTEN": "443",
    "GATEWAY_HTTP_LISTEN": "80",
    "GATEWAY_HTTPS_PORT": "443",
    "GATEWAY_TLS_CERT": "/etc/slowctl/tls/server.crt",
    "GATEWAY_TLS_KEY": "/etc/slowctl/tls/server.key",
    "GATEWAY_NODERED_UPSTREAM": "nodered:1880",
    "GATEWAY_GRAFANA_UPSTREAM": "grafana:3000",
    "GATEWAY_MQTT_WS_UPSTREAM": "mosquitto:9001",
    "GATEWAY_RESOLVER": "127.0.0.11",
    "GATEWAY_HSTS_MAX_AGE": "31536000",
}


@pytest.fixture(scope="module")
def template():
    return gateway.template_text()


def test_render_fills_only_the_placeholders(template):
    out = gateway.render(template, COMPOSE_ENV)
    assert "${" not in out
    for var in NGINX_VARS:
        assert var in out, var
    assert "listen 443 ssl;" in out and "set $nodered nodered:1880;" in out


def test_render_refuses_missing_unused_and_odd_values(template):
    partial = dict(COMPOSE_ENV)
    del partial["GATEWAY_RESOLVER"]
    with pytest.raises(gateway.GatewayError, match="no value for GATEWAY_RESOLVER"):
        gateway.render(template, partial)
    with pytest.raises(gateway.GatewayError, match="no placeholder for GATEWAY_EXTRA"):
        gateway.render(template, {**COMPOSE_ENV, "GATEWAY_EXTRA": "x"})
    for bad in ("", "a b", "x; include /etc/passwd", "a}"):
        with pytest.raises(gateway.GatewayError, match="not a plain value"):
            gateway.render(template, {**COMPOSE_ENV, "GATEWAY_TLS_CERT": bad})


def test_the_compose_rendering_is_the_same(template, tmp_path):
    """The official nginx image runs envsubst with the container's environment: same result as ours."""
    if not shutil.which("envsubst"):
        pytest.skip("envsubst (gettext-base) not installed")
    env = {**COMPOSE_ENV, "PATH": os.environ["PATH"], "HOSTNAME": "gw", "HOME": "/root"}
    names = " ".join(f"${{{k}}}" for k in env)  # what the image's 20-envsubst-on-templates.sh does
    out = subprocess.run(
        ["envsubst", names], input=template, capture_output=True, text=True, env=env, check=True
    ).stdout
    assert out == gateway.render(template, COMPOSE_ENV)


def test_nginx_accepts_both_renderings(template, tmp_path):
    nginx = gateway.find_nginx()
    if not nginx:
        pytest.skip("nginx not installed")
    tls = ensure_tls(tmp_path / "tls", ["localhost"])
    native = gateway.native_values(
        bind="127.0.0.1",
        https_port=18443,
        http_port=18080,
        nodered="127.0.0.1:1880",
        grafana="127.0.0.1:3000",
        mqtt_ws="127.0.0.1:9001",
        cert=tls.cert,
        key=tls.key,
    )
    gateway.write_native(tmp_path / "native", native)
    gateway.check(nginx, tmp_path / "native")
    conf = (tmp_path / "native" / "nginx.conf").read_text()
    assert "daemon off;" in conf and str(tmp_path / "native" / "nginx.pid") in conf
    # the compose values (host names resolved per request: nginx -t needs no DNS), cert paths made real
    compose = {**COMPOSE_ENV, "GATEWAY_TLS_CERT": str(tls.cert), "GATEWAY_TLS_KEY": str(tls.key)}
    gateway.write_native(tmp_path / "compose", compose)
    gateway.check(nginx, tmp_path / "compose")


def test_nginx_errors_are_reported(tmp_path):
    nginx = gateway.find_nginx()
    if not nginx:
        pytest.skip("nginx not installed")
    values = gateway.native_values(
        bind="127.0.0.1",
        https_port=18443,
        http_port=18080,
        nodered="127.0.0.1:1880",
        grafana="127.0.0.1:3000",
        mqtt_ws="127.0.0.1:9001",
        cert=tmp_path / "missing.crt",
        key=tmp_path / "missing.key",
    )
    gateway.write_native(tmp_path, values)
    with pytest.raises(gateway.GatewayError, match="missing.crt"):
        gateway.check(nginx, tmp_path)


def test_security_headers_are_server_wide(template):
    """add_header in a location would drop the server's headers there: the template has none."""
    server = template[template.index("listen ${GATEWAY_HTTPS_LISTEN}") :]
    for header in (
        "Strict-Transport-Security",
        "X-Content-Type-Options",
        "X-Frame-Options",
        "Referrer-Policy",
        "Content-Security-Policy",
    ):
        assert re.search(rf"^    add_header {header} .* always;$", server, re.M), header
    assert not re.search(r"^\s{8,}add_header", server, re.M)
