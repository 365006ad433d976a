"""The virtio-forwarder client against the simulator, in a thread and as a process.

Everything goes over real ZeroMQ ipc:// sockets in a private directory; the
simulator answers as the daemon does (the table "Exact replies" of the
protocol notes: one test per row below), so these tests exercise the exact
bytes and error paths the client sees from the daemon.
"""

from __future__ import annotations

import errno
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import zmq

from smartnic_vif.host.forwarder import (
    ForwarderClient,
    ForwarderError,
    ForwarderTimeout,
)
from smartnic_vif.host.forwarder import virtio_forwarder_pb2 as pb
from smartnic_vif.host.kernel import SimulatedKernel
from smartnic_vif.model.errors import HostOperationError, InvalidValue
from smartnic_vif.model.types import PciAddress
from smartnic_vif.sim.forwarder import (
    DEFAULT_MAX_RELAYS,
    SOURCE_ADD_SOCK,
    SOURCE_QUERY_PCI,
    SOURCE_REMOVE,
    SOURCE_REMOVE_SOCK,
    ForwarderSimulator,
    read_state,
)
from smartnic_vif.sim.host import SimulatedHost

VF1 = PciAddress.parse("0000:05:08.1")
VF2 = PciAddress.parse("0000:05:08.2")
VF3 = PciAddress.parse("0000:81:1f.7")
# In the sysfs tree but bound to a network driver, and not in it at all.
ON_NFP = PciAddress.parse("0000:05:08.3")
ABSENT = PciAddress.parse("0000:42:00.1")
# Twelve more VFs for the concurrency test.
MANY = [PciAddress(0, 0x10, i, 0) for i in range(12)]
Op = pb.PortControlRequest
# `python -m` finds the package from here even without an installed copy.
REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def workdir() -> Iterator[Path]:
    # pytest's tmp_path can exceed the 107-byte limit of a unix socket path
    # once a long test name is in it; a short private directory cannot.
    with tempfile.TemporaryDirectory(prefix="fwd-", dir="/tmp") as d:
        yield Path(d)


def make_sysfs(root: Path, devices: dict[PciAddress, str | None]) -> Path:
    """A sysfs tree with just PCI devices and their driver links."""
    bus = root / "sys" / "bus" / "pci"
    for address, driver in devices.items():
        dev = bus / "devices" / str(address)
        dev.mkdir(parents=True)
        if driver is not None:
            (bus / "drivers" / driver).mkdir(parents=True, exist_ok=True)
            os.symlink(os.path.relpath(bus / "drivers" / driver, dev), dev / "driver")
    return root


@pytest.fixture
def sysfs(workdir: Path) -> Path:
    bound = {vf: "vfio-pci" for vf in (VF1, VF2, VF3, *MANY)}
    return make_sysfs(workdir / "root", {**bound, ON_NFP: "nfp"})


@pytest.fixture
def sim(workdir: Path, sysfs: Path) -> Iterator[ForwarderSimulator]:
    with ForwarderSimulator(
        f"ipc://{workdir}/port_control",
        f"ipc://{workdir}/stats",
        sysfs_root=sysfs,
        state_file=workdir / "state.json",
    ) as simulator:
        yield simulator


@pytest.fixture
def client(sim: ForwarderSimulator) -> Iterator[ForwarderClient]:
    with ForwarderClient(sim.port_control_endpoint, sim.stats_endpoint, timeout=2.0) as c:
        yield c


def vhost(workdir: Path, name: str) -> str:
    return str(workdir / f"vhu-{name}")


def raw_request(endpoint: str, payload: bytes, timeout_ms: int = 2000) -> pb.PortControlResponse:
    """Send bytes the client would refuse to build, as another daemon client could."""
    ctx = zmq.Context()
    try:
        sock = ctx.socket(zmq.REQ)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.RCVTIMEO, timeout_ms)
        sock.connect(endpoint)
        sock.send(payload)
        resp = pb.PortControlResponse()
        resp.ParseFromString(sock.recv())
        sock.close(linger=0)
        return resp
    finally:
        ctx.term()


def pci_msg(addr: PciAddress) -> pb.PortControlRequest.PciAddress:
    return Op.PciAddress(domain=addr.domain, bus=addr.bus, slot=addr.slot, function=addr.function)


def send(sim: ForwarderSimulator, req: pb.PortControlRequest) -> pb.PortControlResponse:
    return raw_request(sim.port_control_endpoint, req.SerializeToString())


def reply(resp: pb.PortControlResponse) -> tuple[str, int | None, str | None]:
    """(status, error_code, error_code_source), None for a field not sent."""
    return (
        pb.PortControlResponse.Status.Name(resp.status),
        resp.error_code if resp.HasField("error_code") else None,
        resp.error_code_source if resp.HasField("error_code_source") else None,
    )


BARE = ("ERROR", None, None)


def add_sock(sim: ForwarderSimulator, vf: PciAddress, path: str) -> pb.PortControlResponse:
    return send(sim, Op(op=Op.ADD_SOCK, pci_addrs=[pci_msg(vf)], vhost_path=path))


