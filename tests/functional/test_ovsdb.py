"""OvsdbClient and PrivateOVS against a private, real Open vSwitch.

Every test gets its own ovsdb-server + ovs-vswitchd (fixture ``private_ovs``),
with ovs-vswitchd in a fresh network namespace where the tests create the veth
and internal devices they plug. Bridges use the userspace datapath (netdev):
this machine has no OVS kernel module.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from smartnic_vif.host import ovsdb
from smartnic_vif.host.ovsdb import OvsdbClient, OvsdbError, PortInfo, PortSpec
from smartnic_vif.model.errors import HostOperationError, InvalidValue
from smartnic_vif.sim.ovs import (
    OVS_VSWITCHD,
    OVSDB_SERVER,
    PrivateOVS,
    PrivateOVSError,
    process_running,
)

pytestmark = pytest.mark.root

MAC1 = "fa:16:3e:00:00:01"
MAC2 = "fa:16:3e:00:00:02"
PORT_ID1 = "0b4e4c7e-0c5b-4a4b-9f6e-1d2f3a4b5c61"
PORT_ID2 = "0b4e4c7e-0c5b-4a4b-9f6e-1d2f3a4b5c62"
VM1 = "6c1f8a0e-2d9b-4a57-8f0c-9e1b2c3d4e51"
VM2 = "6c1f8a0e-2d9b-4a57-8f0c-9e1b2c3d4e52"


def ip(netns: str | None, *args: str) -> str:
    argv = ["ip", *(["-n", netns] if netns else []), *args]
    res = subprocess.run(argv, check=True, capture_output=True, text=True)  # noqa: S603
    return res.stdout


def add_veth(netns: str, name: str) -> None:
    ip(netns, "link", "add", name, "type", "veth", "peer", "name", name + "p")


def link_mtu(netns: str, name: str) -> int:
    m = re.search(r" mtu (\d+) ", ip(netns, "link", "show", "dev", name))
    assert m, name
    return int(m.group(1))


def link_exists(netns: str, name: str) -> bool:
    argv = ["ip", "-n", netns, "link", "show", "dev", name]
    return subprocess.run(argv, capture_output=True).returncode == 0  # noqa: S603


def vsctl_find(ovs: PrivateOVS, table: str, *conditions: str) -> list[str]:
    out = ovs.vsctl("--bare", "--columns=_uuid", "find", table, *conditions)
    return [line for line in out.split() if line]


def db_records(ovs: PrivateOVS) -> list[str]:
    """The transactions recorded in the private conf.db, one text block each."""
    out = subprocess.run(  # noqa: S603
        ["ovsdb-tool", "show-log", "-mm", ovs.db_path], check=True, capture_output=True, text=True
    ).stdout
    return re.split(r"^record \d+:", out, flags=re.M)[1:]


@pytest.fixture
def client(private_ovs: PrivateOVS) -> Iterator[OvsdbClient]:
    c = OvsdbClient(private_ovs.connection, timeout=5)
    try:
        yield c
    finally:
        c.close()


@pytest.fixture
def bridge(client: OvsdbClient) -> str:
    assert client.ensure_bridge("br-test", "netdev") == "netdev"
    return "br-test"


# PrivateOVS ------------------------------------------------------------------


def test_private_ovs_runs_both_daemons_with_files_in_run_dir(private_ovs: PrivateOVS) -> None:
    run_dir = private_ovs.run_dir
    assert private_ovs.connection == f"unix:{run_dir}/db.sock"
    for daemon in (OVSDB_SERVER, OVS_VSWITCHD):
        pid = private_ovs.pid(daemon)
        assert pid is not None and process_running(pid)
        assert os.path.exists(private_ovs.ctl_socket(daemon))
        assert os.path.dirname(private_ovs.logfile(daemon)) == run_dir
    assert os.path.exists(os.path.join(run_dir, "conf.db"))
    assert os.path.exists(os.path.join(run_dir, "db.sock"))
    # ovs-vsctl init ran: the Open_vSwitch row exists.
    assert private_ovs.vsctl("get", "Open_vSwitch", ".", "next_cfg").strip().isdigit()


def test_stop_from_a_new_object_leaves_no_process_and_is_idempotent() -> None:
    netns = f"sovs-{os.getpid()}-stop"
    run_dir = tempfile.mkdtemp(prefix="sovs-")
    ip(None, "netns", "add", netns)
    try:
        ovs = PrivateOVS(run_dir, netns=netns)
        started = time.monotonic()
        ovs.start()
        assert time.monotonic() - started < 5
        pids = [ovs.pid(OVSDB_SERVER), ovs.pid(OVS_VSWITCHD)]
        assert all(p is not None and process_running(p) for p in pids)
        ovs.vsctl("add-br", "br-gone", "--", "set", "Bridge", "br-gone", "datapath_type=netdev")
        assert link_exists(netns, "br-gone")

        PrivateOVS(run_dir).stop()  # knows nothing but the directory

        for pid in pids:
            assert pid is not None and not process_running(pid)
        assert not PrivateOVS(run_dir).is_running()
        # exit --cleanup removed the persistent tap devices of the userspace datapath.
        assert not link_exists(netns, "br-gone")
        assert not link_exists(netns, "ovs-netdev")
        assert not os.path.exists(ovs.db_socket)
        PrivateOVS(run_dir).stop()
        ovs.stop()
        # The database survives a stop, like a host reboot: a restart keeps the bridge.
        ovs.start()
        assert "br-gone" in ovs.vsctl("list-br").split()
        ovs.stop()
        assert not ovs.is_running()
    finally:
        PrivateOVS(run_dir).stop()
        ip(None, "netns", "del", netns)
        shutil.rmtree(run_dir, ignore_errors=True)


def test_stop_after_a_half_dead_instance(private_ovs: PrivateOVS) -> None:
    vswitchd = private_ovs.pid(OVS_VSWITCHD)
    server = private_ovs.pid(OVSDB_SERVER)
    assert vswitchd and server
    os.kill(vswitchd, signal.SIGKILL)  # leaves a stale pidfile and control socket
    deadline = time.monotonic() + 5
    while process_running(vswitchd) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert os.path.exists(private_ovs.pidfile(OVS_VSWITCHD))

    PrivateOVS(private_ovs.run_dir).stop()

    assert not process_running(server)
    assert not os.path.exists(private_ovs.pidfile(OVS_VSWITCHD))
    assert not os.path.exists(private_ovs.pidfile(OVSDB_SERVER))


def test_start_refuses_socket_paths_too_long_for_unix_sockets() -> None:
    run_dir = os.path.join("/tmp", "x" * 120)
    ovs = PrivateOVS(run_dir)
    with pytest.raises(PrivateOVSError, match="longer than"):
        ovs.start()
    assert not os.path.exists(run_dir)
    ovs.stop()


def test_start_failure_cleans_up() -> None:
    run_dir = tempfile.mkdtemp(prefix="sovs-")
    try:
        ovs = PrivateOVS(run_dir, schema=os.path.join(run_dir, "missing.ovsschema"))
        with pytest.raises(PrivateOVSError, match="ovsdb-tool create"):
            ovs.start()
        assert not ovs.is_running()
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)


# Bridges ---------------------------------------------------------------------


def test_ensure_bridge_creates_a_netdev_bridge(
    private_ovs: PrivateOVS, client: OvsdbClient
) -> None:
    assert client.bridge_datapath_type("br-new") is None
    assert client.ensure_bridge("br-new", "netdev") == "netdev"
    assert private_ovs.vsctl("get", "Bridge", "br-new", "datapath_type").strip() == "netdev"
    assert client.bridge_datapath_type("br-new") == "netdev"
    assert client.list_ports("br-new") == []
    assert link_exists(private_ovs.netns or "", "br-new")  # vswitchd made its tap
    # Again: nothing changes, still one bridge.
    assert client.ensure_bridge("br-new", "netdev") == "netdev"
    assert len(vsctl_find(private_ovs, "Bridge", "name=br-new")) == 1
    client.delete_bridge("br-new")
    client.delete_bridge("br-new")
    assert client.bridge_datapath_type("br-new") is None


def test_ensure_bridge_never_changes_an_existing_datapath_type(
    private_ovs: PrivateOVS, client: OvsdbClient
) -> None:
    private_ovs.vsctl("add-br", "br-sys", "--", "set", "Bridge", "br-sys", "datapath_type=system")
    private_ovs.vsctl("add-br", "br-dflt")  # datapath_type "" (OVS default)

    assert client.ensure_bridge("br-sys", "netdev") == "system"
    assert client.ensure_bridge("br-dflt", "netdev") == ""
    assert private_ovs.vsctl("get", "Bridge", "br-sys", "datapath_type").strip() == "system"
    assert private_ovs.vsctl("get", "Bridge", "br-dflt", "datapath_type").strip() == '""'

    # Why ensure_bridge does not use ovsdbapp's add_br: that one rewrites it.
    client.api.add_br("br-dflt", may_exist=True, datapath_type="netdev").execute(check_error=True)
    assert private_ovs.vsctl("get", "Bridge", "br-dflt", "datapath_type").strip() == "netdev"


def test_an_unknown_datapath_type_creates_nothing(
    private_ovs: PrivateOVS, client: OvsdbClient
) -> None:
    """OVSDB stores any datapath_type; ovs-vswitchd knows system and netdev."""
    before = db_records(private_ovs)
    for bad in ("bogus;dp", "bogus", "dummy"):
        with pytest.raises(InvalidValue) as info:
            client.ensure_bridge("br-bogus", bad)
        assert info.value.field == "datapath_type" and info.value.value == bad
        with pytest.raises(InvalidValue):
            client.set_ports(
                [PortSpec("br-bogus", "tap-bogus", iface_id=PORT_ID1, mac=MAC1, vm_uuid=VM1)],
                create_bridges={"br-bogus": bad})
    assert client.bridge_datapath_type("br-bogus") is None
    assert db_records(private_ovs) == before  # not one transaction was sent


def test_set_port_makes_a_missing_bridge_in_the_same_transaction(
    private_ovs: PrivateOVS, client: OvsdbClient
) -> None:
    netns = private_ovs.netns or ""
    private_ovs.vsctl("add-br", "br-old")  # datapath_type "" (OVS default)
    add_veth(netns, "tap-n1")
    add_veth(netns, "tap-n2")
    try:
        [info] = client.set_ports(
            [PortSpec("br-made", "tap-n1", iface_id=PORT_ID1, mac=MAC1, vm_uuid=VM1)],
            create_bridges={"br-made": "netdev"})
        assert info.bridge == "br-made" and isinstance(info.ofport, int) and info.ofport > 0
        assert client.bridge_datapath_type("br-made") == "netdev"
        records = [r for r in db_records(private_ovs) if 'table Port insert row "tap-n1"' in r]
        assert len(records) == 1 and 'table Bridge insert row "br-made"' in records[0]
        # An existing bridge keeps its datapath_type.
        client.apply_ports(
            [PortSpec("br-old", "tap-n2", iface_id=PORT_ID2, mac=MAC2, vm_uuid=VM1)],
            create_bridges={"br-old": "netdev"})
        assert client.bridge_datapath_type("br-old") == ""
        assert client.list_ports("br-old") == ["tap-n2"]
    finally:
        ip(netns, "link", "del", "tap-n1")
        ip(netns, "link", "del", "tap-n2")
        client.delete_bridge("br-made")
        client.delete_bridge("br-old")


# Ports -----------------------------------------------------------------------


def test_set_port_creates_port_and_interface_in_one_transaction(
    private_ovs: PrivateOVS, client: OvsdbClient, bridge: str
) -> None:
    netns = private_ovs.netns or ""
    add_veth(netns, "tap-a1")
    try:
        info = client.set_port(bridge, "tap-a1", iface_id=PORT_ID1, mac=MAC1, vm_uuid=VM1, mtu=9000)
        assert info == PortInfo(
            name="tap-a1",
            bridge=bridge,
            external_ids={
                "iface-id": PORT_ID1,
                "iface-status": "active",
                "attached-mac": MAC1,
                "vm-uuid": VM1,
            },
            mtu_request=9000,
            ofport=info.ofport,
            type="",
            error=None,
        )
        # We waited for ovs-vswitchd: it opened the veth and set its MTU.
        assert isinstance(info.ofport, int) and info.ofport > 0
        assert link_mtu(netns, "tap-a1") == 9000
        assert client.list_ports(bridge) == ["tap-a1"]
        assert private_ovs.vsctl("get", "Interface", "tap-a1", "external_ids:iface-id").strip() == (
            f'"{PORT_ID1}"'
        )

        # One transaction inserted the Port, the Interface with all its columns
        # and the Bridge's reference to the Port.
        records = [r for r in db_records(private_ovs) if 'table Port insert row "tap-a1"' in r]
        assert len(records) == 1
        record = records[0]
        assert 'table Interface insert row "tap-a1"' in record
        assert f'table Bridge row "{bridge}"' in record
        assert "mtu_request=9000" in record
        for key, value in (
            ("attached-mac", MAC1),
            ("iface-id", PORT_ID1),
            ("iface-status", "active"),
            ("vm-uuid", VM1),
        ):
            assert re.search(rf'[{{ ]{key}="?{re.escape(value)}"?[,}}]', record), key
    finally:
        ip(netns, "link", "del", "tap-a1")


def test_set_port_is_idempotent(private_ovs: PrivateOVS, client: OvsdbClient, bridge: str) -> None:
    netns = private_ovs.netns or ""
    add_veth(netns, "tap-b1")
    try:
        first = client.set_port(
            bridge, "tap-b1", iface_id=PORT_ID1, mac=MAC1, vm_uuid=VM1, mtu=1400
        )
        uuid_before = vsctl_find(private_ovs, "Port", "name=tap-b1")
        second = client.set_port(
            bridge, "tap-b1", iface_id=PORT_ID1, mac=MAC1, vm_uuid=VM1, mtu=1400
        )
        assert first == second
        assert vsctl_find(private_ovs, "Port", "name=tap-b1") == uuid_before
        assert len(uuid_before) == 1
        assert len(vsctl_find(private_ovs, "Interface", "name=tap-b1")) == 1
        assert client.list_ports(bridge) == ["tap-b1"]
    finally:
        ip(netns, "link", "del", "tap-b1")


def test_set_port_updates_columns_and_keeps_foreign_keys(
    private_ovs: PrivateOVS, client: OvsdbClient, bridge: str
) -> None:
    netns = private_ovs.netns or ""
    add_veth(netns, "tap-c1")
    try:
        client.set_port(bridge, "tap-c1", iface_id=PORT_ID1, mac=MAC1, vm_uuid=VM1, mtu=1500)
        private_ovs.vsctl("set", "Interface", "tap-c1", "external_ids:owner=someone-else")
        info = client.set_port(
            bridge,
            "tap-c1",
            iface_id=PORT_ID2,
            mac=MAC2.upper(),
            vm_uuid=VM2,
            mtu=8000,
            iface_status="inactive",
            extra_external_ids={"smartnic-vf": "0000:05:00.3"},
        )
        assert info.external_ids == {
            "iface-id": PORT_ID2,
            "iface-status": "inactive",
            "attached-mac": MAC2,  # normalised to lower case
            "vm-uuid": VM2,
            "smartnic-vf": "0000:05:00.3",
            "owner": "someone-else",
        }
        assert info.mtu_request == 8000
        assert link_mtu(netns, "tap-c1") == 8000
        # mtu=None leaves mtu_request as it is.
        again = client.set_port(bridge, "tap-c1", iface_id=PORT_ID2, mac=MAC2, vm_uuid=VM2)
        assert again.mtu_request == 8000
        assert client.get_port("tap-c1") == again
    finally:
        ip(netns, "link", "del", "tap-c1")


def test_set_port_moves_a_port_from_another_bridge(
    private_ovs: PrivateOVS, client: OvsdbClient, bridge: str
) -> None:
    netns = private_ovs.netns or ""
    client.ensure_bridge("br-other", "netdev")
    add_veth(netns, "tap-d1")
    try:
        client.set_port("br-other", "tap-d1", iface_id=PORT_ID1, mac=MAC1, vm_uuid=VM1)
        uuid_before = vsctl_find(private_ovs, "Port", "name=tap-d1")
        info = client.set_port(bridge, "tap-d1", iface_id=PORT_ID1, mac=MAC1, vm_uuid=VM1)
        assert info.bridge == bridge
        assert client.list_ports("br-other") == []
        assert client.list_ports(bridge) == ["tap-d1"]
        assert vsctl_find(private_ovs, "Port", "name=tap-d1") == uuid_before
        assert private_ovs.vsctl("port-to-br", "tap-d1").strip() == bridge
        assert isinstance(info.ofport, int) and info.ofport > 0
    finally:
        ip(netns, "link", "del", "tap-d1")


def test_set_port_refuses_a_bridge_local_port_and_a_missing_bridge(
    client: OvsdbClient, bridge: str
) -> None:
    client.ensure_bridge("br-two", "netdev")
    with pytest.raises(OvsdbError, match="local port of bridge br-two"):
        client.set_port(bridge, "br-two", iface_id=PORT_ID1, mac=MAC1, vm_uuid=VM1)
    with pytest.raises(OvsdbError, match="bridge br-nope does not exist"):
        client.set_port("br-nope", "tap-x", iface_id=PORT_ID1, mac=MAC1, vm_uuid=VM1)
    assert client.get_port("tap-x") is None


def test_internal_port_is_created_and_deleted(
    private_ovs: PrivateOVS, client: OvsdbClient, bridge: str
) -> None:
    netns = private_ovs.netns or ""
    info = client.set_port(
        bridge, "int-e1", iface_id=PORT_ID1, mac=MAC1, vm_uuid=VM1, interface_type="internal"
    )
    assert info.type == "internal"
    assert isinstance(info.ofport, int) and info.ofport > 0
    assert link_exists(netns, "int-e1")
    assert client.delete_port("int-e1") is True
    assert client.get_port("int-e1") is None
    assert not link_exists(netns, "int-e1")


def test_missing_device_is_reported_by_ofport_and_error(client: OvsdbClient, bridge: str) -> None:
    info = client.set_port(bridge, "tap-absent", iface_id=PORT_ID1, mac=MAC1, vm_uuid=VM1)
    assert info.ofport == -1
    assert info.error is not None and "tap-absent" in info.error


def test_delete_port(private_ovs: PrivateOVS, client: OvsdbClient, bridge: str) -> None:
    netns = private_ovs.netns or ""
    client.ensure_bridge("br-else", "netdev")
    add_veth(netns, "tap-f1")
    try:
        client.set_port(bridge, "tap-f1", iface_id=PORT_ID1, mac=MAC1, vm_uuid=VM1)
        # Named bridge that does not hold it: left alone.
        assert client.delete_port("tap-f1", bridge="br-else") is False
        assert client.list_ports(bridge) == ["tap-f1"]
        assert client.delete_port("tap-f1", bridge=bridge) is True
        assert client.list_ports(bridge) == []
        assert vsctl_find(private_ovs, "Port", "name=tap-f1") == []
        assert vsctl_find(private_ovs, "Interface", "name=tap-f1") == []
        assert client.delete_port("tap-f1") is False
        assert client.delete_port("never-there", bridge=bridge) is False
        assert link_exists(netns, "tap-f1")  # OVS does not delete a system device
    finally:
        ip(netns, "link", "del", "tap-f1")


def test_find_ports_by_iface_id(client: OvsdbClient, bridge: str) -> None:
    client.ensure_bridge("br-b", "netdev")
    client.set_port(bridge, "tap-g1", iface_id=PORT_ID1, mac=MAC1, vm_uuid=VM1)
    client.set_port("br-b", "tap-g2", iface_id=PORT_ID1, mac=MAC1, vm_uuid=VM1)
    client.set_port(bridge, "tap-g3", iface_id=PORT_ID2, mac=MAC2, vm_uuid=VM2)

    found = client.find_ports_by_iface_id(PORT_ID1)
    assert [(p.name, p.bridge) for p in found] == [("tap-g1", bridge), ("tap-g2", "br-b")]
    assert all(p.external_ids["vm-uuid"] == VM1 for p in found)
    assert [p.name for p in client.find_ports_by_iface_id(PORT_ID2)] == ["tap-g3"]
    assert client.find_ports_by_iface_id("no-such-port") == []


def test_set_ports_adds_many_ports_in_one_transaction(
    private_ovs: PrivateOVS, client: OvsdbClient, bridge: str
) -> None:
    records_before = len(db_records(private_ovs))
    specs = [
        PortSpec(
            bridge=bridge,
            name=f"tap-h{i}",
            iface_id=f"port-{i}",
            mac=f"fa:16:3e:00:01:{i:02x}",
            vm_uuid=VM1,
            mtu=1450,
        )
        for i in range(40)
    ]
    infos = client.set_ports(specs)
    assert [i.name for i in infos] == [s.name for s in specs]
    assert client.list_ports(bridge) == sorted(s.name for s in specs)
    assert all(
        i.mtu_request == 1450 and i.external_ids["iface-id"] == f"port-{n}"
        for n, i in enumerate(infos)
    )
    new = db_records(private_ovs)[records_before:]
    inserting = [r for r in new if "table Port insert row" in r]
    assert len(inserting) == 1
    assert inserting[0].count("table Port insert row") == 40

    # All or nothing: one bad spec (missing bridge) and no port of the batch appears.
    bad = [
        PortSpec(bridge=bridge, name="tap-i1", iface_id="i1", mac=MAC1, vm_uuid=VM1),
        PortSpec(bridge="br-missing", name="tap-i2", iface_id="i2", mac=MAC2, vm_uuid=VM1),
    ]
    with pytest.raises(OvsdbError, match="br-missing"):
        client.set_ports(bad)
    assert client.get_port("tap-i1") is None
    with pytest.raises(InvalidValue):
        client.set_ports([specs[0], specs[0]])


def test_invalid_values_are_refused_before_ovsdb(client: OvsdbClient, bridge: str) -> None:
    with pytest.raises(InvalidValue):
        client.set_port(bridge, "bad/name", iface_id=PORT_ID1, mac=MAC1, vm_uuid=VM1)
    with pytest.raises(InvalidValue):
        client.set_port(bridge, "tap-j1", iface_id=PORT_ID1, mac="not-a-mac", vm_uuid=VM1)
    with pytest.raises(InvalidValue):
        client.set_port(bridge, "tap-j1", iface_id="", mac=MAC1, vm_uuid=VM1)
    with pytest.raises(InvalidValue):
        client.set_port(bridge, "tap-j1", iface_id=PORT_ID1, mac=MAC1, vm_uuid=VM1, mtu=10)
    with pytest.raises(InvalidValue):
        client.set_port(
            bridge,
            "tap-j1",
            iface_id=PORT_ID1,
            mac=MAC1,
            vm_uuid=VM1,
            extra_external_ids={"iface-id": "other"},
        )
    with pytest.raises(InvalidValue):
        client.ensure_bridge("br-x", "netdev; rm")
    with pytest.raises(InvalidValue):
        client.ensure_bridge("a-very-long-bridge-name", "netdev")
    assert client.get_port("tap-j1") is None


def test_begin_apply_ports_returns_before_ovs_vswitchd_applies_the_write(
    private_ovs: PrivateOVS, client: OvsdbClient, bridge: str
) -> None:
    netns = private_ovs.netns or ""
    add_veth(netns, "tap-k1")
    vswitchd = private_ovs.pid(OVS_VSWITCHD)
    assert vswitchd
    try:
        # Bad input is refused by begin itself, before anything is sent.
        with pytest.raises(InvalidValue, match="mac"):
            client.begin_apply_ports(
                [PortSpec(bridge, "tap-k1", iface_id=PORT_ID1, mac="nope", vm_uuid=VM1)])
        os.kill(vswitchd, signal.SIGSTOP)  # cannot apply anything until resumed
        try:
            pending = client.begin_apply_ports(
                [PortSpec(bridge, "tap-k1", iface_id=PORT_ID1, mac=MAC1, vm_uuid=VM1)])
            # Committed or not, the write is not over while ovs-vswitchd sleeps.
            assert not pending.done.done()
        finally:
            os.kill(vswitchd, signal.SIGCONT)
        pending.wait()
        assert pending.done.done()
        info = client.get_port("tap-k1")
        assert info is not None and info.bridge == bridge
        assert info.external_ids["iface-id"] == PORT_ID1
        assert info.ofport is not None and info.ofport > 0  # applied by ovs-vswitchd
    finally:
        os.kill(vswitchd, signal.SIGCONT)
        ip(netns, "link", "del", "tap-k1")


def test_one_shared_connection_used_from_many_threads(
    private_ovs: PrivateOVS, client: OvsdbClient, bridge: str
) -> None:
    clients = [OvsdbClient(private_ovs.connection, timeout=5) for _ in range(8)]
    errors: list[BaseException] = []

    def plug(n: int, c: OvsdbClient) -> None:
        try:
            for k in range(5):
                c.set_port(bridge, f"tap-k{n}-{k}", iface_id=f"p{n}-{k}", mac=MAC1, vm_uuid=VM1)
        except BaseException as e:  # reported below
            errors.append(e)

    threads = [threading.Thread(target=plug, args=(n, c)) for n, c in enumerate(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert errors == []
    assert len(client.list_ports(bridge)) == 40
    assert all(c.api is client.api for c in clients)
    for c in clients:
        c.close()
    # The fixture's client still holds it: the shared connection stays up.
    assert client.get_port("tap-k0-0") is not None


def test_close_stops_the_shared_connection_with_the_last_client(private_ovs: PrivateOVS) -> None:
    a = OvsdbClient(private_ovs.connection, timeout=5)
    b = OvsdbClient(private_ovs.connection, timeout=5)
    assert a.bridge_datapath_type("br-none") is None
    api = a.api
    assert b.api is api
    a.close()
    a.close()
    assert b.bridge_datapath_type("br-none") is None
    b.close()
    assert [k for k in ovsdb._CACHE if k[0] == private_ovs.connection] == []
    c = OvsdbClient(private_ovs.connection, timeout=5)
    assert c.bridge_datapath_type("br-none") is None
    assert c.api is not api
    c.close()


def test_a_client_for_reads_replicates_only_its_tables_and_reads_what_a_writer_wrote(
        private_ovs: PrivateOVS, client: OvsdbClient, bridge: str) -> None:
    netns = private_ovs.netns or ""
    add_veth(netns, "tap-r1")
    client.set_port(bridge, "tap-r1", iface_id=PORT_ID1, mac=MAC1, vm_uuid=VM1, mtu=9000)
    private_ovs.vsctl("set", "Open_vSwitch", ".", "other_config:hw-offload=true")
    with OvsdbClient(private_ovs.connection, timeout=5, tables=ovsdb.READ_TABLES) as reader:
        # Its own connection, not the writer's whole replica.
        assert reader.api is not client.api
        assert sorted(reader.api.tables) == sorted(ovsdb.READ_TABLES)
        assert sorted(reader.api.tables["Port"].columns) == ["interfaces", "name"]
        assert reader.get_port("tap-r1") == client.get_port("tap-r1")
        assert reader.ports_with_iface_id() == client.ports_with_iface_id()
        assert reader.find_ports_by_iface_id(PORT_ID1)[0].bridge == bridge
        assert reader.bridge_datapath_type(bridge) == client.bridge_datapath_type(bridge)
        assert reader.port_names() == client.port_names()
        assert reader.other_config()["hw-offload"] == "true"
        with pytest.raises(OvsdbError, match="cannot write"):
            reader.delete_port("tap-r1")
    assert client.get_port("tap-r1") is not None


def test_unreachable_ovsdb_fails_quickly_with_ovsdb_error() -> None:
    with tempfile.TemporaryDirectory(prefix="sovs-") as d:
        missing = f"unix:{d}/missing.sock"
        client = OvsdbClient(missing, timeout=2)
        started = time.monotonic()
        with pytest.raises(OvsdbError, match="missing.sock") as excinfo:
            client.ensure_bridge("br-int", "netdev")
        assert time.monotonic() - started < 1
        assert isinstance(excinfo.value, HostOperationError)

        # A server that accepts connections but never answers: bounded by the timeout.
        path = f"{d}/silent.sock"
        silent = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        silent.bind(path)
        silent.listen(8)
        try:
            client = OvsdbClient(f"unix:{path}", timeout=1)
            started = time.monotonic()
            with pytest.raises(OvsdbError, match="silent.sock"):
                client.get_port("tap0")
            assert time.monotonic() - started < 2
        finally:
            silent.close()


def test_ovsdb_going_away_raises_ovsdb_error_then_reconnects(private_ovs: PrivateOVS) -> None:
    c = OvsdbClient(private_ovs.connection, timeout=1)
    assert c.ensure_bridge("br-l", "netdev") == "netdev"
    private_ovs.stop()
    started = time.monotonic()
    with pytest.raises(OvsdbError, match=re.escape(private_ovs.connection)):
        c.ensure_bridge("br-m", "netdev")
    with pytest.raises(OvsdbError, match="not connected"):
        c.get_port("tap0")
    assert time.monotonic() - started < 3
    # OVS comes back (as after a restart of the service): the same client
    # reconnects on its own and sees the persisted database.
    private_ovs.start()
    c.timeout = 5
    assert c.bridge_datapath_type("br-l") == "netdev"
    assert c.ensure_bridge("br-m", "netdev") == "netdev"
    c.close()


def test_set_port_with_vswitchd_down_commits_and_returns_after_the_timeout(
    private_ovs: PrivateOVS, caplog: pytest.LogCaptureFixture
) -> None:
    c = OvsdbClient(private_ovs.connection, timeout=1)
    try:
        c.ensure_bridge("br-n", "netdev")
        vswitchd = private_ovs.pid(OVS_VSWITCHD)
        assert vswitchd
        os.kill(vswitchd, signal.SIGKILL)
        started = time.monotonic()
        info = c.set_port("br-n", "tap-n1", iface_id=PORT_ID1, mac=MAC1, vm_uuid=VM1)
        elapsed = time.monotonic() - started
        assert 0.9 < elapsed < 1.9
        assert info.ofport is None and info.external_ids["iface-id"] == PORT_ID1
        assert "did not apply it" in caplog.text
        # Without waiting for ovs-vswitchd, the same write returns at once.
        fast = OvsdbClient(private_ovs.connection, timeout=1, wait_for_vswitchd=False)
        started = time.monotonic()
        fast.set_port("br-n", "tap-n2", iface_id=PORT_ID2, mac=MAC2, vm_uuid=VM1)
        assert time.monotonic() - started < 0.5
        fast.close()
    finally:
        c.close()


def _scripted_server(path: str,
                     answer: Callable[[dict[str, object]], list[bytes]]) -> threading.Thread:
    """A one-connection server on unix socket ``path``: reads one JSON-RPC
    request and sends the chunks ``answer`` makes of it, slowly."""
    import json

    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(1)

    def serve() -> None:
        conn, _ = listener.accept()
        with conn, listener:
            request = json.JSONDecoder().raw_decode(conn.recv(65536).decode())[0]
            for chunk in answer(request):
                conn.sendall(chunk)
                time.sleep(0.02)
            conn.recv(1)  # until the client closes

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return thread


def test_the_schema_reply_is_read_across_chunks_past_other_messages() -> None:
    import json

    schema = {"name": "Open_vSwitch", "version": "8.3.1", "cksum": "1 2",
              "tables": {"Bridge": {"columns": {"name": {"type": "string"}}}},
              "doc": "naïve → ünïcode"}

    def answer(request: dict[str, object]) -> list[bytes]:
        assert request["method"] == "get_schema" and request["params"] == ["Open_vSwitch"]
        echo = json.dumps({"method": "echo", "params": [], "id": "echo"}).encode()
        reply = json.dumps({"id": request["id"], "result": schema, "error": None},
                           ensure_ascii=False).encode()
        cut = reply.index("→".encode()) + 1  # inside a multi-byte character
        return [echo + b"\n" + reply[:cut], reply[cut:]]

    with tempfile.TemporaryDirectory(prefix="sovs-") as d:
        server = _scripted_server(f"{d}/db.sock", answer)
        assert ovsdb._fetch_schema(f"unix:{d}/db.sock", timeout=5) == schema
        server.join(5)


def test_a_schema_request_the_server_refuses_names_its_error() -> None:
    import json

    def answer(request: dict[str, object]) -> list[bytes]:
        return [json.dumps({"id": request["id"], "result": None,
                            "error": "unknown database"}).encode()]

    with tempfile.TemporaryDirectory(prefix="sovs-") as d:
        server = _scripted_server(f"{d}/db.sock", answer)
        with pytest.raises(OvsdbError, match=r"db\.sock: unknown database"):
            ovsdb._fetch_schema(f"unix:{d}/db.sock", timeout=5)
        server.join(5)
