"""The virtio-forwarder client against the simulator, in a thread and as a process.

Everything goes over real ZeroMQ ipc:// sockets in a private directory; the
simulator applies the daemon's validation and relay bookkeeping, so these tests
exercise the exact bytes and error paths the client sees from the daemon.
"""

from __future__ import annotations

import errno
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
from smartnic_vif.model.errors import HostOperationError, InvalidValue
from smartnic_vif.model.types import PciAddress
from smartnic_vif.sim.forwarder import (
    SOURCE_ADD_SOCK,
    SOURCE_PARSE,
    SOURCE_QUERY_PCI,
    SOURCE_REMOVE,
    SOURCE_REMOVE_SOCK,
    SOURCE_VALIDATE,
    ForwarderSimulator,
    read_state,
)

VF1 = PciAddress.parse("0000:05:08.1")
VF2 = PciAddress.parse("0000:05:08.2")
VF3 = PciAddress.parse("0000:81:1f.7")
Op = pb.PortControlRequest
# `python -m` finds the package from here even without an installed copy.
REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def workdir() -> Iterator[Path]:
    # pytest's tmp_path can exceed the 107-byte limit of a unix socket path
    # once a long test name is in it; a short private directory cannot.
    with tempfile.TemporaryDirectory(prefix="fwd-", dir="/tmp") as d:
        yield Path(d)


