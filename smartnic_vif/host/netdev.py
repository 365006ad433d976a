"""Netdev operations through netlink (pyroute2): read and change one link.

Called only from :mod:`smartnic_vif.host.privileged` and the kernel backends,
which validate every argument first.

Netlink sockets are kept, not opened per call: pyroute2 builds an asyncio
event loop and a socket for each IPRoute, which cost more CPU than the
requests themselves (about 0.8 ms against 0.2 ms per request).

- Root namespace: one IPRoute for the process. pyroute2 gives every thread
  its own socket and event loop under it, so threads never share a socket.
- Another namespace (the simulated host's VF ends): a socket belongs to the
  namespace it was opened in, and setns() switches one thread only. So each
  namespace gets one long-lived thread, switched into it, owning its socket;
  calls are handed to that thread. The thread ends after ``IDLE_SECONDS``
  without work, and is replaced when the namespace is deleted or made anew
  under the same name (a socket would otherwise keep the old one alive).
"""

from __future__ import annotations

import errno
import os
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, TypeVar

from pyroute2 import IPRoute
from pyroute2 import netns as pyroute2_netns
from pyroute2.netlink.exceptions import NetlinkError

from smartnic_vif.model.errors import HostOperationError, NotFound

T = TypeVar("T")

IDLE_SECONDS = 30.0
CLONE_NEWNET = 0x40000000

_ROOT_LOCK = threading.Lock()
_root: IPRoute | None = None


def _root_socket() -> Any:
    global _root
    with _ROOT_LOCK:
        if _root is None:
            _root = IPRoute()
        return _root


def _no_netns(netns: str) -> NotFound:
    return NotFound(f"network namespace {netns} does not exist")


def _netns_path(netns: str) -> str:
    return os.path.join(pyroute2_netns.NETNS_RUN_DIR, netns)


class _NamespaceThread:
    """One thread living in network namespace ``name``, running calls on
    its own socket there, one at a time."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.identity: tuple[int, int] | None = None  # (st_dev, st_ino) of the namespace
        self._jobs: queue.SimpleQueue[tuple[Callable[[Any], Any], Future[Any]] | None] = (
            queue.SimpleQueue()
        )
        self._started: Future[None] = Future()
        self._thread = threading.Thread(target=self._main, name=f"netns-{name}", daemon=True)
        self._thread.start()
        self._started.result()  # raises what entering the namespace raised

    def _enter(self) -> None:
        try:
            # O_RDONLY on the existing file: pyroute2's setns(name) would
            # create a missing namespace as a side effect (O_CREAT default).
            fd = os.open(_netns_path(self.name), os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            raise _no_netns(self.name) from None
        try:
            st = os.fstat(fd)
            self.identity = (st.st_dev, st.st_ino)
            pyroute2_netns.setns(fd, flags=0)
        except OSError as e:
            # EPERM without CAP_SYS_ADMIN, for one: say so, never lose it.
            raise HostOperationError(
                f"cannot enter network namespace {self.name}: {e}"
            ) from e
        finally:
            os.close(fd)

    def _main(self) -> None:
        try:
            self._enter()
            ipr = IPRoute()
        except BaseException as e:
            self._started.set_exception(e)
            return
        self._started.set_result(None)
        try:
            while True:
                try:
                    job = self._jobs.get(timeout=IDLE_SECONDS)
                except queue.Empty:
                    if _retire_if_idle(self):
                        return
                    continue
                if job is None:
                    return
                fn, future = job
                if not future.set_running_or_notify_cancel():
                    continue
                try:
                    future.set_result(fn(ipr))
                except BaseException as e:
                    future.set_exception(e)
        finally:
            ipr.close()

    def submit(self, fn: Callable[[Any], T]) -> Future[T]:
        future: Future[T] = Future()
        self._jobs.put((fn, future))
        return future

    def stop(self) -> None:
        """Finish the calls already handed over, then end."""
        self._jobs.put(None)

    def idle(self) -> bool:
        return self._jobs.empty()


_THREADS_LOCK = threading.Lock()
_threads: dict[str, _NamespaceThread] = {}


def _retire_if_idle(worker: _NamespaceThread) -> bool:
    with _THREADS_LOCK:
        if not worker.idle():
            return False
        if _threads.get(worker.name) is worker:
            del _threads[worker.name]
        return True


def _namespace_thread(netns: str) -> _NamespaceThread:
    """The live thread for ``netns``, started if needed. Called with
    ``_THREADS_LOCK`` held, so a call is never handed to a thread that is
    retiring."""
    worker = _threads.get(netns)
    try:
        st = os.stat(_netns_path(netns))
    except FileNotFoundError:
        if worker is not None:
            del _threads[netns]
            worker.stop()
        raise _no_netns(netns) from None
    if worker is not None and worker.identity != (st.st_dev, st.st_ino):
        del _threads[netns]  # deleted and made anew: the old socket is in the old one
        worker.stop()
        worker = None
    if worker is None:
        worker = _NamespaceThread(netns)
        _threads[netns] = worker
    return worker


def with_socket(netns: str | None, fn: Callable[[Any], T]) -> T:
    """``fn(ipr)`` with a netlink socket in ``netns`` (None: this process's
    own namespace). Never creates a namespace."""
    if not netns:
        return fn(_root_socket())
    with _THREADS_LOCK:
        future = _namespace_thread(netns).submit(fn)
    return future.result()


def close_all() -> None:
    """Close every kept socket and end the namespace threads (tests, shutdown)."""
    global _root
    with _THREADS_LOCK:
        workers = list(_threads.values())
        _threads.clear()
    for worker in workers:
        worker.stop()
    with _ROOT_LOCK:
        root, _root = _root, None
    if root is not None:
        root.close()


def _lookup(ipr: Any, ifname: str) -> Any | None:
    """The link message for ``ifname``, or None. One RTM_GETLINK by name: a
    host with hundreds of representors makes link_lookup's full dump slow."""
    try:
        return ipr.link("get", ifname=ifname)[0]
    except NetlinkError as e:
        if e.code == errno.ENODEV:
            return None
        raise


