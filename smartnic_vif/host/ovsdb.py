"""Open vSwitch database access through ovsdbapp's native IDL.

:class:`OvsdbClient` is the one place this project changes OVSDB: bridges,
ports and the standard Neutron metadata on a port's Interface
(``external_ids``: ``iface-id``, ``iface-status``, ``attached-mac``,
``vm-uuid``; plus ``mtu_request``).

Behaviour worth knowing:

- **One IDL connection per connection string** per process, shared by every
  client (a module-level cache under a lock, reference counted; the last
  ``close()`` stops it). ovsdbapp runs all transactions of a connection on
  one thread fed by a queue, so clients may be used from many threads.
- **A bridge's datapath_type is never changed.** ovsdbapp's
  ``add_br(may_exist=True, datapath_type=...)`` writes datapath_type on an
  existing bridge (os-vif's stock plugin turned userspace bridges into
  kernel ones that way); :meth:`OvsdbClient.ensure_bridge` decides inside the
  transaction and only sets it on a bridge it creates.
- **One transaction per call**: a port, its Interface and every column appear
  together; :meth:`OvsdbClient.set_ports` does a batch in one round trip.
- **Waiting for ovs-vswitchd**: by default (``wait_for_vswitchd=True``) every
  write bumps ``Open_vSwitch.next_cfg`` and returns only once ovs-vswitchd has
  applied it (``cur_cfg`` caught up), so a returned :class:`PortInfo` carries
  the ``ofport`` ovs-vswitchd assigned (``-1`` plus ``error`` if it could not
  open the device). If ovs-vswitchd does not catch up within the timeout the
  write is still committed; a new port's ``ofport`` is then ``None`` and a warning is
  logged. With ``wait_for_vswitchd=False`` a write returns once ovsdb-server
  committed it. The wait happens on the shared connection thread, holding the
  connection's lock (ovsdbapp's design), so writes from all clients of one
  connection are serialised and reads wait for a write in progress.
- **Races between processes**: two processes creating the same bridge or port
  name at the same moment make one transaction fail on OVSDB's unique name
  index (:class:`OvsdbError`, "constraint violation"); calling again succeeds
  and, the calls being idempotent, is the expected recovery.
- **Timeouts**: reaching the server (schema fetch and initial dump), queueing,
  committing and waiting for ovs-vswitchd are all bounded by ``timeout``; an
  unreachable OVSDB raises :class:`OvsdbError` instead of hanging. A write
  that timed out may still be committed later if the server was merely slow.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import queue
import re
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent import futures
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

# python-ovs's poller imports eventlet, if installed, only to ask whether it
# has monkey-patched select (then it works around an old eventlet bug). That
# import costs a read command ~0.1 s. A process that has not loaded eventlet
# by now has not patched anything with it (the CLI runs oslo.service's
# threading backend; nova-compute patches before loading plugins), so the
# poller is told there is none: the import fails, as without eventlet.
if "eventlet" not in sys.modules and "ovs.poller" not in sys.modules:
    sys.modules["eventlet"] = None  # type: ignore[assignment]
    try:
        from ovs import poller
    finally:
        del sys.modules["eventlet"]
from ovs import poller, stream  # noqa: E402 - after the block above
from ovsdbapp import exceptions as ovsdbapp_exc
from ovsdbapp.backend.ovs_idl import command as ovsdbapp_cmd
from ovsdbapp.backend.ovs_idl import connection as ovsdbapp_conn
from ovsdbapp.backend.ovs_idl import idlutils
from ovsdbapp.backend.ovs_idl import transaction as ovsdbapp_txn
from ovsdbapp.schema.open_vswitch import commands as ovs_commands
from ovsdbapp.schema.open_vswitch import impl_idl

from smartnic_vif import conf
from smartnic_vif.model.errors import HostOperationError, InvalidValue
from smartnic_vif.model.types import datapath_type, ifname, mac_address, mtu

LOG = logging.getLogger(__name__)

SCHEMA_NAME = "Open_vSwitch"

# The Interface columns this process replicates. ovs-vswitchd keeps rewriting
# the others (statistics, status, link_state, link_speed, mac_in_use, ...):
# each rewrite of a monitored column is sent here, parsed and applied by the
# IDL thread, which on a busy host cost more CPU than the plugs themselves.
# Every other table is replicated whole: they change rarely.
INTERFACE_COLUMNS = (
    "name", "type", "options", "external_ids", "other_config",
    "mtu_request", "ofport", "ofport_request", "error",
)

# What the read methods of OvsdbClient use, for a client that only reads
# (``tables=READ_TABLES``: status, doctor). Its connection replicates these
# columns alone, so the first monitor reply, which python-ovs parses in pure
# Python, is a fraction of the whole database's; such a client cannot write.
READ_TABLES: Mapping[str, tuple[str, ...]] = {
    "Open_vSwitch": ("other_config",),
    "Bridge": ("name", "ports", "datapath_type"),
    "Port": ("name", "interfaces"),
    "Interface": ("name", "type", "external_ids", "mtu_request", "ofport", "error"),
}


def _conf_default(name: str) -> Any:
    return next(opt.default for opt in conf.OPTS if opt.name == name)


DEFAULT_CONNECTION: str = _conf_default("ovsdb_connection")
DEFAULT_TIMEOUT: int = _conf_default("ovsdb_timeout")

# The keys of Interface.external_ids this module manages (what Neutron's
# agents read).
IFACE_ID = "iface-id"
IFACE_STATUS = "iface-status"
ATTACHED_MAC = "attached-mac"
VM_UUID = "vm-uuid"
MANAGED_EXTERNAL_IDS = frozenset({IFACE_ID, IFACE_STATUS, ATTACHED_MAC, VM_UUID})

_IFACE_TYPE_RE = re.compile(r"^[a-z0-9_]{0,64}$")
# Seconds a caller waits beyond ``timeout`` for the connection thread, whose own
# work is bounded by the same deadline, so both sides agree on the outcome.
_RESULT_GRACE = 1.0


class OvsdbError(HostOperationError):
    """An OVSDB operation failed: server unreachable, transaction failed or timed out."""


# Values ----------------------------------------------------------------------


@dataclass(frozen=True)
class PortInfo:
    """A port as read from OVSDB (the Port and its Interface of the same name)."""

    name: str
    bridge: str | None
    external_ids: dict[str, str]
    mtu_request: int | None
    ofport: int | None
    type: str
    error: str | None = None


@dataclass(frozen=True)
class PortSpec:
    """The wished state of one port, as :meth:`OvsdbClient.set_port` takes it."""

    bridge: str
    name: str
    iface_id: str
    mac: str
    vm_uuid: str
    mtu: int | None = None
    iface_status: str = "active"
    interface_type: str | None = None
    extra_external_ids: Mapping[str, str] = field(default_factory=dict)
    interface_options: Mapping[str, str] | None = None

    def validated(self) -> PortSpec:
        """A copy with every field checked and normalised; raises InvalidValue."""
        for fname in ("iface_id", "vm_uuid", "iface_status"):
            _plain_string(getattr(self, fname), fname.replace("_", "-"))
        extra = dict(self.extra_external_ids)
        for key, value in extra.items():
            _plain_string(key, "external_ids key")
            if not isinstance(value, str):
                raise InvalidValue(f"external_ids[{key}]", value, "expected a string")
            if key in MANAGED_EXTERNAL_IDS:
                raise InvalidValue(
                    "extra_external_ids", key, "this key is set from its own argument"
                )
        if self.interface_type is not None and (
            not isinstance(self.interface_type, str)
            or not _IFACE_TYPE_RE.fullmatch(self.interface_type)
        ):
            raise InvalidValue("interface_type", self.interface_type, "expected e.g. internal")
        options = None
        if self.interface_options is not None:
            options = {
                _plain_string(k, "options key"): _plain_string(v, f"options[{k}]")
                for k, v in self.interface_options.items()
            }
        return PortSpec(
            bridge=ifname(self.bridge, "bridge"),
            name=ifname(self.name, "port"),
            iface_id=self.iface_id,
            mac=mac_address(self.mac, "attached-mac"),
            vm_uuid=self.vm_uuid,
            mtu=None if self.mtu is None else mtu(self.mtu),
            iface_status=self.iface_status,
            interface_type=self.interface_type,
            extra_external_ids=extra,
            interface_options=options,
        )

    def external_ids(self) -> dict[str, str]:
        return {
            **dict(self.extra_external_ids),
            IFACE_ID: self.iface_id,
            IFACE_STATUS: self.iface_status,
            ATTACHED_MAC: self.mac,
            VM_UUID: self.vm_uuid,
        }


def _plain_string(value: object, fname: str) -> str:
    if (
        not isinstance(value, str)
        or not value
        or len(value) > 255
        or any(ord(c) < 0x20 or ord(c) == 0x7F for c in value)
    ):
        raise InvalidValue(fname, value, "expected 1-255 printable characters")
    return value


def _datapath_type(value: object) -> str:
    # Only what ovs-vswitchd implements: OVSDB itself takes any string, and a
    # bridge made with an unknown type stays in the database, unusable.
    return datapath_type(value, "datapath_type")


# Commands (run on the connection thread, inside the transaction) -------------


def _row(api: Any, table: str, name: str) -> Any:
    return idlutils.row_by_value(api.idl, table, "name", name, None)


def _bridge_of(api: Any, port_row: Any) -> Any:
    for br in api.tables["Bridge"].rows.values():
        if port_row in br.ports:
            return br
    return None


class _EnsureBridgeCommand(ovs_commands.AddBridgeCommand):
    """add-br --may-exist that sets datapath_type only on a bridge it creates."""

    def __init__(self, api: Any, name: str, datapath_type: str) -> None:
        super().__init__(api, name, True, datapath_type)
        self.created = False
        self.effective_datapath_type = datapath_type

    def run_idl(self, txn: Any) -> None:
        br = _row(self.api, "Bridge", self.name)
        if br is not None:
            self.created = False
            self.effective_datapath_type = br.datapath_type
            self.result = br.uuid
            return
        self.created = True
        self.effective_datapath_type = self.datapath_type
        super().run_idl(txn)


def _ensured(command: _EnsureBridgeCommand) -> str:
    """The effective datapath_type after ``command`` ran; says when an
    existing bridge has another one than asked for (it is never changed)."""
    effective: str = command.effective_datapath_type
    if not command.created and effective != command.datapath_type:
        LOG.warning(
            "bridge %s exists with datapath_type %r; not changing it to %r",
            command.name,
            effective,
            command.datapath_type,
        )
    return effective


class _SetPortCommand(ovsdbapp_cmd.BaseCommand):
    """Create or update one Port + Interface to match a PortSpec."""

    def __init__(self, api: Any, spec: PortSpec) -> None:
        super().__init__(api)
        self.spec = spec
        self.moved_from: str | None = None

    def run_idl(self, txn: Any) -> None:
        spec = self.spec
        br = _row(self.api, "Bridge", spec.bridge)
        if br is None:
            raise OvsdbError(f"cannot set port {spec.name}: bridge {spec.bridge} does not exist")
        port = _row(self.api, "Port", spec.name)
        if port is None:
            iface_row = _row(self.api, "Interface", spec.name)
            if iface_row is not None:
                raise OvsdbError(
                    f"cannot add port {spec.name} to {spec.bridge}: an interface of that "
                    "name already belongs to another port"
                )
            port = txn.insert(self.api.tables["Port"])
            port.name = spec.name
            iface = txn.insert(self.api.tables["Interface"])
            iface.name = spec.name
            txn.expected_ifaces.add(iface.uuid)
            port.interfaces = [iface]
            br.addvalue("ports", port)
            iface.external_ids = spec.external_ids()
            if spec.mtu is not None:
                iface.mtu_request = [spec.mtu]
            if spec.interface_type is not None:
                iface.type = spec.interface_type
            if spec.interface_options is not None:
                iface.options = dict(spec.interface_options)
            self.result = port.uuid
            return

        current = _bridge_of(self.api, port)
        if current is not None and current.name == spec.name:
            raise OvsdbError(
                f"cannot set port {spec.name} on {spec.bridge}: it is the local port of "
                f"bridge {current.name}"
            )
        ifaces = list(port.interfaces)
        if len(ifaces) != 1 or ifaces[0].name != spec.name:
            raise OvsdbError(
                f"cannot set port {spec.name} on {spec.bridge}: it has interfaces "
                f"{sorted(i.name for i in ifaces)} (a bond?), not one of its own name"
            )
        if current is None or current.uuid != br.uuid:
            # Move: the Port row (and its Interface) changes bridge in this
            # same transaction, so ovs-vswitchd sees it leave one bridge and
            # join the other at once.
            if current is not None:
                current.delvalue("ports", port)
                self.moved_from = current.name
            br.addvalue("ports", port)
        iface = ifaces[0]
        have = dict(iface.external_ids)
        for key, value in spec.external_ids().items():
            if have.get(key) != value:
                iface.setkey("external_ids", key, value)
        if spec.mtu is not None and list(iface.mtu_request) != [spec.mtu]:
            iface.mtu_request = [spec.mtu]
        if spec.interface_type is not None and iface.type != spec.interface_type:
            iface.type = spec.interface_type
        if spec.interface_options is not None and dict(iface.options) != dict(
            spec.interface_options
        ):
            iface.options = dict(spec.interface_options)
        self.result = port.uuid


class _DeletePortCommand(ovsdbapp_cmd.BaseCommand):
    """Delete a port (from ``bridge`` only, if given); absent is not an error."""

    def __init__(self, api: Any, port: str, bridge: str | None) -> None:
        super().__init__(api)
        self.port = port
        self.bridge = bridge
        self.result = False

    def run_idl(self, txn: Any) -> None:
        port = _row(self.api, "Port", self.port)
        if port is None:
            return
        br = _bridge_of(self.api, port)
        if self.bridge is not None and (br is None or br.name != self.bridge):
            LOG.info(
                "port %s is on bridge %s, not %s: left alone",
                self.port,
                br.name if br is not None else None,
                self.bridge,
            )
            return
        if br is not None:
            br.delvalue("ports", port)
        for iface in port.interfaces:
            iface.delete()
        port.delete()
        self.result = True


# Transaction -----------------------------------------------------------------


class PendingWrite:
    """A write handed to the OVSDB connection thread (see
    :meth:`OvsdbClient.begin_apply_ports`). :attr:`done` completes when the
    thread has its outcome; :meth:`wait` blocks until then and raises the
    write's error, as the blocking call would have."""

    def __init__(self, done: futures.Future[None], finish: Callable[[], None],
                 specs: list[PortSpec], what: str, deadline: float) -> None:
        self.done = done
        # After this (time.monotonic()) wait() gives up within _RESULT_GRACE.
        self.deadline = deadline
        self.specs = specs
        self.what = what
        self._finish = finish

    @classmethod
    def finished(cls) -> PendingWrite:
        done: futures.Future[None] = futures.Future()
        done.set_result(None)
        return cls(done, lambda: None, [], "", time.monotonic())

    def wait(self) -> None:
        self._finish()


