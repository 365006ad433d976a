"""Client of the virtio-forwarder daemon's port control and stats endpoints.

virtio-forwarder binds ZeroMQ REP sockets and speaks protobuf
(``virtio_forwarder.proto``). This module sends one request and reads one reply
per call, and turns every way that can go wrong into an exception: an ERROR
reply is :class:`ForwarderError` (with the daemon's ``error_code`` and
``error_code_source``), no reply in time is :class:`ForwarderTimeout`, and a
reply that is not a valid message is :class:`ForwarderProtocolError`. The
earlier vendor plugin ran the daemon's sample script and took its exit status 1
for success, which that script also returns for ERROR and for a timeout; here a
failure can never pass as success.

Which operations the OpenStack path uses
----------------------------------------
The daemon must run with dynamic sockets enabled; a port's relay is then
driven only by:

* ``ADD_SOCK`` (:meth:`ForwarderClient.add_sock`) on plug: pair the port's VF
  with the vhost-user socket path that QEMU creates (libvirt ``mode='server'``;
  the daemon is the vhost-user client);
* ``REMOVE_SOCK`` (:meth:`ForwarderClient.remove_sock`) on unplug;
* ``QUERY_PCI`` (:meth:`ForwarderClient.query_pci`) to find which VF a socket
  is paired with (used for idempotency and by the operator CLI).

``ADD``/``REMOVE`` keyed by ``virtio_id`` are the daemon's older static form
(fixed relay numbers with daemon-named sockets); they are not exposed here.

The daemon ignores ``conditional`` in the *_SOCK operations: ADD_SOCK of a
pair that exists answers ERROR -17 and REMOVE_SOCK of a pair that is gone
ERROR 1. So both calls, when the daemon answers ERROR, check its actual state
(QUERY_PCI, or the stats for a VF given alone) before raising: a pair that
already exists (add) or is already gone (remove) is success. That makes plug
and unplug safe to repeat after a crash or a lost reply. Pass both the PCI
address and the path to :meth:`~ForwarderClient.remove_sock` when both are
known: the daemon then checks that they belong together.

Error codes are the daemon's own: in the *_SOCK operations the number of the
step of the function named in ``error_code_source`` that failed, -1 for a
missing argument, or a negated errno in a few places. They are reported as
numbers with their source, never named as errno values.

The stats endpoint lists every relay slot of the daemon, used or not: count
the relays in use with :attr:`RelayStats.in_use`
(:meth:`ForwarderClient.relay_usage`), never by the length of the list.
"""

from __future__ import annotations

import logging
import os
import stat
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from types import TracebackType

import zmq

from smartnic_vif.host.forwarder import virtio_forwarder_pb2 as pb
from smartnic_vif.model import types as model_types
from smartnic_vif.model.errors import HostOperationError, InvalidValue
from smartnic_vif.model.types import PciAddress

LOG = logging.getLogger(__name__)

DEFAULT_PORT_CONTROL_ENDPOINT = "ipc:///var/run/virtio-forwarder/port_control"
DEFAULT_STATS_ENDPOINT = "ipc:///var/run/virtio-forwarder/stats"
# The daemon's own sample client waits this long for a reply.
DEFAULT_TIMEOUT = 2.0

# sockaddr_un.sun_path is 108 bytes including the terminating NUL; the daemon
# (through DPDK's vhost library) cannot use a longer path.
MAX_VHOST_PATH_BYTES = model_types.MAX_SOCKET_PATH_BYTES
_UINT32_MAX = 0xFFFFFFFF

# QUERY_PCI's answer for a socket path that is not registered: "not paired",
# not a failure.
SOURCE_QUERY_PCI = "virtio_query_pci()"
_QUERY_NOT_REGISTERED = 2
# What the daemon says of a slot with no socket (stats' vhost_socket_name).
NO_VHOST = "NONE"

