"""A lean rtnetlink transport: pyroute2's message codecs on a plain socket.

pyroute2 encodes the requests (``ifinfmsg`` and its NLA classes) and decodes
any answer that needs more than a link's name, MAC, MTU and flags; this
module sends one request, splits the answer into messages and reads those
few link fields itself, on a blocking socket. The one request every plug
starts with, RTM_GETLINK by name, it also frames itself. pyroute2's own
IPRoute runs every request through an asyncio event loop, which costs about
four times the request itself and a new loop per socket; a plug makes
several link requests, so the hot path uses this instead. Only changing a
real PF's VF settings (in the privileged helper) keeps using pyroute2's
IPRoute, for its VF encoders.

Sockets are kept: one per thread in that thread's namespace, one per other
namespace (opened by a thread switched into it for that call alone: a netlink
socket stays in the namespace it was opened in, whoever uses it later).
A kept socket keeps its namespace alive after ``ip netns del``, with the
devices in it; such sockets are closed when that name is used again and
whenever another namespace's socket is opened. Only the simulated host uses
other namespaces.
"""

from __future__ import annotations

import errno
import itertools
import os
import socket
import struct
import threading
from dataclasses import dataclass
from typing import Any

from smartnic_vif.model.errors import HostOperationError, NotFound

# pyroute2 is imported only where a request needs its codecs (changes, full
# decoding) or its namespace helpers: importing any of it loads all of it
# (its package imports IPRoute, NDB, asyncio...), which a read (status,
# doctor) need not pay for. Its constants are the kernel's, spelled here.
NLM_F_REQUEST, NLM_F_MULTI, NLM_F_ACK = 0x1, 0x2, 0x4  # linux/netlink.h
NLMSG_ERROR, NLMSG_DONE = 0x2, 0x3
RTM_NEWLINK, RTM_GETLINK = 16, 18  # linux/rtnetlink.h
NETNS_RUN_DIR = "/var/run/netns"  # iproute2's (and pyroute2's) named namespaces
NETLINK_ROUTE = 0
IFF_UP = 0x1
IFF_PROMISC = 0x100
IFLA_ADDRESS, IFLA_IFNAME, IFLA_MTU, IFLA_EXT_MASK = 1, 3, 4, 29
NLA_F_NESTED, NLA_F_NET_BYTEORDER = 0x8000, 0x4000
_NLMSGHDR = struct.Struct("=IHHII")  # length, type, flags, sequence, port id
_IFINFOMSG = struct.Struct("=BxHiII")  # family, type, index, flags, change
_NLATTR = struct.Struct("=HH")  # length, type
_ERRNO = struct.Struct("=i")
_SEQ, _SEQ_OFFSET = struct.Struct("=I"), 8  # nlmsghdr.nlmsg_seq
_U32 = struct.Struct("=I")
RTEXT_FILTER_VF = 0x1  # IFLA_EXT_MASK: include the PF's VF list (IFLA_VFINFO_LIST)
TIMEOUT_SECONDS = 10.0
_sequence = itertools.count(1)


class NetlinkSocket:
    """One netlink socket of ``protocol``; requests on it are serialised.
    :mod:`smartnic_vif.host.offload` reads generic netlink through it too."""

    def __init__(self, protocol: int) -> None:
        self._sock = socket.socket(
            socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, protocol
        )
        self._sock.bind((0, 0))
        self._sock.settimeout(TIMEOUT_SECONDS)
        self._lock = threading.Lock()

    def close(self) -> None:
        self._sock.close()

    def _exchange(self, request: bytes) -> tuple[list[bytes], int]:
        """Send one encoded request under a fresh sequence number (written
        into its header here); return its answers, each one message's raw
        bytes (none for a bare ACK), and the kernel's error code (0: none)."""
        seq = next(_sequence) & 0xFFFFFFFF
        framed = bytearray(request)
        _SEQ.pack_into(framed, _SEQ_OFFSET, seq)
        answers: list[bytes] = []
        with self._lock:
            self._sock.send(framed)
            while True:
                try:
                    data = self._sock.recv(1 << 17)
                except TimeoutError as e:
                    raise HostOperationError(
                        f"no answer from the kernel to a netlink request in {TIMEOUT_SECONDS}s"
                    ) from e
                offset = 0
                while offset + _NLMSGHDR.size <= len(data):
                    length, kind, mflags, mseq, _ = _NLMSGHDR.unpack_from(data, offset)
                    if length < _NLMSGHDR.size:
                        break
                    start, offset = offset, offset + ((length + 3) & ~3)
                    if mseq != seq:
                        continue  # left over from a request that timed out, or its ACK
                    if kind == NLMSG_ERROR:
                        (code,) = _ERRNO.unpack_from(data, start + _NLMSGHDR.size)
                        return answers, -code
                    if kind == NLMSG_DONE:
                        return answers, 0
                    answers.append(data[start:start + length])
                    if not mflags & NLM_F_MULTI:
                        return answers, 0