class _ResultSlot(queue.Queue):  # type: ignore[type-arg]
    """ovsdbapp's result queue (the connection thread ``put()``s one result),
    which also completes :attr:`done`, so a caller can wait for it beside
    other work with :func:`concurrent.futures.wait`."""

    def __init__(self) -> None:
        super().__init__(1)
        self.done: futures.Future[None] = futures.Future()

    def put(self, item: Any, block: bool = True, timeout: float | None = None) -> None:
        super().put(item, block, timeout)
        self.done.set_result(None)


class _Transaction(impl_idl.OvsVsctlTransaction):
    """ovsdbapp's vsctl-like transaction with a per-call deadline.

    ovsdbapp's own waits ``timeout`` for the result while its connection thread
    may also spend up to ``timeout`` waiting for ovs-vswitchd, so a slow
    vswitchd made the caller see a timeout for a committed write. Here both
    sides use one deadline; the vswitchd wait ends at it and is reported in
    ``vswitchd_applied``; a caller that gave up marks the transaction abandoned
    so the connection thread skips it if it has not started it yet.
    """

    def __init__(self, api: Any, timeout: float, wait_for_vswitchd: bool) -> None:
        super().__init__(api, api.ovsdb_connection, check_error=True, log_errors=False)
        self.timeout = timeout
        self.wait_for_vswitchd = wait_for_vswitchd
        self.vswitchd_applied: bool | None = None
        self.deadline = time.monotonic() + timeout
        self.abandoned = False

    def pre_commit(self, txn: Any) -> None:
        if self.wait_for_vswitchd:
            super().pre_commit(txn)
        else:
            txn.expected_ifaces = set()

    def do_commit(self) -> Any:
        if self.abandoned:
            raise OvsdbError("transaction abandoned by its caller (timed out in the queue)")
        return super().do_commit()

    def post_commit(self, txn: Any) -> None:
        ovsdbapp_txn.Transaction.post_commit(self, txn)
        if not self.wait_for_vswitchd:
            return
        next_cfg = txn.get_increment_new_value()
        idl = self.api.idl
        while True:
            idl.run()
            if self.api._ovs.cur_cfg >= next_cfg:
                self.vswitchd_applied = True
                return
            remaining = self.deadline - time.monotonic()
            if remaining <= 0:
                self.vswitchd_applied = False
                return
            p = self.ovsdb_connection.poller
            p.timer_wait(remaining * 1000)
            idl.wait(p)
            p.block()

    def commit(self) -> Any:
        self.start()
        return self.wait()

    def start(self) -> None:
        """Hand the transaction to the connection thread; :attr:`done` is
        set once that thread has a result (:meth:`wait` then returns at once)."""
        self.deadline = time.monotonic() + self.timeout
        self.results = _ResultSlot()
        self.ovsdb_connection.queue_txn(self)

    @property
    def done(self) -> futures.Future[None]:
        return self.results.done

    def wait(self) -> Any:
        try:
            result = self.results.get(
                timeout=max(0.0, self.deadline - time.monotonic()) + _RESULT_GRACE
            )
        except queue.Empty as e:
            self.abandoned = True
            raise ovsdbapp_exc.TimeoutException(
                commands=self.commands, timeout=self.timeout, cause="no result"
            ) from e
        if isinstance(result, idlutils.ExceptionResult):
            raise result.ex
        return result


