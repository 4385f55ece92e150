"""Simulator CLI: help, usage errors (exit 2, no traceback), a real run stopped by signals."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys

import pytest

from slowctl_dummy.cli import main


def test_help(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert "--tcp HOST:PORT" in out and "caen-n1470" in out and "bench-demo" in out


@pytest.mark.parametrize(
    "argv, message",
    [
        (
            ["climate", "--tcp", "127.0.0.1:0", "--scenario", "{bad}"],
            "events[0].set.humidty: unknown parameter for climate",
        ),
        (
            ["climate", "--tcp", "127.0.0.1:0", "--scenario", "no-such-file.yaml"],
            "scenario file not found: no-such-file.yaml",
        ),
        (["keithley", "--tcp", "127.0.0.1:0"], "invalid choice: 'keithley'"),
        (["climate", "--tcp", "localhost"], "--tcp: expected HOST:PORT"),
        (["climate"], "--tcp"),
        (["climate", "--tcp", "127.0.0.1:0", "--baud", "fast"], "--baud: expected a positive integer"),
        (["climate", "--tcp", "127.0.0.1:0", "--board", "2"], "--board: only valid for caen-n1470"),
        (["caen-n1470", "--tcp", "127.0.0.1:0", "--board", "32"], "--board: 32 out of range"),
        (["hmp4040", "--tcp", "127.0.0.1:0", "--channels", "9"], "--channels: 9 out of range for hmp4040"),
        (["climate", "--tcp", "127.0.0.1:0", "--colour"], "unrecognized arguments: --colour"),
    ],
)
def test_usage_errors_exit_2_with_message(tmp_path, capsys, argv, message):
    bad = tmp_path / "bad.yaml"
    bad.write_text("events:\n  - {at: 30, set: {humidty: 80}}\n")
    assert main([a.replace("{bad}", str(bad)) for a in argv]) == 2
    err = capsys.readouterr().err
    assert message in err
    assert "Traceback" not in err


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_run_and_stop_with_signal(sig):
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "slowctl_dummy",
            "caen-n1470",
            "--tcp",
            "127.0.0.1:0",
            "--pty",
            "--scenario",
            "bench-demo",
            "--board",
            "2",
            "--seed",
            "1",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        first = proc.stdout.readline().split()
        assert first[:2] == ["listening", "on"]
        assert proc.stdout.readline().startswith("pty: /dev/")
        host, port = first[2].rsplit(":", 1)
        with socket.create_connection((host, int(port)), timeout=2) as s:
            s.sendall(b"$BD:02,CMD:MON,PAR:BDNAME\r\n")
            assert s.recv(100) == b"#BD:02,CMD:OK,VAL:N1470\r\n"
        proc.send_signal(sig)
        assert proc.wait(timeout=5) == 0
        assert "Traceback" not in proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
        proc.stderr.close()