@pytest.fixture
def sim(workdir: Path) -> Iterator[ForwarderSimulator]:
    with ForwarderSimulator(
        f"ipc://{workdir}/port_control",
        f"ipc://{workdir}/stats",
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
    path = vhost(workdir, "idem")
    client.add_sock(VF1, path)
    client.add_sock(str(VF1), path)
    assert len(sim.relays()) == 1
    assert "nothing to do" in sim.log[-1]

    client.remove_sock(VF1, path)
    client.remove_sock(VF1, path)
    client.remove_sock(vhost_path=path)
    client.remove_sock(pci=VF1)
    assert sim.relays() == []


def test_conflicting_pairs_are_refused(
    sim: ForwarderSimulator, client: ForwarderClient, workdir: Path
) -> None:
    a, b = vhost(workdir, "a"), vhost(workdir, "b")
    client.add_sock(VF1, a)

    with pytest.raises(ForwarderError) as vf_taken:
        client.add_sock(VF1, b)
    assert vf_taken.value.error_code == -errno.EEXIST
    assert vf_taken.value.error_code_source == SOURCE_ADD_SOCK

    with pytest.raises(ForwarderError) as path_taken:
        client.add_sock(VF2, a)
    assert path_taken.value.error_code == -errno.EADDRINUSE
    assert path_taken.value.error_code_source == SOURCE_ADD_SOCK

    # A VF and a path that do not belong together are not removed.
    client.add_sock(VF2, b)
    with pytest.raises(ForwarderError) as mismatch:
        client.remove_sock(VF2, a)
    assert mismatch.value.error_code == -errno.ENODEV
    assert mismatch.value.error_code_source == SOURCE_REMOVE_SOCK
    assert client.query_pci(a) == VF1 and client.query_pci(b) == VF2


def test_unconditional_requests_report_no_op_as_error(
    sim: ForwarderSimulator, workdir: Path
) -> None:
    path = vhost(workdir, "u")
    add = Op(op=Op.ADD_SOCK, pci_addrs=[pci_msg(VF1)], vhost_path=path, conditional=False)
    assert raw_request(sim.port_control_endpoint, add.SerializeToString()).status == 1
    again = raw_request(sim.port_control_endpoint, add.SerializeToString())
    assert (again.status, again.error_code) == (pb.PortControlResponse.ERROR, -errno.EEXIST)

    remove = Op(op=Op.REMOVE_SOCK, vhost_path=path, conditional=False)
    assert raw_request(sim.port_control_endpoint, remove.SerializeToString()).status == 1
    gone = raw_request(sim.port_control_endpoint, remove.SerializeToString())
    assert (gone.status, gone.error_code) == (pb.PortControlResponse.ERROR, -errno.ENOENT)
    assert gone.error_code_source == SOURCE_REMOVE_SOCK


def test_client_stays_idempotent_when_the_daemon_ignores_conditional(
    sim: ForwarderSimulator, client: ForwarderClient, workdir: Path
) -> None:
    """Daemon releases that refuse an identical ADD_SOCK or a REMOVE_SOCK of a
    missing pair despite conditional=True must not break a repeated plug/unplug."""
    path = vhost(workdir, "c")
    client.add_sock(VF1, path)
    sim.fail_next("ADD_SOCK", -errno.EEXIST)
    client.add_sock(VF1, path)  # confirmed by QUERY_PCI: the pair is there

    client.remove_sock(VF1, path)
    sim.fail_next("REMOVE_SOCK", 1)
    client.remove_sock(VF1, path)  # confirmed by QUERY_PCI: nothing is paired
    sim.fail_next("REMOVE_SOCK", 1)
    client.remove_sock(pci=VF1)  # confirmed by stats: no relay has the VF


def test_injected_errors_become_forwarder_errors(
    sim: ForwarderSimulator, client: ForwarderClient, workdir: Path
) -> None:
    path = vhost(workdir, "e")
    sim.fail_next("ADD_SOCK", -errno.ENOMEM)
    with pytest.raises(ForwarderError) as add_failed:
        client.add_sock(VF1, path)
    assert add_failed.value.error_code == -errno.ENOMEM
    assert add_failed.value.error_code_source == SOURCE_ADD_SOCK
    assert add_failed.value.op == "ADD_SOCK"
    assert isinstance(add_failed.value, HostOperationError)
    assert sim.relays() == []  # the daemon rolled back

    client.add_sock(VF1, path)  # the next one goes through
    sim.fail_next(Op.REMOVE_SOCK, 5, source="deregister_socket()")
    with pytest.raises(ForwarderError) as remove_failed:
        client.remove_sock(vhost_path=path)
    assert (remove_failed.value.error_code, remove_failed.value.error_code_source) == (
        5,
        "deregister_socket()",
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


def test_no_free_relay(workdir: Path) -> None:
    with (
        ForwarderSimulator(
            f"ipc://{workdir}/pc", f"ipc://{workdir}/st", max_relays=2
        ) as sim,
        ForwarderClient(sim.port_control_endpoint, sim.stats_endpoint, timeout=2) as client,
    ):
        client.add_sock(VF1, vhost(workdir, "1"))
        client.add_sock(VF2, vhost(workdir, "2"))
        with pytest.raises(ForwarderError) as full:
            client.add_sock(VF3, vhost(workdir, "3"))
        assert full.value.error_code == -errno.ENOSPC
        client.remove_sock(pci=VF1)
        client.add_sock(VF3, vhost(workdir, "3"))
        assert {r.relay_id: r.device for r in sim.relays()} == {
            0: "0000:81:1F.7",
            1: "0000:05:08.2",
        }


# -- validation ------------------------------------------------------------------

BOND = [pci_msg(VF1), pci_msg(VF2)]

VALIDATION_CASES = {
    "bond add with one VF": (
        Op(op=Op.ADD_SOCK, pci_addrs=[pci_msg(VF1)], name="bond0", vhost_path="/x"),
        "require multiple PCI devices",
    ),
    "static bond add with one VF": (
        Op(op=Op.ADD, pci_addrs=[pci_msg(VF1)], name="bond0", virtio_id=1),
        "require multiple PCI devices",
    ),
    "several VFs without a name": (
        Op(op=Op.ADD_SOCK, pci_addrs=BOND, vhost_path="/x"),
        "require an interface name",
    ),
    "remove of several VFs without a name": (
        Op(op=Op.REMOVE_SOCK, pci_addrs=BOND, vhost_path="/x"),
        "Cannot specify multiple PCI addresses",
    ),
    "static remove of several VFs without a name": (
        Op(op=Op.REMOVE, pci_addrs=BOND, virtio_id=1),
        "Cannot specify multiple PCI addresses",
    ),
    "ADD without virtio_id": (
        Op(op=Op.ADD, pci_addrs=[pci_msg(VF1)]),
        "require a virtio_id",
    ),
    "REMOVE without virtio_id": (
        Op(op=Op.REMOVE, pci_addrs=[pci_msg(VF1)]),
        "require a virtio_id",
    ),
    "virtio_id out of range": (
        Op(op=Op.ADD, pci_addrs=[pci_msg(VF1)], virtio_id=200),
        "out of range",
    ),
    "QUERY_PCI without vhost_path": (Op(op=Op.QUERY_PCI), "requires a vhost_path"),
    "ADD_SOCK without a VF": (
        Op(op=Op.ADD_SOCK, vhost_path="/x"),
        "require a PCI address",
    ),
}


@pytest.mark.parametrize("case", sorted(VALIDATION_CASES))
def test_validation_errors(sim: ForwarderSimulator, case: str) -> None:
    request, logged = VALIDATION_CASES[case]
    resp = raw_request(sim.port_control_endpoint, request.SerializeToString())
    assert resp.status == pb.PortControlResponse.ERROR
    assert resp.error_code == -errno.EINVAL
    assert resp.error_code_source == SOURCE_VALIDATE
    assert logged in sim.log[-1]
    assert sim.relays() == []


@pytest.mark.parametrize(
    ("request_bytes", "code", "source"),
    [
        (Op(op=Op.ADD_SOCK, pci_addrs=[pci_msg(VF1)]).SerializeToString(), -errno.EINVAL,
         SOURCE_ADD_SOCK),
        (Op(op=Op.REMOVE_SOCK).SerializeToString(), -errno.EINVAL, SOURCE_REMOVE_SOCK),
        (b"\xff\xff\xff", -errno.EBADMSG, SOURCE_PARSE),  # not protobuf
        (b"\x3a\x02/x", -errno.EBADMSG, SOURCE_PARSE),  # required op missing
        (b"\x08\x09", -errno.EBADMSG, SOURCE_PARSE),  # unknown op
    ],
    ids=["add-sock-without-path", "remove-sock-without-target", "garbage", "no-op", "bad-op"],
)
def test_malformed_requests(
    sim: ForwarderSimulator, request_bytes: bytes, code: int, source: str
) -> None:
    resp = raw_request(sim.port_control_endpoint, request_bytes)
    assert (resp.status, resp.error_code, resp.error_code_source) == (
        pb.PortControlResponse.ERROR,
        code,
        source,
    )


def test_validation_errors_without_codes_like_the_released_daemon(
    sim: ForwarderSimulator,
) -> None:
    sim.validation_error_codes = False
    resp = raw_request(sim.port_control_endpoint, Op(op=Op.QUERY_PCI).SerializeToString())
    assert resp.status == pb.PortControlResponse.ERROR
    assert not resp.HasField("error_code") and not resp.HasField("error_code_source")


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
    ep = sim.port_control_endpoint

    def send(req: pb.PortControlRequest) -> pb.PortControlResponse:
        return raw_request(ep, req.SerializeToString())

    add = Op(op=Op.ADD, pci_addrs=[pci_msg(VF1)], virtio_id=5)
    assert send(add).status == pb.PortControlResponse.OK
    assert send(add).status == pb.PortControlResponse.OK  # conditional by default
    assert [(r.relay_id, r.vhost_path) for r in sim.relays()] == [(5, None)]

    taken = send(Op(op=Op.ADD, pci_addrs=[pci_msg(VF2)], virtio_id=5))
    assert taken.error_code == -errno.EEXIST
    vf_busy = send(Op(op=Op.ADD, pci_addrs=[pci_msg(VF1)], virtio_id=6))
    assert vf_busy.error_code == -errno.EEXIST

    # ADD_SOCK takes the lowest free relay, not 5.
    sock = Op(op=Op.ADD_SOCK, pci_addrs=[pci_msg(VF2)], vhost_path="/run/vhu-s", virtio_id=9)
    assert send(sock).status == pb.PortControlResponse.OK
    assert "virtio_id 9 ignored" in " ".join(sim.log)
    assert {r.relay_id for r in sim.relays()} == {0, 5}

    wrong = send(Op(op=Op.REMOVE, pci_addrs=[pci_msg(VF2)], virtio_id=5))
    assert (wrong.error_code, wrong.error_code_source) == (-errno.ENODEV, SOURCE_REMOVE)
    remove = Op(op=Op.REMOVE, pci_addrs=[pci_msg(VF1)], virtio_id=5)
    assert send(remove).status == pb.PortControlResponse.OK
    assert send(remove).status == pb.PortControlResponse.OK  # conditional: already gone
    remove.conditional = False
    assert send(remove).error_code == -errno.ENOENT
    assert {r.relay_id for r in sim.relays()} == {0}


def test_bond_add_sock(sim: ForwarderSimulator, client: ForwarderClient) -> None:
    req = Op(op=Op.ADD_SOCK, pci_addrs=BOND, name="bond0", mode=1, vhost_path="/run/vhu-b")
    assert raw_request(sim.port_control_endpoint, req.SerializeToString()).status == 1
    (relay,) = sim.relays()
    assert (relay.device, relay.pci_addrs, relay.bond_mode) == ("bond0", (VF1, VF2), 1)
    assert client.query_pci("/run/vhu-b") == VF1
    with pytest.raises(ForwarderError) as slave_busy:
        client.add_sock(VF2, "/run/vhu-other")
    assert slave_busy.value.error_code == -errno.EEXIST
    (stats,) = client.stats()
    assert stats.vf_ident == "bond0" and stats.pci is None


# -- stats -----------------------------------------------------------------------


def test_stats(sim: ForwarderSimulator, client: ForwarderClient, workdir: Path) -> None:
    a, b = vhost(workdir, "a"), vhost(workdir, "b")
    client.add_sock(VF1, a)
    client.add_sock(VF2, b)
    listener = unix_listener(b)  # the VM of b is up
    try:
        all_relays = client.stats()
        assert [(r.relay_id, r.pci, r.vhost_path, r.active) for r in all_relays] == [
            (0, VF1, a, False),
            (1, VF2, b, True),
        ]
        assert all_relays[1].vf_to_vm.active and all_relays[1].vm_to_vf.internal_state
        assert [r.relay_id for r in client.stats(include_inactive=False)] == [1]
        assert [r.relay_id for r in client.stats(relays=[0])] == [0]
    finally:
        listener.close()

    sim.fail_next("STATS", 500)
    with pytest.raises(ForwarderError) as nomem:
        client.stats()
    assert nomem.value.error_code == pb.StatsResponse.ENOMEM
    with pytest.raises(ForwarderError) as badr:
        client.stats(relays=[sim.max_relays])
    assert badr.value.error_code == pb.StatsResponse.EBADR
    with pytest.raises(ForwarderError) as too_big:
        client.stats(relays=range(sim.max_relays + 1))
    assert too_big.value.error_code == pb.StatsResponse.E2BIG


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


def test_daemon_started_after_the_client(workdir: Path) -> None:
    pc, st = f"ipc://{workdir}/late-pc", f"ipc://{workdir}/late-st"
    with ForwarderClient(pc, st, timeout=0.2) as client:
        with pytest.raises(ForwarderTimeout):
            client.query_pci("/run/vhu")
        with ForwarderSimulator(pc, st):
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
            pci = PciAddress(0, 0x10, i, 0)
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
    assert len(client.stats()) == n


# -- lifecycle -------------------------------------------------------------------


def test_simulator_shuts_down_cleanly(workdir: Path) -> None:
    before = set(threading.enumerate())
    sim = ForwarderSimulator(
        f"ipc://{workdir}/pc", f"ipc://{workdir}/st", state_file=workdir / "s.json"
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


def test_simulator_refuses_remote_endpoints() -> None:
    with pytest.raises(InvalidValue):
        ForwarderSimulator("tcp://0.0.0.0:5555", "ipc:///tmp/x")
    with pytest.raises(InvalidValue):
        ForwarderSimulator("ipc://relative", "ipc:///tmp/x")


def test_tcp_loopback_with_ephemeral_port() -> None:
    with (
        ForwarderSimulator("tcp://127.0.0.1:*", "tcp://127.0.0.1:*") as sim,
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


def test_simulator_process(workdir: Path) -> None:
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
            assert [r.relay_id for r in client.stats()] == [0]
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
        [sys.executable, "-m", "smartnic_vif.sim.forwarder", "--port-control", "tcp://0.0.0.0:1"],
        capture_output=True,
        text=True,
        timeout=10,
        cwd=REPO_ROOT,
    )
    assert proc.returncode == 2
    assert "port_control_endpoint" in proc.stderr