# Shared connections ----------------------------------------------------------


def _strerror(err: int) -> str:
    return os.strerror(err) if err > 0 else "connection closed"


def _fetch_schema(connection: str, timeout: float) -> Any:
    """get_schema from the first remote that answers, bounded by ``timeout``.

    ovsdbapp's own fetch blocks without a bound on a server that accepts but
    does not answer (or a TCP peer that never completes the handshake).
    python-ovs's stream carries the request (unix, tcp and ssl remotes
    alike); the reply, ~15 KB, is parsed by Python's json module: python-ovs
    parses JSON in pure Python, one character at a time, unless it was
    built with its C extension (~9 ms more per command here, for a schema
    that every read fetches).
    """
    deadline = time.monotonic() + timeout
    problems: list[str] = []
    for remote in idlutils.parse_connection(connection):
        remaining_ms = max(1, int((deadline - time.monotonic()) * 1000))
        try:
            err, strm = stream.Stream.open_block(stream.Stream.open(remote), remaining_ms)
        except Exception as e:  # an unparsable remote
            problems.append(f"{remote}: {e}")
            continue
        if err:
            problems.append(f"{remote}: {_strerror(err)}")
            continue
        try:
            schema, problem = _schema_over(strm, deadline)
        finally:
            strm.close()
        if problem is None:
            return schema
        problems.append(f"{remote}: {problem}")
        if time.monotonic() >= deadline:
            break
    raise OvsdbError(
        f"cannot reach OVSDB at {connection} within {timeout}s: " + "; ".join(problems)
    )


