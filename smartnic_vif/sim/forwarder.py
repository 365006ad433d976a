"""A virtio-forwarder simulator for the simulated SmartNIC host.

It answers the daemon's port control and stats protocols (protobuf over ZeroMQ,
``virtio_forwarder.proto``) exactly as the daemon does (the table "Exact
replies" and the section "Stats" of the protocol notes), but relays no
packets: a relay is a record pairing a VF (or a bond of VFs) with a vhost-user
socket path and a relay number. That is all the control plane of smartnic-vif
can observe, so the client, the os-vif plugin and the demo run unchanged
against it.

What it checks where the daemon asks DPDK: a VF can be attached (ADD_SOCK)
only if its PCI address exists under ``<sysfs_root>/sys/bus/pci/devices`` and
it is bound to a driver DPDK can probe it through (:data:`DPDK_DRIVERS`: the
userspace I/O drivers, or a bifurcated driver such as ``mlx5_core``);
otherwise ADD_SOCK answers ERROR 3 from ``virtio_add_sock_dev_pair()``, as the
daemon does when DPDK cannot probe the device.

Like the daemon it keeps relays only in memory: a new process starts with
none (the state file is written, never read).

Run it in-process (``with ForwarderSimulator(pc, stats, sysfs_root=R) as
sim: ...``) or as a process::

    python -m smartnic_vif.sim.forwarder --port-control ipc:///run/vf/pc \\
        --stats ipc:///run/vf/stats --sysfs-root R --pidfile F --state-file F

The process writes its relay table as JSON to ``--state-file`` after every
change, writes ``--pidfile`` once it is listening (so its presence means
"ready"), and exits cleanly on SIGTERM or SIGINT, removing its ipc socket files.

For tests it can fail the next request of an operation with a given error code
(:meth:`ForwarderSimulator.fail_next`), never answer (``drop_replies``) or
answer late (``delay``).
"""

from __future__ import annotations

import argparse
import errno
import fcntl
import functools
import json
import logging
import os
import signal
import stat
import threading
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any

import zmq

from smartnic_vif.host.forwarder import virtio_forwarder_pb2 as pb
from smartnic_vif.host.forwarder.client import (
    DEFAULT_PORT_CONTROL_ENDPOINT,
    DEFAULT_STATS_ENDPOINT,
)
from smartnic_vif.model.errors import InvalidValue
from smartnic_vif.model.types import PciAddress

LOG = logging.getLogger(__name__)

Op = pb.PortControlRequest.Op
OP_ADD = pb.PortControlRequest.ADD
OP_REMOVE = pb.PortControlRequest.REMOVE
OP_ADD_SOCK = pb.PortControlRequest.ADD_SOCK
OP_REMOVE_SOCK = pb.PortControlRequest.REMOVE_SOCK
OP_QUERY_PCI = pb.PortControlRequest.QUERY_PCI
# Pseudo-operation naming the stats endpoint in fail_next().
STATS = "STATS"

# The daemon has MAX_RELAYS relay slots, DPDK's RTE_MAX_ETHPORTS: 32 in
# Debian's DPDK build.
DEFAULT_MAX_RELAYS = 32
# The daemon checks virtio_id against a 7-bit range whatever its relay count.
_MAX_VIRTIO_ID = 0x7F
# The most relay slots a simulated daemon may have (one per virtio id).
MAX_RELAYS_LIMIT = _MAX_VIRTIO_ID + 1
# How often the server loop looks at the stop flag while idle.
_POLL_MS = 20
# Cap on StatsRequest.delay, so a test cannot stall the simulator for long.
_MAX_STATS_DELAY_MS = 1000

# error_code_source values: the daemon functions whose result is the code.
SOURCE_ADD_SOCK = "virtio_add_sock_dev_pair()"
SOURCE_REMOVE_SOCK = "virtio_remove_sock_dev_pair()"
SOURCE_QUERY_PCI = "virtio_query_pci()"
SOURCE_ADD = "virtio_forwarder_add_vf2()"
SOURCE_BOND_ADD = "virtio_forwarder_bond_add()"
SOURCE_REMOVE = "virtio_forwarder_remove_vf2()"
SOURCE_INTERNAL = "simulator"

