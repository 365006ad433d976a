"""The stock plugin's OVSDB helper as this project runs it: which connection it
uses, when it leaves a bridge alone, and who sets a device's MTU. The host
and os-vif's own helper are recorded, not run; the functional tests plug
real ports through it."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
from vif_plug_ovs.ovsdb import ovsdb_lib

from smartnic_vif.osvif import stock

OURS = "unix:/run/openvswitch/db.sock"


class FakeOvsdbClient:
    def __init__(self, bridges: dict[str, str]) -> None:
        self.bridges = bridges
        self.api = object()

    def bridge_exists(self, name: str) -> bool:
        return name in self.bridges


class FakeHost:
    def __init__(self, bridges: dict[str, str] | None = None) -> None:
        self.ovsdb = FakeOvsdbClient(bridges or {})
        self.mtus: list[tuple[str, int]] = []

    def set_mtu(self, ifname: str, mtu: int) -> bool:
        self.mtus.append((ifname, mtu))
        return True


def helper(host: FakeHost, connection: str = OURS, interface: str = "native") -> Any:
    config = SimpleNamespace(
        ovs_vsctl_timeout=5, ovsdb_connection=connection, ovsdb_interface=interface
    )
    return stock.StockOVSDB(config, host, OURS)  # type: ignore[arg-type]


@pytest.fixture
def os_vif_calls(monkeypatch: pytest.MonkeyPatch) -> list[tuple[Any, ...]]:
    """What reaches os-vif's own helper (which would commit or call privsep)."""
    calls: list[tuple[Any, ...]] = []
    monkeypatch.setattr(ovsdb_lib.BaseOVS, "ensure_ovs_bridge",
                        lambda self, *args: calls.append(("ensure_ovs_bridge", *args)))
    monkeypatch.setattr(ovsdb_lib.BaseOVS, "update_device_mtu",
                        lambda self, *args: calls.append(("update_device_mtu", *args)))
    return calls


def test_same_server_means_our_connection() -> None:
    host = FakeHost()
    assert helper(host).ovsdb is host.ovsdb.api
    assert helper(host).shared


@pytest.mark.parametrize(
    ("connection", "interface"),
    [("tcp:192.0.2.1:6640", "native"), (OURS, "vsctl")],
)
def test_another_server_or_interface_keeps_os_vifs_own(connection: str, interface: str) -> None:
    assert not helper(FakeHost(), connection, interface).shared


def test_an_existing_bridge_is_left_alone(os_vif_calls: list[tuple[Any, ...]]) -> None:
    ovsdb = helper(FakeHost({"br-int": "netdev"}))
    assert ovsdb.ensure_ovs_bridge("br-int", "system") is None
    assert os_vif_calls == []


def test_a_missing_bridge_is_made_by_os_vif(os_vif_calls: list[tuple[Any, ...]]) -> None:
    helper(FakeHost({"br-int": "netdev"})).ensure_ovs_bridge("br-new", "netdev")
    assert os_vif_calls == [("ensure_ovs_bridge", "br-new", "netdev")]


def test_on_its_own_connection_os_vif_ensures_every_bridge(
    os_vif_calls: list[tuple[Any, ...]],
) -> None:
    # Our replica says nothing about another server's bridges.
    helper(FakeHost({"br-int": "netdev"}), "tcp:192.0.2.1:6640").ensure_ovs_bridge(
        "br-int", "netdev"
    )
    assert os_vif_calls == [("ensure_ovs_bridge", "br-int", "netdev")]


def test_a_device_mtu_is_set_by_our_helper(os_vif_calls: list[tuple[Any, ...]]) -> None:
    host = FakeHost()
    helper(host).update_device_mtu(None, "tap0", 1450)
    helper(host).update_device_mtu(None, "tap1", 9000, interface_type="internal")
    assert host.mtus == [("tap0", 1450), ("tap1", 9000)]
    assert os_vif_calls == []


@pytest.mark.parametrize(
    ("mtu", "interface_type"),
    [(1450, "dpdkvhostuser"), (1450, "dpdkvhostuserclient"), (None, None), (0, None)],
)
def test_vhostuser_mtus_and_no_mtu_stay_os_vifs(
    os_vif_calls: list[tuple[Any, ...]], mtu: int | None, interface_type: str | None
) -> None:
    # vhost-user MTUs are an mtu_request in the port's transaction; no MTU
    # means nothing to do: both as os-vif does them.
    host = FakeHost()
    helper(host).update_device_mtu("txn", "vhu0", mtu, interface_type)
    assert host.mtus == []
    assert os_vif_calls == [("update_device_mtu", "txn", "vhu0", mtu, interface_type)]


@pytest.mark.parametrize(
    ("existing", "default", "pinned"),
    [
        ("netdev", "system", "netdev"),
        ("system", "netdev", "system"),
        ("", "netdev", "system"),  # no datapath_type stored is the kernel's
        (None, "netdev", "netdev"),  # no bridge yet: the one we would make
        (None, "system", "system"),
    ],
)
def test_pinned_datapath_type(existing: str | None, default: str, pinned: str) -> None:
    assert stock.pinned_datapath_type(existing, default) == pinned