def _schema_over(strm: Any, deadline: float) -> tuple[Any, str | None]:
    """Send get_schema on an open python-ovs stream and wait for its reply
    until ``deadline``: (the schema, None) or (None, what went wrong)."""
    request = json.dumps({"method": "get_schema", "params": [SCHEMA_NAME],
                          "id": _SCHEMA_REQUEST_ID}).encode()
    received = b""
    decoder = json.JSONDecoder()
    while True:
        strm.run()
        if request:
            sent = strm.send(request)
            if sent > 0:
                request = request[sent:]
            elif sent != -errno.EAGAIN:
                return None, _strerror(-sent)
        err, data = strm.recv(65536)
        if err and err != errno.EAGAIN:
            return None, _strerror(err)
        if not err and not data:
            return None, _strerror(0)  # closed by the server
        received += data or b""
        while received:
            try:
                text = received.decode()
                message, end = decoder.raw_decode(text, len(text) - len(text.lstrip()))
            except (UnicodeDecodeError, ValueError):
                break  # not all of it yet
            received = text[end:].encode()
            if isinstance(message, dict) and message.get("id") == _SCHEMA_REQUEST_ID:
                if message.get("error") is not None:
                    return None, str(message["error"])
                return message.get("result"), None
            # Anything else (a server's echo request) is not our answer.
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return None, _strerror(errno.ETIMEDOUT)
        if err == errno.EAGAIN:
            p = poller.Poller()
            strm.run_wait(p)
            strm.recv_wait(p)
            if request:
                strm.send_wait(p)
            p.timer_wait(remaining * 1000)
            p.block()