# What the daemon's codes mean, from its source ("Exact replies" in the
# protocol notes): said after the number, which stays as the daemon gave it.
_MEANINGS = {
    ("virtio_add_sock_dev_pair()", -1): "no vhost-user socket path given",
    ("virtio_add_sock_dev_pair()", -17): "the VF is already attached to a relay",
    ("virtio_add_sock_dev_pair()", 1): "the socket path is already registered",
    ("virtio_add_sock_dev_pair()", 2): "no free relay",
    ("virtio_add_sock_dev_pair()", 3): "the VF is not present or cannot be attached",
    ("virtio_add_sock_dev_pair()", 4): "the bond could not be made",
    ("virtio_add_sock_dev_pair()", 5): "the socket could not be registered",
    ("virtio_remove_sock_dev_pair()", -1): "neither a socket path nor a VF given",
    ("virtio_remove_sock_dev_pair()", 1): "no relay has that socket path or VF",
    ("virtio_remove_sock_dev_pair()", 2): "the socket path belongs to another VF",
    ("virtio_query_pci()", 2): "the socket path is not registered",
}

_OP_NAMES = {v: k for k, v in pb.PortControlRequest.Op.items()}
_STATS_STATUS_NAMES = {v: k for k, v in pb.StatsResponse.Status.items()}


class ForwarderError(HostOperationError):
    """The daemon answered ERROR.

    ``error_code`` is the daemon's code and ``error_code_source`` the daemon
    function that returned it (e.g. ``virtio_add_sock_dev_pair()``); the code
    is not an errno (see the module docstring). The daemon leaves both unset
    for a request it refuses outright (it does not parse or fails validation).
    """

    def __init__(
        self,
        op: str,
        error_code: int | None,
        error_code_source: str | None,
        detail: str = "",
    ) -> None:
        self.op = op
        self.error_code = error_code
        self.error_code_source = error_code_source
        self.detail = detail
        msg = f"virtio-forwarder {op} failed"
        if error_code_source:
            msg += f" in {error_code_source}"
        if error_code is not None:
            msg += f" with error code {error_code}"
            meaning = _MEANINGS.get((error_code_source or "", error_code))
            if meaning:
                msg += f" ({meaning})"
        elif error_code_source is None:
            msg += " without an error code (the daemon refused the request)"
        if detail:
            msg += f": {detail}"
        super().__init__(msg)


class ForwarderTimeout(HostOperationError):
    """No reply within the timeout: the daemon is not running, hung or slow.

    ZeroMQ connects lazily, so a daemon that is not running (no socket file,
    nothing listening) shows up as this, after ``timeout`` seconds. Whether the
    daemon carried out the request is unknown; the *_SOCK calls are safe to
    repeat.
    """

    def __init__(self, op: str, endpoint: str, timeout: float) -> None:
        self.op = op
        self.endpoint = endpoint
        self.timeout = timeout
        super().__init__(
            f"virtio-forwarder did not answer {op} on {endpoint} within {timeout:g} s "
            "(is the daemon running?)"
        )


class ForwarderProtocolError(HostOperationError):
    """The daemon's reply could not be decoded or lacks required fields."""


@dataclass(frozen=True)
class DirectionStats:
    """Counters of one direction of a relay (VF to VM or VM to VF)."""

    active: bool
    internal_state: str
    packets_received: int
    bytes_received: int
    packets_transmitted: int
    bytes_transmitted: int
    packets_dropped_queue_full: int
    bytes_dropped_queue_full: int
    packets_dropped_not_connected: int
    bytes_dropped_not_connected: int
    packet_rate_in: float
    byte_rate_in: float
    packet_rate_out: float
    byte_rate_out: float

    @classmethod
    def from_message(cls, msg: pb.RelayState.Direction) -> DirectionStats:
        return cls(
            active=msg.active,
            internal_state=msg.internal_state,
            packets_received=msg.packets_received,
            bytes_received=msg.bytes_received,
            packets_transmitted=msg.packets_transmitted,
            bytes_transmitted=msg.bytes_transmitted,
            packets_dropped_queue_full=msg.packets_dropped_queue_full,
            bytes_dropped_queue_full=msg.bytes_dropped_queue_full,
            packets_dropped_not_connected=msg.packets_dropped_not_connected,
            bytes_dropped_not_connected=msg.bytes_dropped_not_connected,
            packet_rate_in=msg.packet_rate_in,
            byte_rate_in=msg.byte_rate_in,
            packet_rate_out=msg.packet_rate_out,
            byte_rate_out=msg.byte_rate_out,
        )


