"""docs/img/ui-{overview,device,alarms}.png from a bench as a new user sees it: a stack of its own (the other
browser tests power-cycle an HV instrument, whose alarms would then be everywhere), a few channels on, and
one real alarm (the humid box of the climate simulator's scenario)."""

from __future__ import annotations

import pytest

from harness import send, wait_until

pytestmark = pytest.mark.stack


def test_a_fresh_bench_as_a_new_user_sees_it(dashboard, ui_stack):
    from test_ui_stack import open_page, text, wait_text

    from conftest import screenshot

    page, console = dashboard
    op = ui_stack.stack.probe("operator")
    op.subscribe("slowctl/lv/reply", "slowctl/hv/reply")
    for topic, value in (
        ("slowctl/lv/cmd/vset/0", "1.2"),
        ("slowctl/lv/cmd/on/0", ""),
        ("slowctl/lv/cmd/vset/1", "1.5"),
        ("slowctl/lv/cmd/on/1", ""),
        ("slowctl/hv/cmd/vset/0", "100"),
        ("slowctl/hv/cmd/on/0", ""),
        ("slowctl/hv/cmd/vset/1", "80"),
        ("slowctl/hv/cmd/on/1", ""),
    ):
        assert send(op, topic, value)["ok"], topic
    open_page(page, ui_stack, "overview")
    hv0 = page.locator('.sc-ov-dev[data-device="hv"] [data-channel="0"]')
    at_100 = lambda t: t.endswith(" V") and abs(float(t.split()[0]) - 100) < 1  # noqa: E731
    wait_text(hv0.locator("[data-test=vmon]"), at_100, 60, what="hv.0 at 100 V")
    wait_text(page.locator("[data-test=alarm-count]"), lambda t: not t.startswith("0 "), timeout=40, what="an alarm")
    # the one real alarm, nothing else: no instrument has been power-cycled here
    assert text(page.locator("[data-test=alarm-count]")).startswith("1 "), text(page.locator("[data-test=alarm-count]"))
    screenshot(page, "overview")
    hv0.click()
    page.wait_for_url("**/dashboard/hv")
    wait_text(page.locator("[data-test=device-state]"), lambda t: t == "ok")
    assert "SETPOINT_CHANGED_EXTERNALLY" not in text(page.locator("body"))
    screenshot(page, "device")
    open_page(page, ui_stack, "alarms")
    row = page.locator('[data-alarm="climate.0.humidity.HIHI"]')
    wait_until(lambda: row.count() == 1, 40, interval=0.2, what="the humid box's alarm")
    assert page.locator("[data-alarm]").count() == 1
    screenshot(page, "alarms")
    assert not console.csp(), console.csp()