_SCHEMA_REQUEST_ID = "smartnic-vif-get-schema"


_TablesKey = tuple[tuple[str, tuple[str, ...]], ...] | None


def _tables_key(tables: Mapping[str, Sequence[str]] | None) -> _TablesKey:
    if tables is None:
        return None
    return tuple(sorted((t, tuple(sorted(cols))) for t, cols in tables.items()))


class _SharedConnection:
    """One started ovsdbapp IDL connection and its API object. ``tables``:
    the only tables and columns to replicate (None: every table, Interface
    with :data:`INTERFACE_COLUMNS`)."""

    def __init__(self, connection: str, timeout: float, tables: _TablesKey = None) -> None:
        self.connection = connection
        self.key = (connection, tables)
        self.refs = 0
        deadline = time.monotonic() + timeout
        schema = _fetch_schema(connection, timeout)
        helper = idlutils.create_schema_helper(schema)
        if tables is not None:
            for table, columns in tables:
                if table not in schema["tables"]:
                    raise OvsdbError(f"OVSDB at {connection} has no table {table}")
                helper.register_columns(table, list(columns))
        else:
            for table in schema["tables"]:
                if table == "Interface":
                    helper.register_columns(table, list(INTERFACE_COLUMNS))
                else:
                    helper.register_table(table)
        raw_idl = ovsdbapp_conn.OvsdbIdl(connection, helper)
        # python-ovs backs off up to 8 s between reconnection attempts, so a
        # restarted ovsdb-server could stay unseen for longer than a call's
        # timeout; 2 s at most (1 s is python-ovs's minimum). Neutron reaches
        # into _session.reconnect the same way for the probe interval.
        session = getattr(raw_idl, "_session", None)
        if session is not None:
            session.reconnect.set_backoff(1000, 2000)
        remaining = max(0.1, deadline - time.monotonic())
        self.conn = ovsdbapp_conn.Connection(raw_idl, remaining)
        # ovsdbapp keeps a Backend's connection in a *class* attribute and
        # silently reuses the first one for any later connection string; a
        # fresh subclass per shared connection keeps them apart (and apart
        # from os-vif's own OvsdbIdl in the same process).
        api_cls = type("_SmartNICOvsdbIdl", (impl_idl.OvsdbIdl,), {
            "_ovsdb_connection": None,
            # os-vif's ImplAPI, so its ovs plugin can share this connection.
            "has_table_column": lambda api, table, column: column in api.tables[table].columns,
            "shared_by_smartnic_vif": True,
        })
        self.api = api_cls(self.conn, start=False)
        try:
            self.conn.start()
        except Exception as e:
            raw_idl.close()
            if isinstance(e, ovsdbapp_exc.TimeoutException):
                raise OvsdbError(
                    f"OVSDB at {connection} did not send its contents within {timeout}s"
                ) from e
            raise OvsdbError(f"cannot connect to OVSDB at {connection}: {e}") from e
        self.conn.timeout = timeout

    def ready(self) -> bool:
        """Connected and holding a complete copy of the database (not resyncing)."""
        raw_idl = self.conn.idl
        session = getattr(raw_idl, "_session", None)
        connected = bool(session.is_connected()) if session is not None else True
        return connected and raw_idl.state == raw_idl.IDL_S_MONITORING

    def stop(self) -> None:
        self.conn.stop(timeout=5)


_CACHE_LOCK = threading.Lock()
# (connection, tables) -> its shared connection.
_CACHE: dict[tuple[str, _TablesKey], _SharedConnection] = {}


def _acquire(connection: str, timeout: float, tables: _TablesKey = None) -> _SharedConnection:
    with _CACHE_LOCK:
        shared = _CACHE.get((connection, tables))
        if shared is None:
            shared = _SharedConnection(connection, timeout, tables)
            _CACHE[shared.key] = shared
        shared.refs += 1
        return shared


def _release(shared: _SharedConnection) -> None:
    with _CACHE_LOCK:
        shared.refs -= 1
        if shared.refs > 0:
            return
        if _CACHE.get(shared.key) is shared:
            del _CACHE[shared.key]
    shared.stop()