_OP_SOURCES = {
    OP_ADD: SOURCE_ADD,
    OP_REMOVE: SOURCE_REMOVE,
    OP_ADD_SOCK: SOURCE_ADD_SOCK,
    OP_REMOVE_SOCK: SOURCE_REMOVE_SOCK,
    OP_QUERY_PCI: SOURCE_QUERY_PCI,
}
_OP_NAMES = {v: k for k, v in Op.items()}
_STATS_STATUSES = frozenset(pb.StatsResponse.Status.values())

# Drivers through which DPDK can probe a VF: the userspace I/O drivers, and
# the bifurcated mlx5 driver (DPDK's mlx5 PMD works beside the kernel's).
DPDK_DRIVERS = frozenset({"vfio-pci", "uio_pci_generic", "igb_uio", "mlx5_core"})
# What the daemon's stats say of a slot with nothing in it.
NO_VHOST = "NONE"


@dataclass(frozen=True)
class SimRelay:
    """One relay: a VF (or bond) paired with a vhost-user socket and a number.

    ``device`` is the daemon's name for what is attached: the VF's PCI address
    in the daemon's ``%04X:%02X:%02X.%X`` form, or the bond's name.
    ``vhost_path`` is None for relays made by the static ADD operation.
    """

    relay_id: int
    device: str
    pci_addrs: tuple[PciAddress, ...]
    vhost_path: str | None
    bond_mode: int | None = None

    @property
    def is_bond(self) -> bool:
        return len(self.pci_addrs) > 1

    def to_json(self) -> dict[str, Any]:
        return {
            "relay_id": self.relay_id,
            "device": self.device,
            "pci_addrs": [p.daemon_form() for p in self.pci_addrs],
            "vhost_path": self.vhost_path,
            "bond_mode": self.bond_mode,
        }

    @functools.cached_property
    def json_text(self) -> str:
        """:meth:`to_json` as compact JSON, made once: the state file is
        written whole on every relay change, and a relay never changes."""
        return json.dumps(self.to_json(), separators=(",", ":"))


class _DaemonError(Exception):
    """What the daemon would answer as ERROR; ``reason`` is its log line.

    ``code`` and ``source`` None: a bare ERROR, as the daemon answers a
    request that does not parse or fails its validation.
    """

    def __init__(self, code: int | None, source: str | None, reason: str) -> None:
        self.code = code
        self.source = source
        self.reason = reason
        super().__init__(reason)


def _refused(reason: str) -> _DaemonError:
    return _DaemonError(None, None, reason)


@dataclass(frozen=True)
class _InjectedFailure:
    error_code: int | None
    source: str | None


def _ipc_path(endpoint: str) -> str | None:
    return endpoint[len("ipc://"):] if endpoint.startswith("ipc://") else None


def simulator_endpoint(value: object, field: str) -> str:
    """Accept only endpoints that stay on this host: ipc://, inproc:// or loopback tcp://."""
    if isinstance(value, str):
        if value.startswith("ipc://") and value[len("ipc://"):].startswith("/"):
            return value
        if value.startswith("inproc://") and len(value) > len("inproc://"):
            return value
        for host in ("127.0.0.1", "localhost", "[::1]"):
            if value.startswith(f"tcp://{host}:"):
                return value
    raise InvalidValue(
        field, value, "expected ipc:///absolute/path, inproc://name or tcp://127.0.0.1:PORT"
    )


