"""reconcile --watch: its bad arguments, and its systemd readiness message."""

from __future__ import annotations

import socket
from typing import Any

import pytest

from smartnic_vif.cli import watch
from smartnic_vif.cli.main import EXIT_USAGE, main


@pytest.mark.parametrize("argv, said", [
    (["reconcile", "--watch", "--json"], "--json cannot be used with --watch"),
    (["reconcile", "--watch", "--interval", "0"], "--interval 0: expected a number of seconds"),
])
def test_bad_watch_arguments_are_usage_errors(argv: list[str], said: str, capsys: Any) -> None:
    assert main(argv) == EXIT_USAGE
    err = capsys.readouterr().err
    assert err.startswith("smartnic-vif reconcile: ") and said in err


def test_sd_notify_tells_systemd_when_asked(tmp_path: Any, monkeypatch: Any) -> None:
    path = str(tmp_path / "notify")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as server:
        server.bind(path)
        monkeypatch.setenv("NOTIFY_SOCKET", path)
        watch.sd_notify("READY=1")
        assert server.recv(64) == b"READY=1"
    monkeypatch.delenv("NOTIFY_SOCKET")
    watch.sd_notify("READY=1")  # not under systemd: nothing to do, no error
