"""The trend page's archive view end to end: headless Chromium -> the real gateway -> the real Node-RED with
the generated flows -> the real InfluxDB 2 (influxd, set up by `slowctl influx-init`), read with the read-only
token file as compose hands it over. The archived points are written with Telegraf's write-only token in the
schema of docs/data-model.md; the page must draw exactly those for a range that holds them."""

import os
import time
import urllib.parse
import urllib.request

import pytest
from tests.archive.influx2 import Influx2
from tests.archive.pipeline import DB, INFLUX_ENV, influx_init

from conftest import UiStack, _need_ui
from harness import DummyStack

pytestmark = pytest.mark.stack

HOUR = 3600


def write(influx: Influx2, token: str, lines: list[str]) -> None:
    """Line protocol as Telegraf writes it (precision s), with its write-only token."""
    query = urllib.parse.urlencode({"org": INFLUX_ENV["INFLUXDB_ORG"], "bucket": DB, "precision": "s"})
    req = urllib.request.Request(f"{influx.url}/api/v2/write?{query}", data="\n".join(lines).encode(), method="POST")
    req.add_header("Authorization", f"Token {token}")
    with urllib.request.urlopen(req, timeout=10) as r:
        assert r.status == 204


@pytest.fixture(scope="module")
def ui_stack(tmp_path_factory):
    """This module's stack: the UI stack of tests/ui with an archive, two and three hours old (outside the
    live hour, inside the 6 h range)."""
    _need_ui()
    work = tmp_path_factory.mktemp("ui-archive")
    influx = Influx2(work / "influxdb").start()
    try:
        tokens = influx_init(influx, work / "tokens")
        now = int(time.time())
        lines = []
        for ago, vmon, temperature in ((3 * HOUR, 120.0, 21.0), (2 * HOUR, 123.4, 21.5)):
            t = now - ago
            lines += [
                f"supply,device=hv,channel=2,name=sensor-b,kind=hv vmon={vmon},imon=2.5e-06 {t}",
                f"environment,device=climate,channel=0,name=box temperature={temperature},dewpoint=6.5,humidity=40 {t}",
                f"chiller,device=chiller,channel=0,name=bath temperature=18.0,tset=18.0 {t}",
            ]
        write(influx, tokens["telegraf"], lines)
        stack = DummyStack(work / "stack", ui=True, records=True)
        # as compose's nodered service has it: the URL, the bucket and Grafana's read-only token file
        env = {
            "INFLUXDB_URL": influx.url,
            "INFLUXDB_BUCKET": DB,
            "INFLUXDB_READONLY_FILE": str(work / "tokens" / "grafana" / "token"),
        }
        s = stack.start(timeout=60, env={**os.environ, **env})
        try:
            yield UiStack(s)
        finally:
            s.stop()
    finally:
        influx.stop()


def legend(page, chart: str, key: str):
    return page.locator(f'[data-chart="{chart}"] .sc-tr-item[data-series="{key}"] [data-test=last]')


def test_the_trend_page_draws_the_chosen_range_from_the_archive(dashboard, ui_stack):
    from test_ui_stack import open_page, text, wait_text

    page, console = dashboard
    open_page(page, ui_stack, "trends")
    state = page.locator("[data-test=archive-state]")
    page.select_option("[data-test=view]", "6h")
    wait_text(state, lambda t: t.startswith("from the archive"), what="the archive's answer")
    # the newest archived point of each series, as the Grafana dashboards would show it
    assert text(legend(page, "HV Vmon", "hv.2.vmon")) == "123.4 V"  # the newer of 120 and 123.4
    assert text(legend(page, "HV Imon", "hv.2.imon")) == "2.50 µA"
    assert text(legend(page, "Temperature", "climate.0.temperature")) == "21.50 °C"
    assert text(legend(page, "Temperature", "chiller.0.temperature")) == "18.00 °C"
    assert text(legend(page, "Dew-point margin", "climate.0.margin")) == "15.00 K"  # computed: 21.5 - 6.5
    points = page.locator('[data-chart="HV Vmon"] polyline[data-series="hv.2.vmon"]').get_attribute("points")
    assert len(points.split()) == 2  # two windows with points, no more
    assert text(legend(page, "HV Vmon", "hv.0.vmon")) == "–"  # nothing archived for it
    from conftest import screenshot

    screenshot(page, "trends-archive")
    # the last hour of the archive holds none of them: the range really is the range asked for
    page.select_option("[data-test=view]", "1h")
    wait_text(state, lambda t: t.startswith("from the archive"), what="the archive's answer for 1 h")
    assert text(legend(page, "HV Vmon", "hv.2.vmon")) == "–"
    assert not console.csp(), console.csp()