class ForwarderSimulator:
    """virtio-forwarder's control plane: port control and stats servers.

    The servers are ROUTER sockets, which a REQ client cannot tell from the
    daemon's REP sockets; unlike REP they can leave a request unanswered and
    still take the next one, which ``drop_replies`` needs.

    Changes are applied before the reply is held back (``delay``) or dropped
    (``drop_replies``), as when the daemon did the work but its answer was
    lost or late: the harder case for a caller.
    """

    def __init__(
        self,
        port_control_endpoint: str = DEFAULT_PORT_CONTROL_ENDPOINT,
        stats_endpoint: str = DEFAULT_STATS_ENDPOINT,
        *,
        sysfs_root: str | os.PathLike[str],
        max_relays: int = DEFAULT_MAX_RELAYS,
        state_file: str | os.PathLike[str] | None = None,
        delay: float = 0.0,
    ) -> None:
        self.sysfs_root = Path(sysfs_root)
        if not self.sysfs_root.is_dir():
            raise InvalidValue("sysfs_root", str(sysfs_root), "expected an existing directory")
        self._pc_endpoint = simulator_endpoint(port_control_endpoint, "port_control_endpoint")
        self._stats_endpoint = simulator_endpoint(stats_endpoint, "stats_endpoint")
        if (isinstance(max_relays, bool) or not isinstance(max_relays, int)
                or not 1 <= max_relays <= MAX_RELAYS_LIMIT):
            raise InvalidValue("max_relays", max_relays,
                               f"expected an integer 1-{MAX_RELAYS_LIMIT}")
        self.max_relays = max_relays
        self.state_file = Path(state_file) if state_file is not None else None
        # Read by the server thread on every request; plain attribute writes
        # are atomic, so tests may change them while it runs.
        self.delay = float(delay)
        self.drop_replies = False
        # Worker cores reported in the stats' cpu field.
        self._cpus = sorted(os.sched_getaffinity(0)) or [0]

        self._lock = threading.Lock()
        self._relays: dict[int, SimRelay] = {}
        self._failures: dict[int | str, deque[_InjectedFailure]] = {}
        self.log: deque[str] = deque(maxlen=1000)
        self.requests_handled = 0
        self.replies_dropped = 0

        self._context: zmq.Context | None = None
        self._pc_socket: zmq.Socket | None = None
        self._stats_socket: zmq.Socket | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._bound_ipc_paths: list[str] = []

    # -- lifecycle -----------------------------------------------------------

    @property
    def port_control_endpoint(self) -> str:
        """The bound endpoint (with the real port when tcp was bound to port 0 or *)."""
        return self._pc_endpoint

    @property
    def stats_endpoint(self) -> str:
        return self._stats_endpoint

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> ForwarderSimulator:
        """Bind both endpoints and serve them from a background thread."""
        if self._thread is not None:
            raise RuntimeError("simulator already started")
        self._context = zmq.Context()
        try:
            self._pc_socket = self._bind(self._pc_endpoint)
            self._pc_endpoint = self._last_endpoint(self._pc_socket)
            self._stats_socket = self._bind(self._stats_endpoint)
            self._stats_endpoint = self._last_endpoint(self._stats_socket)
        except BaseException:
            self._close_sockets()
            raise
        self._stop.clear()
        self._write_state(running=True)
        # Sockets made here are used only by the server thread from now on;
        # starting the thread is the memory barrier ZeroMQ asks for.
        self._thread = threading.Thread(
            target=self._serve, name="virtio-forwarder-simulator", daemon=True
        )
        self._thread.start()
        LOG.info(
            "virtio-forwarder simulator on %s (port control) and %s (stats)",
            self._pc_endpoint,
            self._stats_endpoint,
        )
        return self

    def stop(self) -> None:
        """Stop serving, close the sockets and remove their ipc files. Idempotent."""
        if self._thread is None:
            return
        self._stop.set()
        self._thread.join(timeout=10)
        if self._thread.is_alive():  # pragma: no cover - would be a bug in _serve
            raise RuntimeError("virtio-forwarder simulator thread did not stop")
        self._thread = None
        self._close_sockets()
        self._write_state(running=False)

    def __enter__(self) -> ForwarderSimulator:
        if self._thread is None:
            self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _bind(self, endpoint: str) -> zmq.Socket:
        assert self._context is not None
        path = _ipc_path(endpoint)
        if path is not None:
            # The daemon's packaging creates /var/run/virtio-forwarder; do the
            # same for wherever the simulator is told to listen.
            os.makedirs(os.path.dirname(path) or "/", exist_ok=True)
        sock = self._context.socket(zmq.ROUTER)
        sock.setsockopt(zmq.LINGER, 0)
        try:
            sock.bind(endpoint)
        except zmq.ZMQError:
            sock.close(linger=0)
            raise
        if path is not None:
            self._bound_ipc_paths.append(path)
        return sock

    @staticmethod
    def _last_endpoint(sock: zmq.Socket) -> str:
        value = sock.getsockopt(zmq.LAST_ENDPOINT)
        return value.decode() if isinstance(value, bytes) else str(value)

    def _close_sockets(self) -> None:
        for sock in (self._pc_socket, self._stats_socket):
            if sock is not None:
                sock.close(linger=0)
        self._pc_socket = self._stats_socket = None
        if self._context is not None:
            self._context.term()
            self._context = None
        for path in self._bound_ipc_paths:
            # libzmq usually unlinks its ipc file on close; make sure, but
            # never remove something that is not a socket.
            try:
                if stat.S_ISSOCK(os.lstat(path).st_mode):
                    os.unlink(path)
            except FileNotFoundError:
                pass
        self._bound_ipc_paths.clear()

    # -- test controls -------------------------------------------------------

    def fail_next(
        self, op: int | str, error_code: int | None, source: str | None = None
    ) -> None:
        """Answer the next request of ``op`` with ERROR ``error_code``, changing nothing.

        ``op`` is an operation name (``"ADD_SOCK"``), its enum value, or
        ``"STATS"``, for which ``error_code`` is a StatsResponse status (400,
        413 or 500). ``source`` defaults to the daemon function of that op;
        ``error_code=None`` sends a bare ERROR without code and source, as the
        daemon does for requests it refuses outright. Several calls queue up,
        one failure per request.
        """
        key = self._op_key(op)
        if key == STATS and error_code not in _STATS_STATUSES - {pb.StatsResponse.OK}:
            raise InvalidValue("error_code", error_code, "expected a StatsResponse error status")
        with self._lock:
            self._failures.setdefault(key, deque()).append(_InjectedFailure(error_code, source))

    @staticmethod
    def _op_key(op: int | str) -> int | str:
        if isinstance(op, str):
            name = op.upper()
            if name == STATS:
                return STATS
            if name in Op.keys():
                return Op.Value(name)
        elif isinstance(op, int) and not isinstance(op, bool) and op in _OP_NAMES:
            return op
        raise InvalidValue("op", op, f"expected one of {', '.join(Op.keys())} or STATS")

    def _pop_failure(self, key: int | str) -> _InjectedFailure | None:
        with self._lock:
            queue = self._failures.get(key)
            return queue.popleft() if queue else None

    def relays(self) -> list[SimRelay]:
        """A snapshot of the relay table, by relay number."""
        with self._lock:
            return [self._relays[k] for k in sorted(self._relays)]

    # -- server loop -----------------------------------------------------------

    def _serve(self) -> None:
        assert self._pc_socket is not None and self._stats_socket is not None
        handlers: list[tuple[zmq.Socket, Callable[[bytes], bytes]]] = [
            (self._pc_socket, self._handle_port_control),
            (self._stats_socket, self._handle_stats),
        ]
        poller = zmq.Poller()
        for sock, _ in handlers:
            poller.register(sock, zmq.POLLIN)
        while not self._stop.is_set():
            ready = dict(poller.poll(_POLL_MS))
            for sock, handler in handlers:
                if ready.get(sock, 0) & zmq.POLLIN and not self._stop.is_set():
                    self._serve_one(sock, handler)

    def _serve_one(self, sock: zmq.Socket, handler: Callable[[bytes], bytes]) -> None:
        try:
            frames = sock.recv_multipart(zmq.NOBLOCK)
        except zmq.Again:  # poll() may report readiness that is gone by now
            return
        # A REQ peer's message arrives as [routing id..., b"", body]; the
        # envelope goes back unchanged in front of the reply, as REP does.
        try:
            split = frames.index(b"")
        except ValueError:
            LOG.warning("simulator: ignoring a message without a REQ envelope")
            return
        envelope, body = frames[: split + 1], frames[split + 1 :]
        if len(body) != 1:
            LOG.warning("simulator: ignoring a %d-part request", len(body))
            return
        try:
            reply = handler(body[0])
        except Exception:  # a simulator bug must not kill the server thread
            LOG.exception("simulator: request handler failed")
            reply = self._port_control_error(None, SOURCE_INTERNAL)
        self.requests_handled += 1
        if self.drop_replies:
            self.replies_dropped += 1
            return
        if self.delay > 0 and self._stop.wait(self.delay):
            return
        sock.send_multipart([*envelope, reply])

    # -- port control ----------------------------------------------------------

    @staticmethod
    def _port_control_error(code: int | None, source: str | None) -> bytes:
        resp = pb.PortControlResponse(status=pb.PortControlResponse.ERROR)
        if code is not None:
            resp.error_code = code
        if source is not None:
            resp.error_code_source = source
        return resp.SerializeToString()

    def _handle_port_control(self, body: bytes) -> bytes:
        req = pb.PortControlRequest()
        try:
            req.ParseFromString(body)
        except Exception:  # protobuf raises DecodeError or RuntimeError
            self._note("PortControlRequest: undecodable request")
            return self._port_control_error(None, None)
        if not req.IsInitialized():
            self._note("PortControlRequest: required fields missing")
            return self._port_control_error(None, None)

        failure = self._pop_failure(req.op)
        if failure is not None:
            self._note(f"{_OP_NAMES[req.op]}: injected failure {failure.error_code}")
            if failure.error_code is None:
                return self._port_control_error(None, failure.source)
            return self._port_control_error(
                failure.error_code, failure.source or _OP_SOURCES[req.op]
            )
        try:
            self._validate(req)
            query = self._apply(req)
        except _DaemonError as exc:
            self._note(f"{_OP_NAMES[req.op]}: {exc.reason}")
            return self._port_control_error(exc.code, exc.source)
        resp = pb.PortControlResponse(status=pb.PortControlResponse.OK)
        if query is not None:
            resp.query_string = query
        return resp.SerializeToString()

    def _note(self, line: str) -> None:
        LOG.info("simulator: %s", line)
        self.log.append(line)

    def _validate(self, req: pb.PortControlRequest) -> None:
        """The daemon's checks before it acts; a failure is a bare ERROR."""
        op = req.op
        n_pci = len(req.pci_addrs)
        has_name = req.HasField("name")
        if has_name and n_pci < 2:
            raise _refused("Bond port operations require multiple PCI devices.")
        if not has_name and n_pci > 1:
            raise _refused("Bond port operations require an interface name.")
        if op in (OP_ADD, OP_REMOVE):
            if not req.HasField("virtio_id"):
                raise _refused("ADD and REMOVE require a virtio_id.")
            if req.virtio_id > _MAX_VIRTIO_ID:
                raise _refused(f"virtio_id {req.virtio_id} is out of range.")
        if op == OP_ADD and n_pci == 0:
            raise _refused("Invalid number of VFs specified in port add request (0).")
        if op == OP_QUERY_PCI and not req.vhost_path:
            raise _refused("QUERY_PCI requires a vhost_path.")
        if op in (OP_ADD_SOCK, OP_REMOVE_SOCK) and req.HasField("virtio_id"):
            self._note(f"{_OP_NAMES[op]}: virtio_id {req.virtio_id} ignored")

    def _apply(self, req: pb.PortControlRequest) -> str | None:
        pcis = tuple(
            PciAddress(a.domain, a.bus, a.slot, a.function) for a in req.pci_addrs
        )
        name = req.name if req.HasField("name") else None
        # The daemon's name for what is attached: the VF, or the bond's name.
        device = pcis[0].daemon_form() if len(pcis) == 1 else name
        mode = req.mode if req.HasField("mode") and name is not None else None
        path = req.vhost_path or None
        with self._lock:
            if req.op == OP_ADD_SOCK:
                # conditional is not looked at: the daemon ignores it here.
                self._add_sock(path, device, pcis, mode)
            elif req.op == OP_REMOVE_SOCK:
                self._remove_sock(path, device or "")
            elif req.op == OP_ADD:
                # conditional defaults to true on the wire; protobuf gives us that.
                if not self._add_static(req.virtio_id, device, pcis, mode, req.conditional):
                    return None
            elif req.op == OP_REMOVE:
                if not self._remove_static(req.virtio_id, device, req.conditional):
                    return None
            else:
                assert path is not None
                return self._query_pci(path)
            self._write_state_locked(running=True)
        return None

    def _holding(self, pci: PciAddress) -> SimRelay | None:
        """The relay that has ``pci`` attached, alone or in a bond."""
        for relay in self._relays.values():
            if pci in relay.pci_addrs:
                return relay
        return None

    def _by_path(self, path: str) -> SimRelay | None:
        for relay in self._relays.values():
            if relay.vhost_path == path:
                return relay
        return None

    def _unusable(self, pci: PciAddress) -> str | None:
        """Why DPDK could not probe ``pci`` on this host, or None if it can."""
        dev = self.sysfs_root / "sys" / "bus" / "pci" / "devices" / str(pci)
        if not dev.is_dir():
            return f"no PCI device {pci} under {self.sysfs_root}"
        try:
            driver = os.path.basename(os.readlink(dev / "driver"))
        except OSError:
            return f"{pci} is bound to no driver"
        if driver not in DPDK_DRIVERS:
            return f"{pci} is bound to {driver}, which DPDK cannot probe it through"
        return None

    def _add_sock(
        self,
        path: str | None,
        device: str | None,
        pcis: tuple[PciAddress, ...],
        mode: int | None,
    ) -> None:
        # The daemon's steps, in its order; each failure has its own code.
        src = SOURCE_ADD_SOCK
        if path is None:
            raise _DaemonError(-1, src, "vhost-path has to be specified")
        if len(pcis) == 1:
            other = self._holding(pcis[0])
        else:
            other = next((r for r in self._relays.values() if r.device == device), None)
        if other is not None:
            # Also the identical pair again: the daemon does not compare.
            raise _DaemonError(
                -errno.EEXIST,
                src,
                f"Device {device} is already attached to virtio-forwarder "
                f"(relay {other.relay_id})",
            )
        same_path = self._by_path(path)
        if same_path is not None:
            raise _DaemonError(
                1, src, f"Socket {path} is already registered with relay {same_path.relay_id}"
            )
        relay_id = next((i for i in range(self.max_relays) if i not in self._relays), None)
        if relay_id is None:
            raise _DaemonError(2, src, "Could not get idle relay for packet processing!")
        if len(pcis) == 1:
            why = self._unusable(pcis[0])
            if why is not None:
                raise _DaemonError(3, src, f"cannot attach {device}: {why}")
        else:
            why = "a bond needs PCI addresses" if not pcis else None
            for pci in pcis:
                holder = self._holding(pci)
                why = why or self._unusable(pci) or (
                    f"{pci} is attached to relay {holder.relay_id}" if holder else None
                )
            if why is not None:
                raise _DaemonError(4, src, f"cannot add bond {device}: {why}")
        assert device is not None
        self._relays[relay_id] = SimRelay(relay_id, device, pcis, path, mode)
        self._note(f"ADD_SOCK: relay {relay_id} pairs {device} with {path}")

    def _remove_sock(self, path: str | None, device: str) -> None:
        src = SOURCE_REMOVE_SOCK
        if path is None and not device:
            raise _DaemonError(-1, src, "Either pci-addr or vhost-path parameter should be passed!")
        if path is not None:
            relay = self._by_path(path)
        else:
            relay = next((r for r in self._relays.values() if r.device == device), None)
        if relay is None:
            # Whatever conditional says: the daemon ignores it here.
            raise _DaemonError(1, src, f"Could not get relay id for {path or device}")
        if device and device != relay.device and device not in (
            p.daemon_form() for p in relay.pci_addrs
        ):
            raise _DaemonError(
                2,
                src,
                f"The relay instance for socket {relay.vhost_path} has no device named "
                f"{device}. Not removing pair",
            )
        del self._relays[relay.relay_id]
        self._note(f"REMOVE_SOCK: relay {relay.relay_id} ({relay.device}) removed")

    def _query_pci(self, path: str) -> str:
        relay = self._by_path(path)
        if relay is None:
            raise _DaemonError(2, SOURCE_QUERY_PCI, f"No relay for socket {path}")
        # A bond answers with its first VF: QUERY_PCI names one device.
        return relay.pci_addrs[0].daemon_form()

    # The static form (ADD/REMOVE by virtio_id) is not used by smartnic-vif;
    # its codes below are the simulator's own, not observed on the daemon.

    def _add_static(
        self,
        relay_id: int,
        device: str | None,
        pcis: tuple[PciAddress, ...],
        mode: int | None,
        conditional: bool,
    ) -> bool:
        assert device is not None
        src = SOURCE_BOND_ADD if len(pcis) > 1 else SOURCE_ADD
        if relay_id >= self.max_relays:
            raise _DaemonError(-errno.EINVAL, src, f"Relay {relay_id} does not exist")
        current = self._relays.get(relay_id)
        if current is not None:
            if conditional and current.device == device and current.pci_addrs == pcis:
                self._note(f"ADD: relay {relay_id} already has {device}; nothing to do")
                return False
            raise _DaemonError(
                -errno.EEXIST, src, f"Relay {relay_id} is in use by {current.device}"
            )
        for pci in pcis:
            other = self._holding(pci)
            if other is not None:
                raise _DaemonError(
                    -errno.EEXIST,
                    src,
                    f"Device {device} is already attached to relay {other.relay_id}",
                )
            why = self._unusable(pci)
            if why is not None:
                raise _DaemonError(-errno.ENODEV, src, f"cannot attach {device}: {why}")
        self._relays[relay_id] = SimRelay(relay_id, device, pcis, None, mode)
        self._note(f"ADD: relay {relay_id} has {device}")
        return True

    def _remove_static(self, relay_id: int, device: str | None, conditional: bool) -> bool:
        current = self._relays.get(relay_id)
        if current is None:
            if conditional:
                self._note(f"REMOVE: relay {relay_id} is not in use; nothing to do")
                return False
            raise _DaemonError(-errno.ENOENT, SOURCE_REMOVE, f"Relay {relay_id} is not in use")
        if device is not None and current.device != device:
            raise _DaemonError(
                -errno.ENODEV,
                SOURCE_REMOVE,
                f"Relay {relay_id} has {current.device}, not {device}",
            )
        del self._relays[relay_id]
        self._note(f"REMOVE: relay {relay_id} ({current.device}) removed")
        return True

    # -- stats -------------------------------------------------------------------

    def _handle_stats(self, body: bytes) -> bytes:
        req = pb.StatsRequest()
        try:
            req.ParseFromString(body)
        except Exception:  # protobuf raises DecodeError or RuntimeError
            self._note("StatsRequest: undecodable request")
            return pb.StatsResponse(status=pb.StatsResponse.EBADR).SerializeToString()
        failure = self._pop_failure(STATS)
        if failure is not None:
            self._note(f"STATS: injected failure {failure.error_code}")
            assert failure.error_code is not None  # fail_next() checked it
            status = pb.StatsResponse.Status.Name(failure.error_code)
            return pb.StatsResponse(status=status).SerializeToString()
        wanted = list(req.relay)
        if len(wanted) > self.max_relays:
            return pb.StatsResponse(status=pb.StatsResponse.E2BIG).SerializeToString()
        if req.delay:
            # The daemon measures rates over `delay` ms; there is no traffic
            # here, but the caller still waits as it would.
            self._stop.wait(min(req.delay, _MAX_STATS_DELAY_MS) / 1000)
        with self._lock:
            relays = dict(self._relays)
        resp = pb.StatsResponse(status=pb.StatsResponse.OK)
        # Every slot when none is named; a number out of range is left out.
        for relay_id in wanted or range(self.max_relays):
            if relay_id >= self.max_relays:
                continue
            relay = relays.get(relay_id)
            vm_up = relay is not None and self._vm_connected(relay)
            if not vm_up and not req.include_inactive:
                continue
            self._fill_relay_state(resp.relay.add(), relay_id, relay, vm_up)
        return resp.SerializeToString()

    @staticmethod
    def _vm_connected(relay: SimRelay) -> bool:
        """Whether the VM's side of a relay is up: its vhost-user socket exists.

        With vhost-user client mode QEMU creates the socket and the daemon
        connects to it, so "a socket is there" is the simulated "VM is up".
        """
        if relay.vhost_path is None:
            return False
        try:
            return stat.S_ISSOCK(os.stat(relay.vhost_path).st_mode)
        except OSError:
            return False

    def _fill_relay_state(
        self, msg: pb.RelayState, relay_id: int, relay: SimRelay | None, vm_up: bool
    ) -> None:
        """One slot as the daemon reports it. A VF attached makes the VF-to-VM
        direction active (DPDK_ADDED, DPDK_READY once the VM is up too); the
        VM connected makes the VM-to-VF one active (VIRTIO_READY). Only an
        active direction has counters and a cpu; ``vf`` is there while the
        VF-to-VM direction is active and the socket's name while the VM-to-VF
        one is (else ``NONE``); ``ident`` is never set. Rates are required
        fields of the daemon's messages, so they are always there."""
        vf_up = relay is not None
        msg.id = relay_id
        msg.active = vf_up and vm_up
        msg.socket_id = 0
        msg.vhost.vhost_socket_name = (relay.vhost_path if relay and vm_up else None) or NO_VHOST
        up, down = msg.vf_to_vm, msg.vm_to_vf
        up.active = vf_up
        up.internal_state = ("DPDK_READY" if vm_up else "DPDK_ADDED") if vf_up else "DPDK_UNINIT"
        down.active = vm_up
        down.internal_state = "VIRTIO_READY" if vm_up else "VIRTIO_UNINIT"
        for direction in (up, down):
            direction.packet_rate_in = 0.0
            direction.byte_rate_in = 0.0
            direction.packet_rate_out = 0.0
            direction.byte_rate_out = 0.0
        if relay is not None:
            msg.vf.pci_addr_str = relay.device
            msg.cpu.vf_to_vm = self._cpus[(2 * relay_id) % len(self._cpus)]
            self._zero_counters(up)
        if vm_up:
            msg.cpu.vm_to_vf = self._cpus[(2 * relay_id + 1) % len(self._cpus)]
            self._zero_counters(down)

    @staticmethod
    def _zero_counters(direction: pb.RelayState.Direction) -> None:
        # No packets move here. The byte counts of drops are not filled in by
        # the daemon either.
        direction.packets_received = 0
        direction.bytes_received = 0
        direction.packets_transmitted = 0
        direction.bytes_transmitted = 0
        direction.packets_dropped_queue_full = 0
        direction.packets_dropped_not_connected = 0

    # -- state file ------------------------------------------------------------

    def _write_state(self, running: bool) -> None:
        with self._lock:
            self._write_state_locked(running)

    def _write_state_locked(self, running: bool) -> None:
        """Publish the relay table for other processes (:func:`read_state`)."""
        if self.state_file is None:
            return
        head = json.dumps(
            {
                "pid": os.getpid(),
                "running": running,
                "port_control_endpoint": self._pc_endpoint,
                "stats_endpoint": self._stats_endpoint,
            },
            separators=(",", ":"),
        )
        # Compact, and each relay serialised once: the table is written whole
        # on every relay change (the simulator's CPU competes with the plug
        # it serves on a small machine).
        relays = ",".join(self._relays[k].json_text for k in sorted(self._relays))
        _write_locked(self.state_file, f'{head[:-1]},"relays":[{relays}]}}\n')