def close_connection(connection: str) -> None:
    """Stop the shared connections to ``connection`` now, whoever still uses them.

    Clients holding one reconnect on their next call. For tests and shutdown.
    """
    with _CACHE_LOCK:
        shared = [_CACHE.pop(k) for k in list(_CACHE) if k[0] == connection]
    for s in shared:
        s.stop()


def close_all() -> None:
    with _CACHE_LOCK:
        shared = list(_CACHE.values())
        _CACHE.clear()
    for s in shared:
        s.stop()


# Client ----------------------------------------------------------------------


class OvsdbClient:
    """Bridges and ports in one OVSDB, through a shared native IDL connection.

    The connection is opened on first use. Every method raises
    :class:`OvsdbError` naming the connection, bridge and port when OVSDB is
    unreachable or a transaction fails or times out, and
    :class:`~smartnic_vif.model.errors.InvalidValue` for a bad argument.
    """

    def __init__(
        self,
        connection: str = DEFAULT_CONNECTION,
        timeout: float = DEFAULT_TIMEOUT,
        *,
        wait_for_vswitchd: bool = True,
        tables: Mapping[str, Sequence[str]] | None = None,
    ) -> None:
        """``tables``: replicate only these tables and columns (e.g.
        :data:`READ_TABLES`), for a client that only reads; None: the whole
        database, as writes and os-vif's ovs plugin need."""
        if not isinstance(connection, str) or not connection:
            raise InvalidValue("ovsdb_connection", connection, "expected e.g. unix:/path")
        if isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout <= 0:
            raise InvalidValue("ovsdb_timeout", timeout, "expected a positive number of seconds")
        self.connection = connection
        self.timeout = float(timeout)
        self.wait_for_vswitchd = wait_for_vswitchd
        self.tables = _tables_key(tables)
        self._lock = threading.Lock()
        self._shared: _SharedConnection | None = None

    @classmethod
    def from_conf(cls, group: Any) -> OvsdbClient:
        """From an ``[os_vif_smartnic]`` group (see :mod:`smartnic_vif.conf`)."""
        return cls(group.ovsdb_connection, group.ovsdb_timeout)

    # Connection --------------------------------------------------------------

    def _connection(self) -> _SharedConnection:
        with self._lock:
            shared = self._shared
            if shared is not None:
                with _CACHE_LOCK:
                    alive = _CACHE.get(shared.key) is shared
                if alive:
                    return shared
                self._shared = None  # closed under us by close_connection()
            self._shared = _acquire(self.connection, self.timeout, self.tables)
            return self._shared

    def close(self) -> None:
        """Release this client's use of the shared connection (idempotent)."""
        with self._lock:
            shared, self._shared = self._shared, None
        if shared is not None:
            _release(shared)

    def __enter__(self) -> OvsdbClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def api(self) -> Any:
        """The ovsdbapp ``OvsdbIdl`` API, for commands this class does not wrap."""
        return self._connection().api

    # Transactions and reads --------------------------------------------------

    def _wait_ready(self, shared: _SharedConnection, deadline: float, what: str) -> None:
        while not shared.ready():
            if time.monotonic() >= deadline:
                raise OvsdbError(
                    f"{what}: not connected to OVSDB at {self.connection} (waited {self.timeout}s)"
                )
            time.sleep(0.02)

    def _commit(self, commands: Sequence[Any], what: str) -> _Transaction:
        txn = self._start(commands, what)
        self._finish(txn, what)
        return txn

    def _start(self, commands: Sequence[Any], what: str) -> _Transaction:
        if self.tables is not None:
            raise OvsdbError(f"{what}: this OVSDB client replicates only the tables it "
                             "reads; it cannot write")
        shared = self._connection()
        deadline = time.monotonic() + self.timeout
        self._wait_ready(shared, deadline, what)
        remaining = max(0.1, deadline - time.monotonic())
        txn = _Transaction(shared.api, remaining, self.wait_for_vswitchd)
        for command in commands:
            txn.add(command)
        txn.start()
        return txn

    def _finish(self, txn: _Transaction, what: str) -> None:
        try:
            txn.wait()
        except (OvsdbError, InvalidValue):
            raise
        except ovsdbapp_exc.TimeoutException as e:
            raise OvsdbError(
                f"{what}: OVSDB at {self.connection} did not complete the transaction "
                f"within {self.timeout}s"
            ) from e
        except Exception as e:
            raise OvsdbError(
                f"{what}: transaction on OVSDB at {self.connection} failed: {e}"
            ) from e
        if txn.vswitchd_applied is False:
            LOG.warning(
                "%s: committed to %s but ovs-vswitchd did not apply it within %ss",
                what,
                self.connection,
                self.timeout,
            )

    @contextmanager
    def _reading(self, what: str) -> Iterator[Any]:
        shared = self._connection()
        deadline = time.monotonic() + self.timeout
        self._wait_ready(shared, deadline, what)
        lock = shared.conn.lock
        if not lock.acquire(timeout=max(0.0, deadline - time.monotonic())):
            raise OvsdbError(f"{what}: OVSDB connection {self.connection} busy for {self.timeout}s")
        try:
            yield shared.api
        finally:
            lock.release()

    # Bridges -----------------------------------------------------------------

    def ensure_bridge(self, name: str, datapath_type: str) -> str:
        """Create bridge ``name`` with ``datapath_type`` unless it exists.

        An existing bridge is left exactly as it is, whatever its datapath_type
        (a warning is logged when it differs). Returns the bridge's effective
        datapath_type ("" means OVS's default, system).
        """
        name = ifname(name, "bridge")
        command = _EnsureBridgeCommand(self._connection().api, name, _datapath_type(datapath_type))
        self._commit([command], f"ensure bridge {name}")
        return _ensured(command)

    def delete_bridge(self, name: str) -> None:
        """Delete bridge ``name`` with its ports; absent is fine."""
        name = ifname(name, "bridge")
        api = self._connection().api
        self._commit([api.del_br(name, if_exists=True)], f"delete bridge {name}")

    def bridge_datapath_type(self, name: str) -> str | None:
        """The stored datapath_type of bridge ``name`` ("" = system), None if absent."""
        name = ifname(name, "bridge")
        with self._reading(f"bridge {name}") as api:
            br = _row(api, "Bridge", name)
            return None if br is None else str(br.datapath_type)

    def bridge_exists(self, name: str) -> bool:
        return self.bridge_datapath_type(name) is not None

    def session_state(self) -> tuple[int, bool]:
        """(seqno, ready) of the shared connection: python-ovs's session
        seqno grows each time the connection is lost or made again (an
        ovsdb-server restart, say), and ready means connected with a full
        copy of the database. Opens the connection if needed."""
        shared = self._connection()
        session = getattr(shared.conn.idl, "_session", None)
        seqno = int(session.get_seqno()) if session is not None else 0
        return seqno, shared.ready()

    def other_config(self) -> dict[str, str]:
        """The Open_vSwitch row's other_config (hw-offload, tc-policy, ...)."""
        with self._reading("read Open_vSwitch other_config") as api:
            rows = list(api.tables["Open_vSwitch"].rows.values())
            return dict(rows[0].other_config) if rows else {}

    def port_names(self) -> list[str]:
        """Names of every port on every bridge, sorted."""
        with self._reading("list every port") as api:
            return sorted(str(p.name) for p in api.tables["Port"].rows.values())

    def list_ports(self, bridge: str) -> list[str]:
        """Names of the ports of ``bridge``, without its local port, sorted."""
        bridge = ifname(bridge, "bridge")
        with self._reading(f"list ports of {bridge}") as api:
            br = _row(api, "Bridge", bridge)
            if br is None:
                raise OvsdbError(f"list ports: bridge {bridge} does not exist in {self.connection}")
            return sorted(p.name for p in br.ports if p.name != bridge)

    # Ports -------------------------------------------------------------------

    def set_port(
        self,
        bridge: str,
        port: str,
        *,
        iface_id: str,
        mac: str,
        vm_uuid: str,
        mtu: int | None = None,
        iface_status: str = "active",
        interface_type: str | None = None,
        extra_external_ids: Mapping[str, str] | None = None,
        interface_options: Mapping[str, str] | None = None,
    ) -> PortInfo:
        """Add or update ``port`` on ``bridge`` in one transaction.

        Interface ``external_ids`` get iface-id, iface-status, attached-mac,
        vm-uuid (and ``extra_external_ids``); other keys already there are
        kept. ``mtu``/``interface_type``/``interface_options`` of None leave
        those columns as they are. A port that exists on another bridge is
        moved to ``bridge`` in the same transaction (the Port row keeps its
        uuid); a bridge's local port or a bond is refused. Idempotent.
        Returns the port as read after the commit.
        """
        spec = PortSpec(
            bridge=bridge,
            name=port,
            iface_id=iface_id,
            mac=mac,
            vm_uuid=vm_uuid,
            mtu=mtu,
            iface_status=iface_status,
            interface_type=interface_type,
            extra_external_ids=dict(extra_external_ids or {}),
            interface_options=interface_options,
        )
        return self.set_ports([spec])[0]

    def apply_ports(
        self, specs: Iterable[PortSpec], create_bridges: Mapping[str, str] | None = None
    ) -> None:
        """:meth:`set_ports` without reading the ports back (a plug step needs
        only to know that the transaction and ovs-vswitchd are done)."""
        self.begin_apply_ports(specs, create_bridges).wait()

    def begin_apply_ports(
        self, specs: Iterable[PortSpec], create_bridges: Mapping[str, str] | None = None
    ) -> PendingWrite:
        """:meth:`apply_ports`, returning once the transaction is handed to the
        connection thread: the caller can do other work meanwhile, then
        :meth:`PendingWrite.wait` for it. Bad specs raise here, before
        anything is sent."""
        checked = [s.validated() for s in specs]
        if not checked:
            return PendingWrite.finished()
        names = [s.name for s in checked]
        if len(set(names)) != len(names):
            raise InvalidValue("ports", names, "a port name appears twice in one batch")
        api = self._connection().api
        bridge_commands = [
            _EnsureBridgeCommand(api, ifname(name, "bridge"), _datapath_type(dp))
            for name, dp in (create_bridges or {}).items()
        ]
        port_commands = [_SetPortCommand(api, s) for s in checked]
        if len(checked) == 1:
            what = f"set port {checked[0].name} on bridge {checked[0].bridge}"
        else:
            shown = ", ".join(names[:5]) + (", ..." if len(names) > 5 else "")
            what = f"set {len(checked)} ports ({shown})"
        txn = self._start([*bridge_commands, *port_commands], what)

        def finish() -> None:
            self._finish(txn, what)
            for b in bridge_commands:
                _ensured(b)
            for c in port_commands:
                if c.moved_from is not None:
                    LOG.info("port %s moved from bridge %s to %s",
                             c.spec.name, c.moved_from, c.spec.bridge)

        return PendingWrite(txn.done, finish, checked, what, txn.deadline)

    def set_ports(
        self, specs: Iterable[PortSpec], create_bridges: Mapping[str, str] | None = None
    ) -> list[PortInfo]:
        """:meth:`set_port` for many ports in ONE transaction (all or nothing).
        ``create_bridges``: bridge -> datapath_type, made first if missing."""
        pending = self.begin_apply_ports(specs, create_bridges)
        pending.wait()
        checked, what = pending.specs, pending.what
        if not checked:
            return []
        names = [s.name for s in checked]
        with self._reading(what) as api:
            infos = _port_infos(api, set(names), bridges={s.name: s.bridge for s in checked})
        by_name = {i.name: i for i in infos}
        missing = [n for n in names if n not in by_name]
        if missing:
            raise OvsdbError(f"{what}: ports {missing} not found in {self.connection} after commit")
        return [by_name[n] for n in names]

    def delete_port(self, port: str, bridge: str | None = None) -> bool:
        """Delete ``port`` (only from ``bridge`` if given). Returns whether it was deleted;
        an absent port, or one on another bridge than ``bridge``, is left alone."""
        port = ifname(port, "port")
        if bridge is not None:
            bridge = ifname(bridge, "bridge")
        command = _DeletePortCommand(self._connection().api, port, bridge)
        where = f" from bridge {bridge}" if bridge else ""
        self._commit([command], f"delete port {port}{where}")
        return bool(command.result)

    def get_port(self, name: str) -> PortInfo | None:
        name = ifname(name, "port")
        with self._reading(f"get port {name}") as api:
            infos = _port_infos(api, {name})
        return infos[0] if infos else None

    def find_ports_by_iface_id(self, iface_id: str) -> list[PortInfo]:
        """Every port whose Interface has external_ids:iface-id = ``iface_id``."""
        _plain_string(iface_id, IFACE_ID)
        with self._reading(f"find ports with iface-id {iface_id}") as api:
            return _port_infos(api, None, iface_id=iface_id)


    def ports_with_iface_id(self) -> list[PortInfo]:
        """Every port whose Interface has an external_ids:iface-id (any bridge)."""
        with self._reading("list ports with an iface-id") as api:
            return [p for p in _port_infos(api, None) if p.external_ids.get(IFACE_ID)]