class RtnlSocket(NetlinkSocket):
    """One NETLINK_ROUTE socket; requests on it are serialised."""

    def __init__(self) -> None:
        super().__init__(NETLINK_ROUTE)

    def request(self, msg: Any, msg_type: int, flags: int) -> list[bytes]:
        """Send ``msg`` (a pyroute2 message); return its answers, each one
        message's raw bytes (none for a bare ACK). A kernel error raises
        pyroute2's NetlinkError with the errno."""
        msg["header"]["type"] = msg_type
        msg["header"]["flags"] = flags | NLM_F_REQUEST
        msg["header"]["sequence_number"] = 0
        msg.encode()
        return self.send(msg.data)

    def send(self, request: bytes) -> list[bytes]:
        """Send one encoded request; return the raw answers, as :meth:`request`."""
        answers, code = self._exchange(request)
        if code:
            raise netlink_error(code)
        return answers

    # -- link requests ----------------------------------------------------------
    def get_link(self, ifname: str, ext_mask: int = 0) -> bytes | None:
        """The RTM_NEWLINK answer for ``ifname`` (raw: see :func:`link_fields`
        and :func:`decode_link`), or None if there is none. Reading needs no
        privilege."""
        answers, code = self._exchange(_getlink_request(ifname, ext_mask))
        if code in (errno.ENODEV, errno.ENOENT):
            return None
        if code:
            raise netlink_error(code)
        return answers[0] if answers else None

    def set_link(
        self,
        *,
        index: int = 0,
        ifname: str | None = None,
        new_name: str | None = None,
        mtu: int | None = None,
        mac: str | None = None,
        up: bool | None = None,
        promisc: bool | None = None,
    ) -> None:
        """One RTM_NEWLINK on an existing link, found by ``index`` or else by
        ``ifname``. The kernel applies MTU and MAC, then the name, then the
        flags (state and promiscuous mode, together)."""
        from pyroute2.netlink.rtnl.ifinfmsg import ifinfmsg

        msg = ifinfmsg()
        msg["index"] = index
        attrs: list[tuple[str, Any]] = []
        if not index and ifname is not None:
            attrs.append(("IFLA_IFNAME", ifname))
        elif new_name is not None:
            attrs.append(("IFLA_IFNAME", new_name))
        if mtu is not None:
            attrs.append(("IFLA_MTU", mtu))
        if mac is not None:
            attrs.append(("IFLA_ADDRESS", mac))
        flags = change = 0
        if up is not None:
            flags |= IFF_UP if up else 0
            change |= IFF_UP
        if promisc is not None:
            flags |= IFF_PROMISC if promisc else 0
            change |= IFF_PROMISC
        if change:
            msg["flags"] = flags
            msg["change"] = change
        msg["attrs"] = attrs
        # NLM_F_ACK without NLM_F_CREATE: change only, never create.
        self.request(msg, RTM_NEWLINK, NLM_F_ACK)


@dataclass(frozen=True)
class LinkFields:
    index: int
    flags: int
    ifname: str | None
    mac: str | None
    mtu: int | None

    @property
    def up(self) -> bool:
        return bool(self.flags & IFF_UP)

    @property
    def promisc(self) -> bool:
        """Promiscuous mode as set by a user (IFF_PROMISC), not the kernel's
        count of who wants it."""
        return bool(self.flags & IFF_PROMISC)


def _nla(kind: int, value: bytes) -> bytes:
    return _NLATTR.pack(_NLATTR.size + len(value), kind) + value + b"\0" * (-len(value) % 4)


def _getlink_request(ifname: str, ext_mask: int) -> bytes:
    """RTM_GETLINK for one link by name, framed here: the one request every
    plug makes before anything else, where pyroute2's encoder cost more than
    the kernel's answer."""
    body = _IFINFOMSG.pack(0, 0, 0, 0, 0) + _nla(IFLA_IFNAME, ifname.encode() + b"\0")
    if ext_mask:
        body += _nla(IFLA_EXT_MASK, _U32.pack(ext_mask))
    return _NLMSGHDR.pack(_NLMSGHDR.size + len(body), RTM_GETLINK, NLM_F_REQUEST, 0, 0) + body


def link_fields(raw: bytes) -> LinkFields:
    """Index, flags, name, MAC and MTU of one raw RTM_NEWLINK message.

    Read straight off the attribute list: pyroute2's decoder makes an object
    for each of the forty-odd attributes of a link, which cost ten times
    this on every plug. Whatever else is needed, :func:`decode_link` gives."""
    _, _, index, flags, _ = _IFINFOMSG.unpack_from(raw, _NLMSGHDR.size)
    found: dict[int, bytes] = {}
    offset = _NLMSGHDR.size + _IFINFOMSG.size
    while offset + _NLATTR.size <= len(raw):
        length, kind = _NLATTR.unpack_from(raw, offset)
        if length < _NLATTR.size:
            break
        kind &= ~(NLA_F_NESTED | NLA_F_NET_BYTEORDER)
        if kind in (IFLA_ADDRESS, IFLA_IFNAME, IFLA_MTU):
            found[kind] = raw[offset + _NLATTR.size:offset + length]
        offset += (length + 3) & ~3
    name = found.get(IFLA_IFNAME)
    mac = found.get(IFLA_ADDRESS)
    mtu = found.get(IFLA_MTU)
    return LinkFields(
        index=index,
        flags=flags,
        ifname=name.split(b"\0", 1)[0].decode() if name is not None else None,
        mac=":".join(f"{b:02x}" for b in mac) if mac is not None else None,
        mtu=_U32.unpack(mtu)[0] if mtu is not None and len(mtu) == 4 else None,
    )


