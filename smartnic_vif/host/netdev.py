"""Netdev operations through netlink (pyroute2): read and change one link.

Called only from :mod:`smartnic_vif.host.privileged`, which validates every
argument first.
"""

from __future__ import annotations

import errno
import threading
from collections.abc import Callable
from typing import Any, TypeVar

from pyroute2 import IPRoute, NetNS
from pyroute2 import netns as pyroute2_netns
from pyroute2.netlink.exceptions import NetlinkError

from smartnic_vif.model.errors import HostOperationError, NotFound

T = TypeVar("T")


def _no_netns(netns: str) -> NotFound:
    return NotFound(f"network namespace {netns} does not exist")


def _ipr(netns: str | None) -> Any:
    if not netns:
        return IPRoute()
    try:
        # flags=0: pyroute2 defaults to O_CREAT, which would create a missing
        # namespace as a side effect (and leave it behind).
        return NetNS(netns, flags=0)
    except FileNotFoundError:
        raise _no_netns(netns) from None


def in_netns(netns: str, fn: Callable[[], T]) -> T:
    """Run ``fn`` in a short-lived thread switched into ``netns`` (setns is
    per thread), a quarter of the cost of pyroute2's NetNS helper process."""
    result: list[T] = []
    error: list[BaseException] = []

    def target() -> None:
        # flags=0: never create a missing namespace (pyroute2 defaults to
        # O_CREAT). No pushns/popns: the thread ends here, and their saved-fd
        # stack is one global list shared by every thread of the process.
        try:
            pyroute2_netns.setns(netns, flags=0)
        except FileNotFoundError:
            error.append(_no_netns(netns))
            return
        except OSError as e:
            # EPERM without CAP_SYS_ADMIN, for one: say so, never lose it.
            error.append(HostOperationError(f"cannot enter network namespace {netns}: {e}"))
            return
        try:
            result.append(fn())
        except BaseException as e:
            error.append(e)

    thread = threading.Thread(target=target, name=f"netns-{netns}")
    thread.start()
    thread.join()
    if error:
        raise error[0]
    return result[0]


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
    with _ipr(netns) as ipr:
        msg = _lookup(ipr, ifname)
        if msg is None:
            return None
        return {
            "ifname": msg.get_attr("IFLA_IFNAME"),
            "mac": msg.get_attr("IFLA_ADDRESS"),
            "mtu": msg.get_attr("IFLA_MTU"),
            "up": bool(msg["flags"] & 1),
        }


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
    with _ipr(netns) as ipr:
        msg = _lookup(ipr, ifname)
        if msg is None and or_name is not None:
            msg = _lookup(ipr, or_name)
            if msg is not None:
                ifname = or_name
                if new_name == or_name:
                    new_name = None
        if msg is None:
            where = f" in network namespace {netns}" if netns else ""
            also = f" (nor {or_name})" if or_name else ""
            raise NotFound(f"network device {ifname}{also}{where} does not exist")
        index = int(msg["index"])
        try:
            if new_name is not None and new_name != ifname:
                was_up = bool(msg["flags"] & 1)
                if was_up:
                    ipr.link("set", index=index, state="down")
                try:
                    ipr.link("set", index=index, ifname=new_name)
                except NetlinkError:
                    # A refused rename (name taken, ...) must not leave the
                    # link down as a side effect.
                    if was_up:
                        ipr.link("set", index=index, state="up")
                    raise
                if up is None:
                    up = was_up
            changes: dict[str, Any] = {}
            if mtu is not None:
                changes["mtu"] = mtu
            if mac is not None:
                changes["address"] = mac
            if up is not None:
                changes["state"] = "up" if up else "down"
            if changes:
                # One request for MTU, MAC and state: fewer round trips.
                ipr.link("set", index=index, **changes)
        except NetlinkError as e:
            raise HostOperationError(
                f"cannot change network device {ifname}: {e.args[1] if len(e.args) > 1 else e}"
            ) from e
