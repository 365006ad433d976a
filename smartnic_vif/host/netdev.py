"""Netdev operations: read and change one link.

Called only from :mod:`smartnic_vif.host.privileged` and the kernel backends,
which validate every argument first. Requests go through
:mod:`smartnic_vif.host.rtnl` on kept sockets (``netns``: a named network
namespace, None: this process's own).
"""

from __future__ import annotations

import errno
import socket
from typing import TYPE_CHECKING, Any

from smartnic_vif.host import rtnl
from smartnic_vif.model.errors import HostOperationError, NotFound

if TYPE_CHECKING:
    from pyroute2.netlink.exceptions import NetlinkError


def get_link(ifname: str, netns: str | None = None) -> dict[str, Any] | None:
    """Name, MAC, MTU, admin state and promiscuous mode of a link; None when
    it does not exist."""
    raw = rtnl.socket_for(netns).get_link(ifname)
    if raw is None:
        return None
    link = rtnl.link_fields(raw)
    return {"ifname": link.ifname, "mac": link.mac, "mtu": link.mtu, "up": link.up,
            "promisc": link.promisc}


def exists(ifname: str) -> bool:
    """Whether a link named ``ifname`` exists in this thread's network
    namespace: one ioctl, for checking hundreds of names at once."""
    try:
        socket.if_nametoindex(ifname)
    except (OSError, ValueError):
        return False
    return True


def set_link(
    ifname: str,
    *,
    netns: str | None = None,
    mtu: int | None = None,
    mac: str | None = None,
    up: bool | None = None,
    promisc: bool | None = None,
    new_name: str | None = None,
    or_name: str | None = None,
) -> tuple[str, str] | None:
    """Change one link. A rename needs the link down, so it is done first with
    the link brought down, and the requested (or previous) state restored.
    Returns (old name, new name) when the link was renamed.

    ``or_name``: when ``ifname`` does not exist but ``or_name`` does, change
    that one instead (and do not rename it to itself)."""
    # Here: reads (get_link) load no pyroute2 (see rtnl).
    from pyroute2.netlink.exceptions import NetlinkError

    sock = rtnl.socket_for(netns)
    rename = new_name if new_name != ifname else None
    if rename is None:
        if mtu is None and mac is None and up is None and promisc is None:
            return None
        # The usual case: one request, the kernel finds the link by name.
        try:
            sock.set_link(ifname=ifname, mtu=mtu, mac=mac, up=up, promisc=promisc)
            return None
        except NetlinkError as e:
            if e.code != errno.ENODEV or or_name is None:
                raise _error(e, ifname, None, netns) from e
    target = ifname
    raw = sock.get_link(target)
    if raw is None and or_name is not None:
        raw = sock.get_link(or_name)
        if raw is not None:
            target = or_name
            if rename == or_name:
                rename = None
    if raw is None:
        raise _not_found(ifname, or_name, netns)
    link = rtnl.link_fields(raw)
    index = link.index
    try:
        if rename is not None:
            was_up = link.up
            if was_up:
                sock.set_link(index=index, up=False)
            try:
                sock.set_link(index=index, new_name=rename)
            except NetlinkError:
                # A refused rename (name taken, ...) must not leave the
                # link down as a side effect.
                if was_up:
                    sock.set_link(index=index, up=True)
                raise
            if up is None and was_up:
                up = True
        if mtu is not None or mac is not None or up is not None or promisc is not None:
            sock.set_link(index=index, mtu=mtu, mac=mac, up=up, promisc=promisc)
    except NetlinkError as e:
        raise _error(e, target, None, netns) from e
    return (target, rename) if rename is not None else None


def _not_found(ifname: str, or_name: str | None, netns: str | None) -> NotFound:
    where = f" in network namespace {netns}" if netns else ""
    also = f" (nor {or_name})" if or_name else ""
    return NotFound(f"network device {ifname}{also}{where} does not exist")


def _error(
    e: NetlinkError, ifname: str, or_name: str | None, netns: str | None
) -> NotFound | HostOperationError:
    if e.code == errno.ENODEV:
        return _not_found(ifname, or_name, netns)
    reason = e.args[1] if len(e.args) > 1 else e
    return HostOperationError(f"cannot change network device {ifname}: {reason}")