@dataclass(frozen=True)
class RelayStats:
    """One relay slot as the stats endpoint reports it.

    ``pci`` is None when the daemon reports no VF or a name that is not a PCI
    address (a bond); ``vf_ident`` keeps the daemon's string either way.
    ``vhost_path`` is None when the daemon names no socket (``"NONE"``).
    """

    relay_id: int
    active: bool
    ident: str
    vhost_path: str | None
    pci: PciAddress | None
    vf_ident: str | None
    socket_id: int
    cpu_vf_to_vm: int | None
    cpu_vm_to_vf: int | None
    vf_to_vm: DirectionStats
    vm_to_vf: DirectionStats

    @property
    def in_use(self) -> bool:
        """Whether this slot holds a relay: it names a socket or has a VF.

        The daemon lists all its slots, so this (not the list's length) is
        what counts relays."""
        return self.vhost_path is not None or self.vf_ident is not None

    @classmethod
    def from_message(cls, msg: pb.RelayState) -> RelayStats:
        vhost_path = msg.vhost.vhost_socket_name if msg.HasField("vhost") else None
        if vhost_path == NO_VHOST:
            vhost_path = None
        vf_ident = msg.vf.pci_addr_str if msg.HasField("vf") else None
        pci: PciAddress | None = None
        if vf_ident:
            try:
                pci = PciAddress.parse(vf_ident)
            except InvalidValue:
                pci = None
        has_cpu = msg.HasField("cpu")
        return cls(
            relay_id=msg.id,
            active=msg.active,
            ident=msg.ident,
            vhost_path=vhost_path or None,
            pci=pci,
            vf_ident=vf_ident or None,
            socket_id=msg.socket_id,
            cpu_vf_to_vm=msg.cpu.vf_to_vm if has_cpu and msg.cpu.HasField("vf_to_vm") else None,
            cpu_vm_to_vf=msg.cpu.vm_to_vf if has_cpu and msg.cpu.HasField("vm_to_vf") else None,
            vf_to_vm=DirectionStats.from_message(msg.vf_to_vm),
            vm_to_vf=DirectionStats.from_message(msg.vm_to_vf),
        )


@dataclass(frozen=True)
class RelayUsage:
    """The daemon's relay slots: how many there are and which are in use."""

    total: int
    relays: tuple[RelayStats, ...]

    @property
    def used(self) -> int:
        return len(self.relays)


def vhost_socket_path(value: object, field: str = "vhost_path") -> str:
    """Check a vhost-user socket path the daemon can use; return it unchanged
    (:func:`smartnic_vif.model.types.vhost_socket_path`, without the
    directory check, which the plugin does before a plug)."""
    return model_types.vhost_socket_path(value, field)


