"""The Python mirror of telegraf.conf that the query tests use to fill InfluxDB."""

from __future__ import annotations

import copy
import json

import pytest

from .telegraf_mirror import Telegraf, Unsupported

T = 1795263916240


def test_availability_becomes_a_number_and_the_text():
    t = Telegraf()
    assert t.convert("slowctl/hv/availability", b"online", T) == [
        f'availability,device=hv online=1i,status="online" {T}'
    ]
    assert t.convert("slowctl/lv2/availability", b"offline", T) == [
        f'availability,device=lv2 online=0i,status="offline" {T}'
    ]


def test_health_keeps_its_timestamp_and_types():
    body = {
        "device": "hv",
        "ts": T,
        "uptime": 12.5,
        "poll_cycles": 12,
        "last_poll_duration": 0.0021,
        "consecutive_errors": 0,
        "errors": 0,
        "connected": True,
        "restarts": 0,
    }
    (line,) = Telegraf().convert("slowctl/hv/health", json.dumps(body).encode(), 0)
    assert line == (
        f"service_health,device=hv connected=true,consecutive_errors=0i,errors=0i,"
        f"last_poll_duration=0.0021,poll_cycles=12i,restarts=0i,uptime=12.5 {T}"
    )


def test_health_before_the_first_poll_leaves_out_null():
    body = {
        "device": "hv",
        "ts": T,
        "uptime": 0.1,
        "poll_cycles": 0,
        "last_poll_duration": None,
        "consecutive_errors": 0,
        "errors": 0,
        "connected": False,
        "restarts": 2,
    }
    (line,) = Telegraf().convert("slowctl/hv/health", json.dumps(body).encode(), 0)
    assert "last_poll_duration" not in line and "restarts=2i" in line and "connected=false" in line


def test_metrics_pass_through_unchanged():
    payload = (
        b'supply,channel=0,device=hv,name=sensor-A imon=1e-06,on=true,state="ON",tripped=false,vmon=100.1 '
        b'1795263961232\nsupply,channel=1,device=hv,name=sensor-B on=false,state="OFF",tripped=false 1795263961232'
    )
    assert Telegraf().convert("slowctl/hv/metrics", payload, 0) == payload.decode().splitlines()


def test_the_device_tag_comes_from_the_topic_not_the_line():
    # a service may only publish on its own topic (broker ACL); what its lines claim does not count
    spoof = b"supply,channel=0,device=lv,name=x vmon=99 1795263961232\nsupply,channel=1,name=y vmon=1 1795263961232"
    assert Telegraf().convert("slowctl/hv/metrics", spoof, 0) == [
        "supply,channel=0,device=hv,name=x vmon=99 1795263961232",
        "supply,channel=1,device=hv,name=y vmon=1 1795263961232",
    ]


def test_topics_outside_the_subscriptions_are_not_archived():
    with pytest.raises(ValueError):
        Telegraf().convert("slowctl/hv/status", b"{}", T)
    with pytest.raises(ValueError):
        Telegraf().convert("slowctl/hv/cmd", b"{}", T)


@pytest.mark.parametrize(
    "change",
    [
        lambda c: c["inputs"]["mqtt_consumer"][1].update(data_type="boolean"),
        lambda c: c["inputs"]["mqtt_consumer"][0].update(topic_tag="topic"),
        lambda c: c["inputs"]["mqtt_consumer"][0].update(influx_timestamp_precision="1ns"),
        lambda c: c["inputs"]["mqtt_consumer"][2].update(json_string_fields=["x"]),
        lambda c: c["agent"].update(omit_hostname=False),
        lambda c: c.setdefault("processors", {}).update(rename=[{}]),
    ],
)
def test_an_option_the_mirror_does_not_implement_is_refused(change):
    t = Telegraf()
    conf = copy.deepcopy(t.conf)
    change(conf)
    with pytest.raises(Unsupported):
        Telegraf(conf).convert("slowctl/hv/metrics", b"", 0)
        Telegraf(conf).convert("slowctl/hv/availability", b"online", 0)