def _write_locked(path: Path, text: str) -> None:
    """Rewrite ``path`` in place under an exclusive flock; readers take the
    shared one. Cheaper than a new file renamed over the old one, which on
    ext4 costs a file creation and a data flush on every relay change."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        data = text.encode()
        os.pwrite(fd, data, 0)
        os.ftruncate(fd, len(data))
    finally:
        os.close(fd)


def read_state(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a state file written by a simulator process."""
    with open(path) as f:
        fcntl.flock(f, fcntl.LOCK_SH)
        state: dict[str, Any] = json.load(f)
    return state


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m smartnic_vif.sim.forwarder",
        description="Simulated virtio-forwarder daemon (port control and stats endpoints).",
    )
    parser.add_argument("--port-control", default=DEFAULT_PORT_CONTROL_ENDPOINT)
    parser.add_argument("--stats", default=DEFAULT_STATS_ENDPOINT)
    parser.add_argument("--pidfile", type=Path, help="written once the endpoints are bound")
    parser.add_argument("--state-file", type=Path, help="relay table as JSON, after every change")
    parser.add_argument(
        "--sysfs-root",
        type=Path,
        required=True,
        help="root of the host's sysfs (/ on a real host): ADD_SOCK attaches only VFs "
        "present there and bound to a driver DPDK can use",
    )
    parser.add_argument(
        "--max-relays",
        type=int,
        default=DEFAULT_MAX_RELAYS,
        help=f"relay slots (the daemon's MAX_RELAYS; default {DEFAULT_MAX_RELAYS})",
    )
    parser.add_argument("--log-level", default="WARNING")
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(name)s: %(message)s")

    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    try:
        sim = ForwarderSimulator(
            args.port_control,
            args.stats,
            sysfs_root=args.sysfs_root,
            max_relays=args.max_relays,
            state_file=args.state_file,
        )
        sim.start()
    except (InvalidValue, zmq.ZMQError, OSError) as exc:
        parser.exit(2, f"virtio-forwarder simulator: {exc}\n")
    try:
        if args.pidfile is not None:
            _write_locked(Path(args.pidfile), f"{os.getpid()}\n")
        # Wake up now and then: a signal handler only runs between bytecodes
        # of the main thread, and a bare wait() could sit in C for long.
        while not stop.wait(0.2):
            pass
    finally:
        sim.stop()
        if args.pidfile is not None:
            try:
                args.pidfile.unlink()
            except FileNotFoundError:
                pass
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