def unix_listener(path: str) -> socket.socket:
    """Stand in for QEMU creating the vhost-user socket (libvirt mode='server')."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(path)
    s.listen(1)
    return s


# -- the OpenStack path: ADD_SOCK / QUERY_PCI / REMOVE_SOCK ------------------------


def test_add_query_remove(sim: ForwarderSimulator, client: ForwarderClient, workdir: Path) -> None:
    a, b = vhost(workdir, "a"), vhost(workdir, "b")
    client.add_sock(VF1, a)
    client.add_sock("05:08.2", b)  # short form, domain 0

    assert client.query_pci(a) == VF1
    assert client.query_pci(b) == VF2
    relays = sim.relays()
    assert [(r.relay_id, r.device, r.vhost_path) for r in relays] == [
        (0, "0000:05:08.1", a),
        (1, "0000:05:08.2", b),
    ]

    client.remove_sock(vhost_path=a)
    client.remove_sock(pci=VF2)
    assert client.query_pci(a) is None
    assert client.query_pci(b) is None
    assert sim.relays() == []


def test_query_answer_is_in_daemon_form(sim: ForwarderSimulator, workdir: Path) -> None:
    path = vhost(workdir, "q")
    ok = raw_request(
        sim.port_control_endpoint,
        Op(op=Op.ADD_SOCK, pci_addrs=[pci_msg(VF3)], vhost_path=path).SerializeToString(),
    )
    assert ok.status == pb.PortControlResponse.OK
    resp = raw_request(
        sim.port_control_endpoint, Op(op=Op.QUERY_PCI, vhost_path=path).SerializeToString()
    )
    assert resp.status == pb.PortControlResponse.OK
    assert resp.query_string == "0000:81:1F.7"  # %04X:%02X:%02X.%X


def test_add_and_remove_are_idempotent(
    sim: ForwarderSimulator, client: ForwarderClient, workdir: Path
) -> None:
    """The daemon refuses the identical pair (-17) and the removal of a pair
    that is gone (1); the client confirms with QUERY_PCI (or the stats) that
    the state is what was asked for."""
    path = vhost(workdir, "idem")
    client.add_sock(VF1, path)
    client.add_sock(str(VF1), path)
    assert len(sim.relays()) == 1
    assert "already attached" in sim.log[-1]  # the daemon said -17; QUERY_PCI confirmed

    client.remove_sock(VF1, path)
    client.remove_sock(VF1, path)
    client.remove_sock(vhost_path=path)
    client.remove_sock(pci=VF1)
    assert "Could not get relay id" in sim.log[-1]
    assert sim.relays() == []


def test_conflicting_pairs_are_refused(
    sim: ForwarderSimulator, client: ForwarderClient, workdir: Path
) -> None:
    a, b = vhost(workdir, "a"), vhost(workdir, "b")
    client.add_sock(VF1, a)

    with pytest.raises(ForwarderError) as vf_taken:
        client.add_sock(VF1, b)
    assert (vf_taken.value.error_code, vf_taken.value.error_code_source) == (-17, SOURCE_ADD_SOCK)

    with pytest.raises(ForwarderError) as path_taken:
        client.add_sock(VF2, a)
    assert (path_taken.value.error_code, path_taken.value.error_code_source) == (
        1,
        SOURCE_ADD_SOCK,
    )
    assert "error code 1 " in str(path_taken.value)

    # A VF and a path that do not belong together are not removed.
    client.add_sock(VF2, b)
    with pytest.raises(ForwarderError) as mismatch:
        client.remove_sock(VF2, a)
    assert (mismatch.value.error_code, mismatch.value.error_code_source) == (
        2,
        SOURCE_REMOVE_SOCK,
    )
    assert client.query_pci(a) == VF1 and client.query_pci(b) == VF2


def test_client_reports_an_absent_vf_as_the_daemon_does(
    sim: ForwarderSimulator, client: ForwarderClient, workdir: Path
) -> None:
    with pytest.raises(ForwarderError) as absent:
        client.add_sock(ABSENT, vhost(workdir, "x"))
    assert (absent.value.error_code, absent.value.error_code_source) == (3, SOURCE_ADD_SOCK)
    text = str(absent.value)
    assert "error code 3" in text and "ESRCH" not in text
    assert "not present or cannot be attached" in text
    assert sim.relays() == []


def test_injected_errors_become_forwarder_errors(
    sim: ForwarderSimulator, client: ForwarderClient, workdir: Path
) -> None:
    path = vhost(workdir, "e")
    sim.fail_next("ADD_SOCK", 5)
    with pytest.raises(ForwarderError) as add_failed:
        client.add_sock(VF1, path)
    assert add_failed.value.error_code == 5
    assert add_failed.value.error_code_source == SOURCE_ADD_SOCK
    assert add_failed.value.op == "ADD_SOCK"
    assert isinstance(add_failed.value, HostOperationError)
    assert sim.relays() == []  # the daemon rolled back

    client.add_sock(VF1, path)  # the next one goes through
    sim.fail_next(Op.REMOVE_SOCK, 3, source="virtio_remove_sock_dev_pair()")
    with pytest.raises(ForwarderError) as remove_failed:
        client.remove_sock(vhost_path=path)
    assert (remove_failed.value.error_code, remove_failed.value.error_code_source) == (
        3,
        "virtio_remove_sock_dev_pair()",
    )
    assert client.query_pci(path) == VF1  # still paired, so the error stands

    sim.fail_next("QUERY_PCI", -errno.EIO)
    with pytest.raises(ForwarderError) as query_failed:
        client.query_pci(path)
    assert query_failed.value.error_code_source == SOURCE_QUERY_PCI

    sim.fail_next("QUERY_PCI", None)  # a bare ERROR, as for a refused request
    with pytest.raises(ForwarderError) as bare:
        client.query_pci(path)
    assert bare.value.error_code is None and bare.value.error_code_source is None


def test_no_free_relay(workdir: Path, sysfs: Path) -> None:
    with (
        ForwarderSimulator(
            f"ipc://{workdir}/pc", f"ipc://{workdir}/st", sysfs_root=sysfs, max_relays=2
        ) as sim,
        ForwarderClient(sim.port_control_endpoint, sim.stats_endpoint, timeout=2) as client,
    ):
        client.add_sock(VF1, vhost(workdir, "1"))
        client.add_sock(VF2, vhost(workdir, "2"))
        with pytest.raises(ForwarderError) as full:
            client.add_sock(VF3, vhost(workdir, "3"))
        assert (full.value.error_code, full.value.error_code_source) == (2, SOURCE_ADD_SOCK)
        client.remove_sock(pci=VF1)
        client.add_sock(VF3, vhost(workdir, "3"))
        assert {r.relay_id: r.device for r in sim.relays()} == {
            0: "0000:81:1F.7",
            1: "0000:05:08.2",
        }


# -- "Exact replies": one test per row of the table ----------------------------------


def test_row_add_sock_vf_not_present(sim: ForwarderSimulator, workdir: Path) -> None:
    # Not in sysfs, bound to a driver DPDK cannot use, or bound to none.
    for vf in (ABSENT, ON_NFP):
        add = Op(op=Op.ADD_SOCK, pci_addrs=[pci_msg(vf)], vhost_path=vhost(workdir, "n"))
        assert reply(send(sim, add)) == ("ERROR", 3, SOURCE_ADD_SOCK)
    unbound = sim.sysfs_root / "sys/bus/pci/devices" / str(VF1) / "driver"
    unbound.unlink()
    add = Op(op=Op.ADD_SOCK, pci_addrs=[pci_msg(VF1)], vhost_path=vhost(workdir, "n"))
    assert reply(send(sim, add)) == ("ERROR", 3, SOURCE_ADD_SOCK)
    assert sim.relays() == []


def test_row_add_sock_without_vhost_path(sim: ForwarderSimulator) -> None:
    add = Op(op=Op.ADD_SOCK, pci_addrs=[pci_msg(VF1)])
    assert reply(send(sim, add)) == ("ERROR", -1, SOURCE_ADD_SOCK)


def test_row_add_sock_without_pci_address(sim: ForwarderSimulator, workdir: Path) -> None:
    add = Op(op=Op.ADD_SOCK, vhost_path=vhost(workdir, "p"))
    assert reply(send(sim, add)) == ("ERROR", 4, SOURCE_ADD_SOCK)
    assert sim.relays() == []


def test_row_add_sock_path_already_registered(sim: ForwarderSimulator, workdir: Path) -> None:
    path = vhost(workdir, "r")
    assert reply(add_sock(sim, VF1, path)) == ("OK", None, None)
    other = Op(op=Op.ADD_SOCK, pci_addrs=[pci_msg(VF2)], vhost_path=path)
    assert reply(send(sim, other)) == ("ERROR", 1, SOURCE_ADD_SOCK)


@pytest.mark.parametrize("conditional", [None, True, False])
def test_row_add_sock_vf_already_attached(
    sim: ForwarderSimulator, workdir: Path, conditional: bool | None
) -> None:
    path = vhost(workdir, "a")
    first = Op(op=Op.ADD_SOCK, pci_addrs=[pci_msg(VF1)], vhost_path=path)
    assert reply(send(sim, first))[0] == "OK"
    again = Op(op=Op.ADD_SOCK, pci_addrs=[pci_msg(VF1)], vhost_path=path)
    other_path = Op(op=Op.ADD_SOCK, pci_addrs=[pci_msg(VF1)], vhost_path=vhost(workdir, "o"))
    for req in (again, other_path):
        if conditional is not None:
            req.conditional = conditional
        assert reply(send(sim, req)) == ("ERROR", -17, SOURCE_ADD_SOCK)
    assert len(sim.relays()) == 1


def test_row_query_pci_without_vhost_path(sim: ForwarderSimulator) -> None:
    assert reply(send(sim, Op(op=Op.QUERY_PCI))) == BARE
    assert reply(send(sim, Op(op=Op.QUERY_PCI, pci_addrs=[pci_msg(VF1)]))) == BARE


@pytest.mark.parametrize("conditional", [True, False])
def test_row_query_pci_path_not_registered(
    sim: ForwarderSimulator, workdir: Path, conditional: bool
) -> None:
    query = Op(op=Op.QUERY_PCI, vhost_path=vhost(workdir, "q"), conditional=conditional)
    assert reply(send(sim, query)) == ("ERROR", 2, "virtio_query_pci()")


def test_row_query_pci_path_registered(sim: ForwarderSimulator, workdir: Path) -> None:
    path = vhost(workdir, "q")
    assert reply(add_sock(sim, VF3, path)) == ("OK", None, None)
    resp = send(sim, Op(op=Op.QUERY_PCI, vhost_path=path, conditional=False))
    assert reply(resp) == ("OK", None, None)
    assert resp.query_string == "0000:81:1F.7"  # %04X:%02X:%02X.%X


@pytest.mark.parametrize("conditional", [None, True, False])
def test_row_remove_sock_not_registered(
    sim: ForwarderSimulator, workdir: Path, conditional: bool | None
) -> None:
    by_path = Op(op=Op.REMOVE_SOCK, vhost_path=vhost(workdir, "gone"))
    by_pci = Op(op=Op.REMOVE_SOCK, pci_addrs=[pci_msg(VF1)])
    both = Op(op=Op.REMOVE_SOCK, pci_addrs=[pci_msg(VF1)], vhost_path=vhost(workdir, "gone"))
    for req in (by_path, by_pci, both):
        if conditional is not None:
            req.conditional = conditional
        assert reply(send(sim, req)) == ("ERROR", 1, SOURCE_REMOVE_SOCK)


def test_row_remove_sock_with_neither_path_nor_address(sim: ForwarderSimulator) -> None:
    assert reply(send(sim, Op(op=Op.REMOVE_SOCK))) == ("ERROR", -1, SOURCE_REMOVE_SOCK)


def test_row_remove_sock_path_of_another_vf(sim: ForwarderSimulator, workdir: Path) -> None:
    path = vhost(workdir, "m")
    assert reply(add_sock(sim, VF1, path)) == ("OK", None, None)
    wrong = Op(op=Op.REMOVE_SOCK, pci_addrs=[pci_msg(VF2)], vhost_path=path)
    assert reply(send(sim, wrong)) == ("ERROR", 2, SOURCE_REMOVE_SOCK)
    right = Op(op=Op.REMOVE_SOCK, pci_addrs=[pci_msg(VF1)], vhost_path=path)
    assert reply(send(sim, right)) == ("OK", None, None)
    assert sim.relays() == []


BOND = [pci_msg(VF1), pci_msg(VF2)]

VALIDATION_CASES = {
    "ADD without virtio_id": Op(op=Op.ADD, pci_addrs=[pci_msg(VF1)]).SerializeToString(),
    "REMOVE without virtio_id": Op(op=Op.REMOVE, pci_addrs=[pci_msg(VF1)]).SerializeToString(),
    "virtio_id out of range": Op(
        op=Op.ADD, pci_addrs=[pci_msg(VF1)], virtio_id=200
    ).SerializeToString(),
    "bond add with one VF": Op(
        op=Op.ADD_SOCK, pci_addrs=[pci_msg(VF1)], name="bond0", vhost_path="/x"
    ).SerializeToString(),
    "static bond add with one VF": Op(
        op=Op.ADD, pci_addrs=[pci_msg(VF1)], name="bond0", virtio_id=1
    ).SerializeToString(),
    "several VFs without a name": Op(
        op=Op.ADD_SOCK, pci_addrs=BOND, vhost_path="/x"
    ).SerializeToString(),
    "remove of several VFs without a name": Op(
        op=Op.REMOVE_SOCK, pci_addrs=BOND, vhost_path="/x"
    ).SerializeToString(),
    "static remove of several VFs without a name": Op(
        op=Op.REMOVE, pci_addrs=BOND, virtio_id=1
    ).SerializeToString(),
    "not protobuf": b"\xff\xff\xff",
    "required op missing": b"\x3a\x02/x",
    "unknown op": b"\x08\x09",
}


@pytest.mark.parametrize("case", sorted(VALIDATION_CASES))
def test_row_request_validation_errors_are_bare(sim: ForwarderSimulator, case: str) -> None:
    resp = raw_request(sim.port_control_endpoint, VALIDATION_CASES[case])
    assert reply(resp) == BARE
    assert sim.relays() == []


def test_client_validates_before_sending(
    sim: ForwarderSimulator, client: ForwarderClient
) -> None:
    bad_calls = [
        lambda: client.add_sock("05:08", "/run/vhu"),
        lambda: client.add_sock("0000:05:20.1", "/run/vhu"),  # slot > 1f
        lambda: client.add_sock(VF1, "run/vhu"),
        lambda: client.add_sock(VF1, "/run/vhu\0x"),
        lambda: client.add_sock(VF1, "/" + "v" * 107),
        lambda: client.remove_sock(),
        lambda: client.remove_sock(pci="nonsense"),
        lambda: client.query_pci(""),
        lambda: client.stats(relays=[-1]),
        lambda: client.stats(relays=["1"]),  # type: ignore[list-item]
    ]
    for call in bad_calls:
        with pytest.raises(InvalidValue):
            call()
    assert sim.requests_handled == 0
    with pytest.raises(InvalidValue):
        ForwarderClient("not-an-endpoint", sim.stats_endpoint)
    with pytest.raises(InvalidValue):
        ForwarderClient(sim.port_control_endpoint, sim.stats_endpoint, timeout=0)


# -- static ADD / REMOVE and bonds -------------------------------------------------


def test_static_add_remove_by_virtio_id(sim: ForwarderSimulator) -> None:
    add = Op(op=Op.ADD, pci_addrs=[pci_msg(VF1)], virtio_id=5)
    assert send(sim, add).status == pb.PortControlResponse.OK
    assert send(sim, add).status == pb.PortControlResponse.OK  # conditional by default
    assert [(r.relay_id, r.vhost_path) for r in sim.relays()] == [(5, None)]

    taken = send(sim, Op(op=Op.ADD, pci_addrs=[pci_msg(VF2)], virtio_id=5))
    assert taken.error_code == -errno.EEXIST
    vf_busy = send(sim, Op(op=Op.ADD, pci_addrs=[pci_msg(VF1)], virtio_id=6))
    assert vf_busy.error_code == -errno.EEXIST

    # ADD_SOCK takes the lowest free relay, not 5, and ignores virtio_id.
    sock = Op(op=Op.ADD_SOCK, pci_addrs=[pci_msg(VF2)], vhost_path="/run/vhu-s", virtio_id=9)
    assert send(sim, sock).status == pb.PortControlResponse.OK
    assert "virtio_id 9 ignored" in " ".join(sim.log)
    assert {r.relay_id for r in sim.relays()} == {0, 5}

    wrong = send(sim, Op(op=Op.REMOVE, pci_addrs=[pci_msg(VF2)], virtio_id=5))
    assert (wrong.error_code, wrong.error_code_source) == (-errno.ENODEV, SOURCE_REMOVE)
    remove = Op(op=Op.REMOVE, pci_addrs=[pci_msg(VF1)], virtio_id=5)
    assert send(sim, remove).status == pb.PortControlResponse.OK
    assert send(sim, remove).status == pb.PortControlResponse.OK  # conditional: already gone
    remove.conditional = False
    assert send(sim, remove).error_code == -errno.ENOENT
    assert {r.relay_id for r in sim.relays()} == {0}


def test_bond_add_sock(sim: ForwarderSimulator, client: ForwarderClient) -> None:
    req = Op(op=Op.ADD_SOCK, pci_addrs=BOND, name="bond0", mode=1, vhost_path="/run/vhu-b")
    assert send(sim, req).status == 1
    (relay,) = sim.relays()
    assert (relay.device, relay.pci_addrs, relay.bond_mode) == ("bond0", (VF1, VF2), 1)
    assert client.query_pci("/run/vhu-b") == VF1
    with pytest.raises(ForwarderError) as slave_busy:
        client.add_sock(VF2, "/run/vhu-other")
    assert slave_busy.value.error_code == -17
    (stats,) = client.relays_in_use()
    assert stats.vf_ident == "bond0" and stats.pci is None
    # A bond with a VF DPDK cannot use is refused by the bond step.
    bad = Op(
        op=Op.ADD_SOCK, pci_addrs=[pci_msg(VF3), pci_msg(ON_NFP)], name="bond1",
        vhost_path="/run/vhu-c",
    )
    assert reply(send(sim, bad)) == ("ERROR", 4, SOURCE_ADD_SOCK)


# -- stats -----------------------------------------------------------------------


def _unused(slot: pb.RelayState) -> None:
    assert slot.vhost.vhost_socket_name == "NONE"
    assert (slot.vf_to_vm.internal_state, slot.vm_to_vf.internal_state) == (
        "DPDK_UNINIT",
        "VIRTIO_UNINIT",
    )
    assert not slot.active and not slot.vf_to_vm.active and not slot.vm_to_vf.active
    assert not slot.HasField("vf") and not slot.HasField("cpu")
    for direction in (slot.vf_to_vm, slot.vm_to_vf):
        assert not direction.HasField("packets_received")
        assert not direction.HasField("packets_transmitted")


def stats_request(sim: ForwarderSimulator, req: pb.StatsRequest) -> pb.StatsResponse:
    ctx = zmq.Context()
    try:
        sock = ctx.socket(zmq.REQ)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.RCVTIMEO, 2000)
        sock.connect(sim.stats_endpoint)
        sock.send(req.SerializeToString())
        resp = pb.StatsResponse()
        resp.ParseFromString(sock.recv())
        sock.close(linger=0)
        return resp
    finally:
        ctx.term()


def test_stats_of_an_idle_daemon_list_every_slot(sim: ForwarderSimulator) -> None:
    resp = stats_request(sim, pb.StatsRequest())
    assert resp.status == pb.StatsResponse.OK
    assert sim.max_relays == DEFAULT_MAX_RELAYS == 32
    assert [r.id for r in resp.relay] == list(range(32))
    for slot in resp.relay:
        _unused(slot)
        assert not slot.HasField("ident")


def test_stats_shape_of_a_relay_without_and_with_its_vm(
    sim: ForwarderSimulator, client: ForwarderClient, workdir: Path
) -> None:
    path = vhost(workdir, "s")
    client.add_sock(VF2, path)
    (slot,) = stats_request(sim, pb.StatsRequest(relay=[0])).relay
    # The VF is attached, the VM not there: only the VF-to-VM side runs.
    assert slot.vf.pci_addr_str == "0000:05:08.2"
    assert slot.vhost.vhost_socket_name == "NONE"
    assert not slot.active and not slot.HasField("ident")
    assert (slot.vf_to_vm.active, slot.vf_to_vm.internal_state) == (True, "DPDK_ADDED")
    assert (slot.vm_to_vf.active, slot.vm_to_vf.internal_state) == (False, "VIRTIO_UNINIT")
    assert slot.cpu.HasField("vf_to_vm") and not slot.cpu.HasField("vm_to_vf")
    assert slot.vf_to_vm.HasField("packets_received")
    assert not slot.vm_to_vf.HasField("packets_received")

    listener = unix_listener(path)  # the VM is up
    try:
        (slot,) = stats_request(sim, pb.StatsRequest(relay=[0])).relay
        assert slot.active and slot.vhost.vhost_socket_name == path
        assert (slot.vf_to_vm.internal_state, slot.vm_to_vf.internal_state) == (
            "DPDK_READY",
            "VIRTIO_READY",
        )
        assert slot.cpu.HasField("vf_to_vm") and slot.cpu.HasField("vm_to_vf")
        assert slot.vm_to_vf.HasField("packets_received")
        active_only = stats_request(sim, pb.StatsRequest(include_inactive=False))
        assert [r.id for r in active_only.relay] == [0]
    finally:
        listener.close()
    _unused(stats_request(sim, pb.StatsRequest(relay=[1])).relay[0])


def test_stats_relay_out_of_range_is_ok_and_empty(sim: ForwarderSimulator) -> None:
    resp = stats_request(sim, pb.StatsRequest(relay=[32, 1000]))
    assert resp.status == pb.StatsResponse.OK and list(resp.relay) == []
    mixed = stats_request(sim, pb.StatsRequest(relay=[40, 3]))
    assert [r.id for r in mixed.relay] == [3]
    too_many = stats_request(sim, pb.StatsRequest(relay=list(range(33))))
    assert too_many.status == pb.StatsResponse.E2BIG


def test_stats_slot_count_is_configurable(workdir: Path, sysfs: Path) -> None:
    with ForwarderSimulator(
        f"ipc://{workdir}/pc", f"ipc://{workdir}/st", sysfs_root=sysfs, max_relays=4
    ) as sim:
        assert [r.id for r in stats_request(sim, pb.StatsRequest()).relay] == [0, 1, 2, 3]


def test_client_counts_relays_in_use_not_slots(
    sim: ForwarderSimulator, client: ForwarderClient, workdir: Path
) -> None:
    a, b = vhost(workdir, "a"), vhost(workdir, "b")
    client.add_sock(VF1, a)
    client.add_sock(VF2, b)
    listener = unix_listener(b)  # the VM of b is up
    try:
        usage = client.relay_usage()
        assert (usage.used, usage.total) == (2, 32)
        assert [(r.relay_id, r.pci, r.vhost_path, r.active) for r in usage.relays] == [
            (0, VF1, None, False),  # the daemon names the socket once the VM is there
            (1, VF2, b, True),
        ]
        assert len(client.stats()) == 32
        assert [r.relay_id for r in client.stats(include_inactive=False)] == [1]
        assert [r.relay_id for r in client.stats(relays=[0])] == [0]
        assert client.stats(relays=[sim.max_relays]) == []
    finally:
        listener.close()

    sim.fail_next("STATS", 500)
    with pytest.raises(ForwarderError) as nomem:
        client.stats()
    assert nomem.value.error_code == pb.StatsResponse.ENOMEM
    with pytest.raises(ForwarderError) as too_big:
        client.stats(relays=range(sim.max_relays + 1))
    assert too_big.value.error_code == pb.StatsResponse.E2BIG


# -- a restart forgets every relay ---------------------------------------------------


def test_a_new_simulator_process_knows_no_relay(workdir: Path, sysfs: Path) -> None:
    state_file = workdir / "state.json"
    pc, st = f"ipc://{workdir}/pc", f"ipc://{workdir}/st"
    with ForwarderSimulator(pc, st, sysfs_root=sysfs, state_file=state_file) as first:
        with ForwarderClient(pc, st) as client:
            client.add_sock(VF1, vhost(workdir, "r"))
        assert len(first.relays()) == 1
    assert len(read_state(state_file)["relays"]) == 1  # left by the first one
    with ForwarderSimulator(pc, st, sysfs_root=sysfs, state_file=state_file) as second:
        assert second.relays() == []
        assert read_state(state_file)["relays"] == []
        with ForwarderClient(pc, st) as client:
            assert client.query_pci(vhost(workdir, "r")) is None
            assert client.relays_in_use() == []


@pytest.mark.root
def test_sim_restart_forwarder_forgets_relays(
    sim_host: Callable[..., SimulatedHost],
) -> None:
    host = sim_host(pfs=1, vfs_per_pf=2, with_forwarder=True)
    lay = host.layout
    vf = lay.pf_specs()[0].vfs[0].address
    SimulatedKernel(host.dir).bind_driver(vf, "vfio-pci")
    path = os.path.join(lay.vhost_dir, "vhu-restart")
    with ForwarderClient(lay.port_control_endpoint, lay.stats_endpoint) as client:
        client.add_sock(vf, path)
        assert client.relay_usage().used == 1
        before = host.processes()["virtio-forwarder-sim"]

        cli = os.path.join(os.path.dirname(sys.executable), "smartnic-vif")
        proc = subprocess.run(  # noqa: S603 - fixed argv, no shell
            [cli, "sim", "restart-forwarder", "--dir", host.dir],
            capture_output=True, text=True, timeout=60,
        )
        assert proc.returncode == 0, proc.stderr
        after = host.processes()["virtio-forwarder-sim"]
        assert after != before
        # Same endpoints, a fresh daemon: no relay.
        assert client.query_pci(path) is None
        usage = client.relay_usage()
        assert (usage.used, usage.total) == (0, 32)
    assert host.relays() == []
    host.restart_forwarder()  # the library call the CLI makes
    assert host.processes()["virtio-forwarder-sim"] not in (before, after)


# -- timeouts ----------------------------------------------------------------------


def test_timeout_replaces_the_socket(sim: ForwarderSimulator, workdir: Path) -> None:
    path = vhost(workdir, "t")
    with ForwarderClient(sim.port_control_endpoint, sim.stats_endpoint, timeout=0.3) as client:
        sim.drop_replies = True
        started = time.monotonic()
        with pytest.raises(ForwarderTimeout) as lost:
            client.add_sock(VF1, path)
        assert 0.25 < time.monotonic() - started < 1.5
        assert isinstance(lost.value, HostOperationError)
        assert lost.value.op == "ADD_SOCK"
        assert sim.replies_dropped == 1
        opened = client.sockets_opened

        sim.drop_replies = False
        # The daemon did the work although its answer was lost: the retry is
        # a no-op, answered on a fresh socket.
        client.add_sock(VF1, path)
        assert client.sockets_opened == opened + 1
        assert client.query_pci(path) == VF1
        assert client.sockets_opened == opened + 1  # healthy sockets are reused
        assert len(sim.relays()) == 1


def test_late_reply_is_not_taken_for_the_next_one(
    sim: ForwarderSimulator, client: ForwarderClient, workdir: Path
) -> None:
    a, b = vhost(workdir, "a"), vhost(workdir, "b")
    client.add_sock(VF1, a)
    client.add_sock(VF2, b)
    with ForwarderClient(sim.port_control_endpoint, sim.stats_endpoint, timeout=0.5) as slow:
        sim.delay = 0.7
        with pytest.raises(ForwarderTimeout):
            slow.query_pci(a)
        sim.delay = 0.0
        # The answer about `a` arrives while we wait for `b`; it went to the
        # closed socket, so this one reads the answer about `b`.
        assert slow.query_pci(b) == VF2


@pytest.mark.parametrize("scheme", ["ipc", "tcp"])
def test_no_daemon_is_a_quick_timeout(workdir: Path, scheme: str) -> None:
    if scheme == "ipc":
        pc, st = f"ipc://{workdir}/absent-pc", f"ipc://{workdir}/absent-st"
    else:
        with socket.socket() as s:  # a port nothing listens on
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        pc = st = f"tcp://127.0.0.1:{port}"
    with ForwarderClient(pc, st, timeout=0.2) as client:
        started = time.monotonic()
        with pytest.raises(ForwarderTimeout) as info:
            client.query_pci("/run/vhu")
        assert time.monotonic() - started < 1.0
        assert info.value.endpoint == pc and "is the daemon running" in str(info.value)
        with pytest.raises(ForwarderTimeout):
            client.stats()
        # Every call times out on its own socket; none hangs on a stuck one.
        with pytest.raises(ForwarderTimeout):
            client.add_sock(VF1, "/run/vhu")


def test_daemon_started_after_the_client(workdir: Path, sysfs: Path) -> None:
    pc, st = f"ipc://{workdir}/late-pc", f"ipc://{workdir}/late-st"
    with ForwarderClient(pc, st, timeout=0.2) as client:
        with pytest.raises(ForwarderTimeout):
            client.query_pci("/run/vhu")
        with ForwarderSimulator(pc, st, sysfs_root=sysfs):
            # The timed-out socket is gone; a new one finds the daemon.
            assert client.query_pci("/run/vhu") is None


# -- concurrency -------------------------------------------------------------------


def test_concurrent_clients(
    sim: ForwarderSimulator, client: ForwarderClient, workdir: Path
) -> None:
    errors: list[BaseException] = []
    n = 12

    def plug(i: int) -> None:
        try:
            pci = MANY[i]
            path = vhost(workdir, f"c{i}")
            if i % 2:
                # Half share one client between threads, half bring their own.
                client.add_sock(pci, path)
                assert client.query_pci(path) == pci
            else:
                with ForwarderClient(sim.port_control_endpoint, sim.stats_endpoint) as own:
                    own.add_sock(pci, path)
                    assert own.query_pci(path) == pci
        except BaseException as exc:  # reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=plug, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=10)
    assert errors == []
    relays = sim.relays()
    assert sorted(r.relay_id for r in relays) == list(range(n))
    assert len({r.device for r in relays}) == n
    assert len(client.relays_in_use()) == n


# -- lifecycle -------------------------------------------------------------------


def test_simulator_shuts_down_cleanly(workdir: Path, sysfs: Path) -> None:
    before = set(threading.enumerate())
    sim = ForwarderSimulator(
        f"ipc://{workdir}/pc", f"ipc://{workdir}/st", sysfs_root=sysfs,
        state_file=workdir / "s.json",
    ).start()
    assert (workdir / "pc").exists() and (workdir / "st").exists()
    assert sim.running
    with pytest.raises(RuntimeError):
        sim.start()
    sim.stop()
    sim.stop()  # idempotent
    assert not sim.running
    assert set(threading.enumerate()) == before
    assert not (workdir / "pc").exists() and not (workdir / "st").exists()
    assert read_state(workdir / "s.json")["running"] is False


def test_simulator_refuses_remote_endpoints(sysfs: Path) -> None:
    with pytest.raises(InvalidValue):
        ForwarderSimulator("tcp://0.0.0.0:5555", "ipc:///tmp/x", sysfs_root=sysfs)
    with pytest.raises(InvalidValue):
        ForwarderSimulator("ipc://relative", "ipc:///tmp/x", sysfs_root=sysfs)
    with pytest.raises(InvalidValue):
        ForwarderSimulator("ipc:///tmp/x", "ipc:///tmp/y", sysfs_root=sysfs / "absent")


def test_tcp_loopback_with_ephemeral_port(sysfs: Path) -> None:
    with (
        ForwarderSimulator("tcp://127.0.0.1:*", "tcp://127.0.0.1:*", sysfs_root=sysfs) as sim,
        ForwarderClient(sim.port_control_endpoint, sim.stats_endpoint) as client,
    ):
        assert not sim.port_control_endpoint.endswith(":*")
        client.add_sock(VF1, "/run/vhu-tcp")
        assert client.query_pci("/run/vhu-tcp") == VF1


def test_closed_client_refuses_requests(client: ForwarderClient) -> None:
    client.close()
    with pytest.raises(HostOperationError):
        client.query_pci("/run/vhu")
    with pytest.raises(HostOperationError):
        client.stats()


def test_state_file_follows_every_change(
    sim: ForwarderSimulator, client: ForwarderClient, workdir: Path
) -> None:
    state_file = workdir / "state.json"
    assert read_state(state_file)["relays"] == []
    path = vhost(workdir, "s")
    client.add_sock(VF1, path)
    (relay,) = read_state(state_file)["relays"]
    assert relay == {
        "relay_id": 0,
        "device": "0000:05:08.1",
        "pci_addrs": ["0000:05:08.1"],
        "vhost_path": path,
        "bond_mode": None,
    }
    client.remove_sock(vhost_path=path)
    assert read_state(state_file)["relays"] == []


# -- as a separate process ------------------------------------------------------------


def _wait_for(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting")
        time.sleep(0.02)


def test_simulator_process(workdir: Path, sysfs: Path) -> None:
    pc, st = f"ipc://{workdir}/run/pc", f"ipc://{workdir}/run/st"
    pidfile, state_file = workdir / "sim.pid", workdir / "state.json"
    proc = subprocess.Popen(  # noqa: S603 - our own module, fixed arguments
        [
            sys.executable,
            "-m",
            "smartnic_vif.sim.forwarder",
            "--port-control",
            pc,
            "--stats",
            st,
            "--pidfile",
            str(pidfile),
            "--state-file",
            str(state_file),
            "--sysfs-root",
            str(sysfs),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=REPO_ROOT,
    )
    try:
        _wait_for(lambda: pidfile.exists() or proc.poll() is not None)
        assert proc.poll() is None, proc.communicate()
        assert int(pidfile.read_text()) == proc.pid

        with ForwarderClient(pc, st, timeout=2.0) as client:
            path = vhost(workdir, "p")
            client.add_sock(VF1, path)
            state = read_state(state_file)
            assert state["pid"] == proc.pid and state["running"] is True
            assert [(r["device"], r["vhost_path"]) for r in state["relays"]] == [
                ("0000:05:08.1", path)
            ]
            assert client.query_pci(path) == VF1
            assert [r.relay_id for r in client.relays_in_use()] == [0]
            client.remove_sock(pci=VF1)
            assert read_state(state_file)["relays"] == []

        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=5)
        assert proc.returncode == 0, err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert not (workdir / "run" / "pc").exists()
    assert not (workdir / "run" / "st").exists()
    assert not pidfile.exists()
    assert read_state(state_file)["running"] is False


def test_simulator_process_rejects_bad_endpoint(workdir: Path) -> None:
    proc = subprocess.run(  # noqa: S603 - our own module, fixed arguments
        [sys.executable, "-m", "smartnic_vif.sim.forwarder", "--port-control", "tcp://0.0.0.0:1",
         "--sysfs-root", str(workdir)],
        capture_output=True,
        text=True,
        timeout=10,
        cwd=REPO_ROOT,
    )
    assert proc.returncode == 2
    assert "port_control_endpoint" in proc.stderr


@pytest.mark.root
def test_a_simulated_host_keeps_its_relay_slots_across_a_forwarder_restart(
    sim_host: Callable[..., SimulatedHost],
) -> None:
    # A daemon built with fewer relay slots: the limit is the host's, so a
    # restart (and a reboot, which restarts the daemon the same way) keeps it.
    host = sim_host(pfs=1, vfs_per_pf=3, with_forwarder=True, max_relays=2)
    lay = host.layout
    vfs = [vf.address for vf in lay.pf_specs()[0].vfs]
    for vf in vfs:
        SimulatedKernel(host.dir).bind_driver(vf, "vfio-pci")
    paths = [os.path.join(lay.vhost_dir, f"vhu-slot{n}") for n in range(3)]
    with ForwarderClient(lay.port_control_endpoint, lay.stats_endpoint) as client:
        for round_ in range(2):
            usage = client.relay_usage()
            assert (usage.used, usage.total) == (0, 2), round_
            client.add_sock(vfs[0], paths[0])
            client.add_sock(vfs[1], paths[1])
            with pytest.raises(ForwarderError) as full:
                client.add_sock(vfs[2], paths[2])
            assert (full.value.error_code, full.value.error_code_source) == (
                2, "virtio_add_sock_dev_pair()")
            host.restart_forwarder()
            assert client.relay_usage().used == 0