def decode_link(raw: bytes) -> Any:
    """One raw RTM_NEWLINK message fully decoded by pyroute2 (``ifinfmsg``)."""
    from pyroute2.netlink.rtnl.ifinfmsg import ifinfmsg

    msg = ifinfmsg(raw)
    msg.decode()
    return msg


_local = threading.local()


def _own_namespace() -> tuple[int, int]:
    st = os.stat("/proc/thread-self/ns/net")
    return st.st_dev, st.st_ino


def root_socket() -> RtnlSocket:
    """This thread's socket in the namespace this thread is in now (a
    thread may have switched namespace since its socket was opened: the
    tests run a simulated host in a namespace of its own)."""
    owner = (os.getpid(), _own_namespace())
    sock: RtnlSocket | None = getattr(_local, "sock", None)
    if sock is None or getattr(_local, "owner", None) != owner:
        if sock is not None:
            sock.close()  # the old namespace's (or, after fork, the parent's copy)
        sock = _local.sock = RtnlSocket()
        _local.owner = owner
    return sock


CLONE_NEWNET = 0x40000000
_NETNS_LOCK = threading.Lock()
# name -> ((st_dev, st_ino) of the namespace, its socket)
_netns_sockets: dict[str, tuple[tuple[int, int], RtnlSocket]] = {}


def netlink_error(code: int) -> Exception:
    """pyroute2's NetlinkError for kernel error ``code`` (what callers catch)."""
    from pyroute2.netlink.exceptions import NetlinkError

    return NetlinkError(code, os.strerror(code))


def _netns_path(name: str) -> str:
    return os.path.join(NETNS_RUN_DIR, name)


def _open_in(name: str) -> tuple[tuple[int, int], RtnlSocket]:
    """A socket opened in namespace ``name``: this thread switches into it
    for the ``socket()`` call alone and straight back (a thread of its own
    for this costs twenty times as much)."""
    try:
        # O_RDONLY on the existing file: pyroute2's setns(name) would
        # create a missing namespace as a side effect (O_CREAT default).
        fd = os.open(_netns_path(name), os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise NotFound(f"network namespace {name} does not exist") from None
    from pyroute2 import netns as pyroute2_netns

    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        st = os.fstat(fd)
        try:
            pyroute2_netns.setns(fd, flags=0)
        except OSError as e:
            # EPERM without CAP_SYS_ADMIN, for one: say so, never lose it.
            raise HostOperationError(f"cannot enter network namespace {name}: {e}") from e
        try:
            sock = RtnlSocket()
        finally:
            # Back before anything else runs on this thread. Entering our
            # own namespace again cannot fail where entering another did not.
            pyroute2_netns.setns(own, flags=0)
        return (st.st_dev, st.st_ino), sock
    finally:
        os.close(own)
        os.close(fd)


def netns_socket(name: str) -> RtnlSocket:
    """The kept socket in namespace ``name``. A namespace deleted or made anew
    under the same name gets a new socket (the old one would keep the old
    namespace alive); sockets of deleted namespaces are closed on the way."""
    try:
        st = os.stat(_netns_path(name))
    except FileNotFoundError:
        _forget(name)
        raise NotFound(f"network namespace {name} does not exist") from None
    with _NETNS_LOCK:
        kept = _netns_sockets.get(name)
        if kept is not None and kept[0] == (st.st_dev, st.st_ino):
            return kept[1]
    identity, sock = _open_in(name)
    with _NETNS_LOCK:
        stale = [n for n, (ident, _) in _netns_sockets.items() if not _alive(n, ident)]
        closing = [_netns_sockets.pop(n)[1] for n in stale]
        previous = _netns_sockets.pop(name, None)
        if previous is not None:
            closing.append(previous[1])
        _netns_sockets[name] = (identity, sock)
    for old in closing:
        old.close()
    return sock


def _alive(name: str, identity: tuple[int, int]) -> bool:
    try:
        st = os.stat(_netns_path(name))
    except OSError:
        return False
    return (st.st_dev, st.st_ino) == identity


def _forget(name: str) -> None:
    with _NETNS_LOCK:
        kept = _netns_sockets.pop(name, None)
    if kept is not None:
        kept[1].close()


def socket_for(netns: str | None) -> RtnlSocket:
    return netns_socket(netns) if netns else root_socket()


def close_all() -> None:
    """Close the kept namespace sockets (tests, shutdown)."""
    with _NETNS_LOCK:
        kept = list(_netns_sockets.values())
        _netns_sockets.clear()
    for _, sock in kept:
        sock.close()