def _port_infos(
    api: Any,
    names: set[str] | None,
    iface_id: str | None = None,
    bridges: Mapping[str, str] | None = None,
) -> list[PortInfo]:
    """PortInfo for ports named in ``names`` (all if None), optionally filtered
    by iface-id. ``bridges``: each port's bridge when the caller knows it (a
    port just written there), which spares a walk over every bridge's ports.
    Must be called with the connection lock held."""
    # Port names are unique in OVSDB.
    if names is not None:
        ports = [r for r in (_row(api, "Port", n) for n in sorted(names)) if r is not None]
    else:
        ports = sorted(api.tables["Port"].rows.values(), key=lambda r: r.name)
    bridge_of = dict(bridges) if bridges is not None else _bridges_of_ports(api)
    result = []
    for p in ports:
        ifaces = list(p.interfaces)
        iface = next((i for i in ifaces if i.name == p.name), ifaces[0] if ifaces else None)
        if iface is None:
            continue
        external_ids = dict(iface.external_ids)
        if iface_id is not None and external_ids.get(IFACE_ID) != iface_id:
            continue
        result.append(
            PortInfo(
                name=p.name,
                bridge=bridge_of.get(p.name),
                external_ids=external_ids,
                mtu_request=_optional(iface.mtu_request),
                ofport=_optional(iface.ofport),
                type=str(iface.type),
                error=_optional(iface.error),
            )
        )
    return result


def _bridges_of_ports(api: Any) -> dict[str, str]:
    """Port name -> its bridge's name, kept until the replica changes: a
    read of each plugged port (status) would otherwise walk every bridge's
    ports each time (python-ovs converts and sorts a column on each read)."""
    seqno = api.idl.change_seqno
    kept = getattr(api, "_smartnic_bridges_of_ports", None)
    if kept is not None and kept[0] == seqno:
        return kept[1]
    found = {p.name: br.name for br in api.tables["Bridge"].rows.values() for p in br.ports}
    api._smartnic_bridges_of_ports = (seqno, found)
    return found


def _optional(value: Any) -> Any:
    if isinstance(value, list):
        return value[0] if value else None
    return value
