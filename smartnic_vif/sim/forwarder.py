"""A virtio-forwarder simulator for the simulated SmartNIC host.

It answers the daemon's port control and stats protocols (protobuf over ZeroMQ,
``virtio_forwarder.proto``) with the daemon's request validation and relay
bookkeeping, but relays no packets: a relay is a record pairing a VF (or a bond
of VFs) with a vhost-user socket path and a relay number. That is all the
control plane of smartnic-vif can observe, so the client, the os-vif plugin and
the demo run unchanged against it.

Run it in-process (``with ForwarderSimulator(pc, stats) as sim: ...``) or as a
process::

    python -m smartnic_vif.sim.forwarder --port-control ipc:///run/vf/pc \\
        --stats ipc:///run/vf/stats --pidfile F --state-file F

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

DEFAULT_MAX_RELAYS = 64
# The daemon checks virtio_id against a 7-bit range whatever its relay count.
_MAX_VIRTIO_ID = 0x7F
# How often the server loop looks at the stop flag while idle.
_POLL_MS = 20
# Cap on StatsRequest.delay, so a test cannot stall the simulator for long.
_MAX_STATS_DELAY_MS = 1000

# error_code_source values, named after the daemon functions that fail.
SOURCE_PARSE = "handle_PortControlRequest()"
SOURCE_VALIDATE = "validate_PortControlRequest()"
SOURCE_ADD_SOCK = "virtio_add_sock_dev_pair()"
SOURCE_REMOVE_SOCK = "virtio_remove_sock_dev_pair()"
SOURCE_QUERY_PCI = "virtio_query_sock_dev_pci()"
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
    """What the daemon would answer as ERROR; ``reason`` is its log line."""

    def __init__(self, code: int, source: str, reason: str) -> None:
        self.code = code
        self.source = source
        self.reason = reason
        super().__init__(reason)


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
        max_relays: int = DEFAULT_MAX_RELAYS,
        state_file: str | os.PathLike[str] | None = None,
        delay: float = 0.0,
        validation_error_codes: bool = True,
    ) -> None:
        self._pc_endpoint = simulator_endpoint(port_control_endpoint, "port_control_endpoint")
        self._stats_endpoint = simulator_endpoint(stats_endpoint, "stats_endpoint")
        if isinstance(max_relays, bool) or not isinstance(max_relays, int):
            raise InvalidValue("max_relays", max_relays, "expected an integer 1-128")
        if not 1 <= max_relays <= _MAX_VIRTIO_ID + 1:
            raise InvalidValue("max_relays", max_relays, "expected an integer 1-128")
        self.max_relays = max_relays
        self.state_file = Path(state_file) if state_file is not None else None
        # Read by the server thread on every request; plain attribute writes
        # are atomic, so tests may change them while it runs.
        self.delay = float(delay)
        self.drop_replies = False
        # The released daemon answers a request that fails validation with a
        # bare ERROR (no code, no source); False imitates that.
        self.validation_error_codes = validation_error_codes

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
            reply = self._port_control_error(-errno.EIO, SOURCE_INTERNAL)
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
            return self._port_control_error(-errno.EBADMSG, SOURCE_PARSE)
        if not req.IsInitialized():
            self._note("PortControlRequest: required fields missing")
            return self._port_control_error(-errno.EBADMSG, SOURCE_PARSE)

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
            if exc.source == SOURCE_VALIDATE and not self.validation_error_codes:
                return self._port_control_error(None, None)
            return self._port_control_error(exc.code, exc.source)
        resp = pb.PortControlResponse(status=pb.PortControlResponse.OK)
        if query is not None:
            resp.query_string = query
        return resp.SerializeToString()

    def _note(self, line: str) -> None:
        LOG.info("simulator: %s", line)
        self.log.append(line)

    def _validate(self, req: pb.PortControlRequest) -> None:
        """The daemon's checks of a request before it acts on it."""
        op = req.op
        n_pci = len(req.pci_addrs)
        has_name = req.HasField("name")

        def invalid(reason: str) -> _DaemonError:
            return _DaemonError(-errno.EINVAL, SOURCE_VALIDATE, reason)

        if op in (OP_ADD, OP_ADD_SOCK) and has_name and n_pci < 2:
            raise invalid("Bond port operations require multiple PCI devices.")
        if op in (OP_REMOVE, OP_REMOVE_SOCK) and not has_name and n_pci > 1:
            raise invalid(
                "Cannot specify multiple PCI addresses for VF removal. "
                "Provide name to remove a bond."
            )
        if not has_name and n_pci > 1:
            raise invalid("Bond port operations require an interface name.")
        if op in (OP_ADD, OP_ADD_SOCK) and n_pci == 0:
            raise invalid("Port add operations require a PCI address.")
        if op in (OP_ADD, OP_REMOVE):
            if not req.HasField("virtio_id"):
                raise invalid("ADD and REMOVE require a virtio_id.")
            if req.virtio_id >= self.max_relays:
                raise invalid(f"virtio_id {req.virtio_id} is out of range.")
        if op == OP_QUERY_PCI and not req.vhost_path:
            raise invalid("QUERY_PCI requires a vhost_path.")
        if op in (OP_ADD_SOCK, OP_REMOVE_SOCK) and req.HasField("virtio_id"):
            self._note(f"{_OP_NAMES[op]}: virtio_id {req.virtio_id} ignored")

    def _apply(self, req: pb.PortControlRequest) -> str | None:
        pcis = tuple(
            PciAddress(a.domain, a.bus, a.slot, a.function) for a in req.pci_addrs
        )
        # conditional defaults to true on the wire; protobuf gives us that.
        conditional = req.conditional
        name = req.name if req.HasField("name") else None
        device = name if name is not None else (pcis[0].daemon_form() if pcis else None)
        mode = req.mode if req.HasField("mode") and name is not None else None
        path = req.vhost_path or None
        with self._lock:
            if req.op == OP_ADD_SOCK:
                changed = self._add_sock(path, device, pcis, mode, conditional)
            elif req.op == OP_REMOVE_SOCK:
                changed = self._remove_sock(path, device, conditional)
            elif req.op == OP_ADD:
                changed = self._add_static(req.virtio_id, device, pcis, mode, conditional)
            elif req.op == OP_REMOVE:
                changed = self._remove_static(req.virtio_id, device, conditional)
            else:
                assert path is not None
                return self._query_pci(path)
            if changed:
                self._write_state_locked(running=True)
        return None

    def _attached(self, device: str, pcis: Sequence[PciAddress]) -> SimRelay | None:
        for relay in self._relays.values():
            if relay.device == device or set(relay.pci_addrs) & set(pcis):
                return relay
        return None

    def _by_path(self, path: str) -> SimRelay | None:
        for relay in self._relays.values():
            if relay.vhost_path == path:
                return relay
        return None

    def _add_sock(
        self,
        path: str | None,
        device: str | None,
        pcis: tuple[PciAddress, ...],
        mode: int | None,
        conditional: bool,
    ) -> bool:
        src = SOURCE_ADD_SOCK
        if path is None:
            raise _DaemonError(-errno.EINVAL, src, "vhost-path has to be specified")
        assert device is not None
        same_path = self._by_path(path)
        if (
            conditional
            and same_path is not None
            and same_path.device == device
            and same_path.pci_addrs == pcis
        ):
            self._note(f"ADD_SOCK: {device} is already paired with {path}; nothing to do")
            return False
        other = self._attached(device, pcis)
        if other is not None:
            raise _DaemonError(
                -errno.EEXIST,
                src,
                f"Device {device} is already attached to virtio-forwarder "
                f"(relay {other.relay_id})",
            )
        if same_path is not None:
            raise _DaemonError(
                -errno.EADDRINUSE,
                src,
                f"Socket {path} is already registered with relay {same_path.relay_id}",
            )
        relay_id = self._free_relay_id()
        self._relays[relay_id] = SimRelay(relay_id, device, pcis, path, mode)
        self._note(f"ADD_SOCK: relay {relay_id} pairs {device} with {path}")
        return True

    def _free_relay_id(self) -> int:
        for relay_id in range(self.max_relays):
            if relay_id not in self._relays:
                return relay_id
        raise _DaemonError(
            -errno.ENOSPC, SOURCE_ADD_SOCK, "Could not get idle relay for packet processing!"
        )

    def _remove_sock(self, path: str | None, device: str | None, conditional: bool) -> bool:
        src = SOURCE_REMOVE_SOCK
        if path is None and device is None:
            raise _DaemonError(
                -errno.EINVAL, src, "Either pci-addr or vhost-path parameter should be passed!"
            )
        if path is not None:
            relay = self._by_path(path)
        else:
            relay = next((r for r in self._relays.values() if r.device == device), None)
        if relay is None:
            if conditional:
                self._note(f"REMOVE_SOCK: no relay for {path or device}; nothing to do")
                return False
            raise _DaemonError(-errno.ENOENT, src, f"Could not get relay id for {path or device}")
        if device is not None and relay.device != device:
            raise _DaemonError(
                -errno.ENODEV,
                src,
                f"The relay instance for socket {relay.vhost_path} has no device named "
                f"{device}. Not removing pair",
            )
        del self._relays[relay.relay_id]
        self._note(f"REMOVE_SOCK: relay {relay.relay_id} ({relay.device}) removed")
        return True

    def _query_pci(self, path: str) -> str:
        relay = self._by_path(path)
        if relay is None:
            raise _DaemonError(-errno.ENOENT, SOURCE_QUERY_PCI, f"No relay for socket {path}")
        # A bond answers with its first VF: QUERY_PCI names one device.
        return relay.pci_addrs[0].daemon_form()

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
        current = self._relays.get(relay_id)
        if current is not None:
            if conditional and current.device == device and current.pci_addrs == pcis:
                self._note(f"ADD: relay {relay_id} already has {device}; nothing to do")
                return False
            raise _DaemonError(
                -errno.EEXIST, src, f"Relay {relay_id} is in use by {current.device}"
            )
        other = self._attached(device, pcis)
        if other is not None:
            raise _DaemonError(
                -errno.EEXIST,
                src,
                f"Device {device} is already attached to relay {other.relay_id}",
            )
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
        if any(r >= self.max_relays for r in wanted):
            return pb.StatsResponse(status=pb.StatsResponse.EBADR).SerializeToString()
        if req.delay:
            # The daemon measures rates over `delay` ms; there is no traffic
            # here, but the caller still waits as it would.
            self._stop.wait(min(req.delay, _MAX_STATS_DELAY_MS) / 1000)
        resp = pb.StatsResponse(status=pb.StatsResponse.OK)
        for relay in self.relays():
            if wanted and relay.relay_id not in wanted:
                continue
            active = self._relay_active(relay)
            if not active and not req.include_inactive:
                continue
            self._fill_relay_state(resp.relay.add(), relay, active)
        return resp.SerializeToString()

    @staticmethod
    def _relay_active(relay: SimRelay) -> bool:
        """A relay counts as active once its vhost-user socket exists.

        With vhost-user client mode QEMU creates the socket and the daemon
        connects to it, so "a socket is there" is the simulated "VM is up".
        """
        if relay.vhost_path is None:
            return False
        try:
            return stat.S_ISSOCK(os.stat(relay.vhost_path).st_mode)
        except OSError:
            return False

    @staticmethod
    def _fill_relay_state(msg: pb.RelayState, relay: SimRelay, active: bool) -> None:
        msg.id = relay.relay_id
        msg.active = active
        msg.ident = f"relay{relay.relay_id}"
        # No worker cores in a simulation: -1 means "not scheduled".
        msg.cpu.vf_to_vm = -1
        msg.cpu.vm_to_vf = -1
        msg.vhost.vhost_socket_name = relay.vhost_path or ""
        msg.vf.pci_addr_str = relay.device
        for direction in (msg.vf_to_vm, msg.vm_to_vf):
            direction.active = active
            direction.internal_state = "relaying" if active else "waiting for vhost-user peer"
            # All counters and rates stay 0: the simulator moves no packets,
            # but set them so readers see every field present.
            direction.packets_received = 0
            direction.bytes_received = 0
            direction.packets_transmitted = 0
            direction.bytes_transmitted = 0
            direction.packets_dropped_queue_full = 0
            direction.bytes_dropped_queue_full = 0
            direction.packets_dropped_not_connected = 0
            direction.bytes_dropped_not_connected = 0
            direction.packet_rate_in = 0.0
            direction.byte_rate_in = 0.0
            direction.packet_rate_out = 0.0
            direction.byte_rate_out = 0.0
        msg.socket_id = 0

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
    parser.add_argument("--max-relays", type=int, default=DEFAULT_MAX_RELAYS)
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