def get_link(ifname: str, netns: str | None = None) -> dict[str, Any] | None:
    """Name, MAC, MTU and admin state of a link; None when it does not exist."""

    def read(ipr: Any) -> dict[str, Any] | None:
        msg = _lookup(ipr, ifname)
        if msg is None:
            return None
        return {
            "ifname": msg.get_attr("IFLA_IFNAME"),
            "mac": msg.get_attr("IFLA_ADDRESS"),
            "mtu": msg.get_attr("IFLA_MTU"),
            "up": bool(msg["flags"] & 1),
        }

    return with_socket(netns, read)


def set_link(
    ifname: str,
    *,
    netns: str | None = None,
    mtu: int | None = None,
    mac: str | None = None,
    up: bool | None = None,
    new_name: str | None = None,
    or_name: str | None = None,
) -> None:
    """Change one link. A rename needs the link down, so it is done first with
    the link brought down, and the requested (or previous) state restored.

    ``or_name``: when ``ifname`` does not exist but ``or_name`` does, change
    that one instead (and do not rename it to itself)."""
    changes: dict[str, Any] = {}
    if mtu is not None:
        changes["mtu"] = mtu
    if mac is not None:
        changes["address"] = mac
    if up is not None:
        changes["state"] = "up" if up else "down"

    def change(ipr: Any) -> None:
        target = ifname
        rename = new_name if new_name != ifname else None
        if rename is None and changes:
            # The usual case: one request, the kernel finds the link by name.
            try:
                ipr.link("set", ifname=target, **changes)
                return
            except NetlinkError as e:
                if e.code != errno.ENODEV or or_name is None:
                    _raise(e, target, or_name, netns)
        msg = _lookup(ipr, target)
        if msg is None and or_name is not None:
            msg = _lookup(ipr, or_name)
            if msg is not None:
                target = or_name
                if rename == or_name:
                    rename = None
        if msg is None:
            raise _not_found(ifname, or_name, netns)
        index = int(msg["index"])
        wanted = dict(changes)
        try:
            if rename is not None:
                was_up = bool(msg["flags"] & 1)
                if was_up:
                    ipr.link("set", index=index, state="down")
                try:
                    ipr.link("set", index=index, ifname=rename)
                except NetlinkError:
                    # A refused rename (name taken, ...) must not leave the
                    # link down as a side effect.
                    if was_up:
                        ipr.link("set", index=index, state="up")
                    raise
                if up is None and was_up:
                    wanted["state"] = "up"
            if wanted:
                # One request for MTU, MAC and state.
                ipr.link("set", index=index, **wanted)
        except NetlinkError as e:
            _raise(e, target, None, netns)

    with_socket(netns, change)


def _not_found(ifname: str, or_name: str | None, netns: str | None) -> NotFound:
    where = f" in network namespace {netns}" if netns else ""
    also = f" (nor {or_name})" if or_name else ""
    return NotFound(f"network device {ifname}{also}{where} does not exist")


def _raise(e: NetlinkError, ifname: str, or_name: str | None, netns: str | None) -> None:
    if e.code == errno.ENODEV:
        raise _not_found(ifname, or_name, netns) from e
    raise HostOperationError(
        f"cannot change network device {ifname}: {e.args[1] if len(e.args) > 1 else e}"
    ) from e