def check_vhost_socket(path: str, dirs: Sequence[str], field: str = "vhost_path") -> None:
    """What a validated socket ``path`` names on this host, before a plug.

    QEMU in server mode deletes whatever is at the path before binding its
    socket there, so an existing file that is not a socket (a symlink
    included) is refused; a socket (a stale one, or the port's own) is fine.
    With ``dirs`` (the check is on), the path's directory, symlinks
    resolved, must still be inside one of them."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        pass
    except OSError as e:
        raise InvalidValue(field, path, f"cannot be checked: {e.strerror}") from None
    else:
        if not stat.S_ISSOCK(mode):
            raise InvalidValue(
                field, path, "exists and is not a socket (QEMU would delete it); "
                "choose another path or remove it"
            )
    if dirs:
        parent = os.path.realpath(os.path.dirname(path))
        real_dirs = [os.path.realpath(d) for d in dirs]
        if not any(parent == d or model_types.is_inside(parent, d) for d in real_dirs):
            raise InvalidValue(
                field, path, f"its directory is {parent} once symlinks are resolved, "
                f"outside the vhost-user socket directories ({', '.join(real_dirs)})"
            )


def _timeout(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value <= 3600:
        raise InvalidValue("timeout", value, "expected seconds, more than 0 and at most 3600")
    return float(value)


def _pci_message(pci: PciAddress) -> pb.PortControlRequest.PciAddress:
    return pb.PortControlRequest.PciAddress(
        domain=pci.domain, bus=pci.bus, slot=pci.slot, function=pci.function
    )


class _ReqChannel:
    """One REQ socket to one endpoint, used by one thread at a time.

    A REQ socket is a strict send/recv/send/recv state machine; after a reply
    timeout it is stuck waiting for a reply that may never come (or come late,
    answering the wrong request). So a socket that timed out is closed with
    linger 0 and the next request gets a new one; a socket is never reused
    after a timeout.
    """

    def __init__(self, context: zmq.Context, endpoint: str, timeout: float):
        self.endpoint = endpoint
        self.timeout = timeout
        self._context = context
        self._lock = threading.Lock()
        self._socket: zmq.Socket | None = None
        # Counts replaced sockets; lets tests and logs see that a timeout
        # really cost the socket.
        self.sockets_opened = 0

    def _open(self) -> zmq.Socket:
        sock = self._context.socket(zmq.REQ)
        timeout_ms = max(1, int(self.timeout * 1000))
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.SNDTIMEO, timeout_ms)
        sock.setsockopt(zmq.RCVTIMEO, timeout_ms)
        sock.connect(self.endpoint)
        self.sockets_opened += 1
        return sock

    def _discard(self) -> None:
        if self._socket is not None:
            self._socket.close(linger=0)
            self._socket = None

    def request(self, op: str, payload: bytes) -> bytes:
        with self._lock:
            try:
                if self._socket is None:
                    self._socket = self._open()
                self._socket.send(payload)
                return self._socket.recv()
            except zmq.Again:
                self._discard()
                raise ForwarderTimeout(op, self.endpoint, self.timeout) from None
            except zmq.ZMQError as exc:
                self._discard()
                raise HostOperationError(
                    f"virtio-forwarder {op} on {self.endpoint}: {exc}"
                ) from exc
            except BaseException:
                # Interrupted between send and recv (KeyboardInterrupt, say):
                # the REQ socket still waits for a reply, so it cannot be reused.
                self._discard()
                raise

    def close(self) -> None:
        with self._lock:
            self._discard()


class ForwarderClient:
    """Talks to one virtio-forwarder daemon; safe to share between threads.

    Each endpoint has its own REQ socket and lock, so concurrent callers are
    serialised per endpoint (the daemon answers one request at a time anyway).
    """

    def __init__(
        self,
        port_control_endpoint: str = DEFAULT_PORT_CONTROL_ENDPOINT,
        stats_endpoint: str = DEFAULT_STATS_ENDPOINT,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        port_control_endpoint = model_types.zmq_endpoint(
            port_control_endpoint, "port_control_endpoint")
        stats_endpoint = model_types.zmq_endpoint(stats_endpoint, "stats_endpoint")
        self._timeout = _timeout(timeout)
        # Our own context, so close() can end its I/O thread and nothing of
        # this client outlives it.
        self._context: zmq.Context = zmq.Context()
        self._port_control = _ReqChannel(self._context, port_control_endpoint, self._timeout)
        self._stats = _ReqChannel(self._context, stats_endpoint, self._timeout)
        self._closed = False

    @property
    def timeout(self) -> float:
        """Seconds to wait for each reply (fixed per client: it is set on the sockets)."""
        return self._timeout

    @property
    def port_control_endpoint(self) -> str:
        return self._port_control.endpoint

    @property
    def stats_endpoint(self) -> str:
        return self._stats.endpoint

    @property
    def sockets_opened(self) -> int:
        """How many REQ sockets this client has opened (grows after timeouts)."""
        return self._port_control.sockets_opened + self._stats.sockets_opened

    # -- port control --------------------------------------------------------

    def add_sock(self, pci: PciAddress | str, vhost_path: str) -> None:
        """Pair the VF ``pci`` with the vhost-user socket ``vhost_path`` (ADD_SOCK).

        Succeeds without change when exactly this pair already exists (the
        daemon answers ERROR -17; QUERY_PCI confirms the pair). Raises
        :class:`ForwarderError` when the VF or the path is taken by another
        pair, or the daemon fails otherwise.
        """
        addr = PciAddress.parse(pci)
        path = vhost_socket_path(vhost_path)
        req = pb.PortControlRequest(
            op=pb.PortControlRequest.ADD_SOCK,
            pci_addrs=[_pci_message(addr)],
            conditional=True,
            vhost_path=path,
        )
        try:
            self._port_control_call(req)
        except ForwarderError as exc:
            # The daemon refuses an identical pair (ERROR -17, conditional or
            # not); the pair being there is what we wanted.
            if self._confirm(exc, lambda: self._paired_pci(path) == addr):
                LOG.debug("ADD_SOCK %s %s: pair exists already (%s)", addr, path, exc)
                return
            raise
        LOG.info("virtio-forwarder: paired VF %s with %s", addr, path)

    def remove_sock(
        self, pci: PciAddress | str | None = None, vhost_path: str | None = None
    ) -> None:
        """Remove the pair of ``vhost_path`` and/or VF ``pci`` (REMOVE_SOCK).

        At least one is required; with both, the daemon removes the pair only
        if they belong together. Succeeds without change when no such pair
        exists (the daemon answers ERROR 1; QUERY_PCI or the stats confirm),
        so unplug can be repeated.
        """
        if pci is None and vhost_path is None:
            raise InvalidValue(
                "vhost_path", None, "give the socket path, the VF's PCI address or both"
            )
        addr = PciAddress.parse(pci) if pci is not None else None
        path = vhost_socket_path(vhost_path) if vhost_path is not None else None
        req = pb.PortControlRequest(op=pb.PortControlRequest.REMOVE_SOCK, conditional=True)
        if addr is not None:
            req.pci_addrs.append(_pci_message(addr))
        if path is not None:
            req.vhost_path = path
        try:
            self._port_control_call(req)
        except ForwarderError as exc:
            if self._confirm(exc, lambda: not self._pair_present(addr, path)):
                LOG.debug("REMOVE_SOCK %s %s: no such pair (%s)", addr, path, exc)
                return
            raise
        LOG.info("virtio-forwarder: removed pair %s %s", addr or "", path or "")

    def query_pci(self, vhost_path: str) -> PciAddress | None:
        """The VF paired with ``vhost_path`` (QUERY_PCI), or None if none is."""
        return self._paired_pci(vhost_socket_path(vhost_path))

    # -- stats ---------------------------------------------------------------

    def stats(self, relays: Iterable[int] = (), include_inactive: bool = True) -> list[RelayStats]:
        """Relay states from the stats endpoint; all relays when ``relays`` is empty."""
        ids = []
        for relay in relays:
            if isinstance(relay, bool) or not isinstance(relay, int):
                raise InvalidValue("relays", relay, "expected relay numbers (unsigned integers)")
            if not 0 <= relay <= _UINT32_MAX:
                raise InvalidValue("relays", relay, "expected relay numbers (unsigned integers)")
            ids.append(relay)
        req = pb.StatsRequest(relay=ids, include_inactive=bool(include_inactive))
        self._check_open()
        raw = self._stats.request("STATS", req.SerializeToString())
        reply = pb.StatsResponse()
        try:
            reply.ParseFromString(raw)
        except Exception as exc:  # protobuf raises DecodeError or RuntimeError
            raise ForwarderProtocolError(f"undecodable StatsResponse: {exc}") from exc
        if reply.status != pb.StatsResponse.OK:
            name = _STATS_STATUS_NAMES.get(reply.status, str(reply.status))
            raise ForwarderError("STATS", int(reply.status), "stats", f"status {name}")
        return [RelayStats.from_message(r) for r in reply.relay]

    def relay_usage(self) -> RelayUsage:
        """All of the daemon's relay slots (their number is its limit) and the
        relays in use among them, from one stats request."""
        slots = self.stats()
        return RelayUsage(total=len(slots), relays=tuple(r for r in slots if r.in_use))

    def relays_in_use(self) -> list[RelayStats]:
        """The relays that exist: slots with a socket or a VF."""
        return list(self.relay_usage().relays)

    # -- plumbing ------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise HostOperationError("virtio-forwarder client is closed")

    @staticmethod
    def _confirm(error: ForwarderError, check: Callable[[], bool]) -> bool:
        """Run ``check`` to see whether an ERROR reply left the wanted state.

        A failure of the check itself (a timeout, say) must not hide the
        daemon's original error, so it only makes the answer "not confirmed".
        """
        try:
            return check()
        except HostOperationError as check_error:
            LOG.warning("could not check the daemon's state after %s: %s", error, check_error)
            return False

    def _port_control_call(self, req: pb.PortControlRequest) -> pb.PortControlResponse:
        self._check_open()
        op = _OP_NAMES.get(req.op, str(req.op))
        raw = self._port_control.request(op, req.SerializeToString())
        reply = pb.PortControlResponse()
        try:
            reply.ParseFromString(raw)
        except Exception as exc:  # protobuf raises DecodeError or RuntimeError
            raise ForwarderProtocolError(f"undecodable PortControlResponse to {op}: {exc}") from exc
        if not reply.HasField("status"):
            raise ForwarderProtocolError(f"PortControlResponse to {op} has no status")
        if reply.status != pb.PortControlResponse.OK:
            raise ForwarderError(
                op,
                reply.error_code if reply.HasField("error_code") else None,
                reply.error_code_source if reply.HasField("error_code_source") else None,
            )
        return reply

    def _paired_pci(self, path: str) -> PciAddress | None:
        req = pb.PortControlRequest(op=pb.PortControlRequest.QUERY_PCI, vhost_path=path)
        try:
            reply = self._port_control_call(req)
        except ForwarderError as exc:
            if (exc.error_code, exc.error_code_source) == (
                _QUERY_NOT_REGISTERED,
                SOURCE_QUERY_PCI,
            ):
                return None
            raise
        if not reply.query_string:
            return None
        try:
            return PciAddress.parse(reply.query_string)
        except InvalidValue as exc:
            raise ForwarderProtocolError(
                f"QUERY_PCI {path}: daemon answered {reply.query_string!r}, not a PCI address"
            ) from exc

    def _pair_present(self, addr: PciAddress | None, path: str | None) -> bool:
        """Whether the daemon still has a pair using ``path`` or the VF ``addr``.

        With both, a path paired with another VF is not the pair asked for,
        unless ``addr`` is relayed too (the request mixes two pairs): the
        undo of an ADD_SOCK refused because another port's relay holds the
        path must not fail."""
        if path is not None:
            paired = self._paired_pci(path)
            if paired is None or addr is None or paired == addr:
                return paired is not None
        # The VF (alone, or beside another VF's path): QUERY_PCI is keyed by
        # path, so look at the relays.
        return any(relay.pci == addr for relay in self.relays_in_use())

    def close(self) -> None:
        """Close both sockets and the ZeroMQ context; the client is unusable after."""
        if self._closed:
            return
        self._closed = True
        self._port_control.close()
        self._stats.close()
        self._context.term()

    def __enter__(self) -> ForwarderClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
