"""Validated identifiers: PCI addresses, MAC addresses, interface names, VLANs.

Everything that may reach a privileged function passes through one of these
parsers first; each one raises :class:`InvalidValue` naming the field and value.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Sequence
from dataclasses import dataclass

from vif_plug_ovs import constants as ovs_constants

from smartnic_vif.model.errors import InvalidValue

_PCI_RE = re.compile(
    r"^(?:(?P<domain>[0-9a-fA-F]{1,4}):)?(?P<bus>[0-9a-fA-F]{1,2}):"
    r"(?P<slot>[0-9a-fA-F]{1,2})\.(?P<function>[0-7])$"
)
_MAC_RE = re.compile(r"^[0-9a-fA-F]{2}(?::[0-9a-fA-F]{2}){5}$")
# Linux IFNAMSIZ is 16 including the NUL; '/' , ':' and whitespace are refused
# by the kernel or break sysfs paths, '.' and '..' are reserved.
_IFNAME_RE = re.compile(r"^[A-Za-z0-9_\-.@+]{1,15}$")
_DRIVER_RE = re.compile(r"^[A-Za-z0-9_\-]{1,64}$")
ZERO_MAC = "00:00:00:00:00:00"  # a VF's "unset" MAC
# sockaddr_un.sun_path is 108 bytes including the terminating NUL; QEMU and
# virtio-forwarder (DPDK's vhost library) cannot use a longer path.
MAX_SOCKET_PATH_BYTES = 107
# The datapath types ovs-vswitchd implements (os-vif's names for them); ""
# is what OVS stores when none was given, and means system.
DATAPATH_TYPES = (ovs_constants.OVS_DATAPATH_SYSTEM, ovs_constants.OVS_DATAPATH_NETDEV)
# Neutron stores a physical network name in a 64-character column.
MAX_PHYSNET_LENGTH = 64


@dataclass(frozen=True, order=True)
class PciAddress:
    """A PCI address in sysfs form ``dddd:bb:ss.f``."""

    domain: int
    bus: int
    slot: int
    function: int

    @classmethod
    def parse(cls, value: object, field: str = "pci_address") -> PciAddress:
        if isinstance(value, PciAddress):
            return value
        if not isinstance(value, str):
            raise InvalidValue(field, value, "expected a PCI address such as 0000:05:08.1")
        m = _PCI_RE.match(value.strip())
        if not m:
            raise InvalidValue(field, value, "expected a PCI address such as 0000:05:08.1")
        slot = int(m["slot"], 16)
        if slot > 0x1F:
            raise InvalidValue(field, value, "PCI slot must be 00-1f")
        return cls(int(m["domain"] or "0", 16), int(m["bus"], 16), slot, int(m["function"]))

    def __str__(self) -> str:
        return f"{self.domain:04x}:{self.bus:02x}:{self.slot:02x}.{self.function:x}"

    def daemon_form(self) -> str:
        """The form virtio-forwarder prints (``%04X:%02X:%02X.%X``)."""
        return f"{self.domain:04X}:{self.bus:02X}:{self.slot:02X}.{self.function:X}"


def pci_address(value: object, field: str = "pci_address") -> str:
    """Normalise a PCI address to its lowercase sysfs string."""
    return str(PciAddress.parse(value, field))


def mac_address(value: object, field: str = "mac") -> str:
    """Normalise a unicast-or-any Ethernet MAC to lowercase colon form."""
    if not isinstance(value, str) or not _MAC_RE.match(value.strip()):
        raise InvalidValue(field, value, "expected a MAC address such as fa:16:3e:00:00:01")
    return value.strip().lower()


def unicast_mac(value: object, field: str = "mac") -> str:
    """A MAC a port or link can have: unicast and not all-zero (the value a
    VF's MAC has when unset; restoring that uses :func:`mac_address`)."""
    mac = mac_address(value, field)
    if int(mac[:2], 16) & 1:
        raise InvalidValue(field, value, "a multicast MAC cannot be given to a port")
    if mac == ZERO_MAC:
        raise InvalidValue(field, value, "the all-zero MAC means 'unset' and cannot be given "
                           "to a port")
    return mac


def ifname(value: object, field: str = "ifname") -> str:
    if not isinstance(value, str) or value in (".", "..") or not _IFNAME_RE.fullmatch(value):
        raise InvalidValue(
            field, value, "expected 1-15 characters of letters, digits and _-.@+"
        )
    return value


def driver_name(value: object, field: str = "driver") -> str:
    if not isinstance(value, str) or not _DRIVER_RE.fullmatch(value):
        raise InvalidValue(field, value, "expected a kernel driver name such as vfio-pci")
    return value


def vlan_id(value: object, field: str = "vlan") -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 4094:
        raise InvalidValue(field, value, "expected an integer VLAN id 0-4094")
    return value


def mtu(value: object, field: str = "mtu") -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 68 <= value <= 65535:
        raise InvalidValue(field, value, "expected an integer MTU 68-65535")
    return value


def vf_index(value: object, field: str = "vf_index") -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 4096:
        raise InvalidValue(field, value, "expected a VF index 0-4095")
    return value


def link_state(value: object, field: str = "link_state") -> str:
    if value not in ("auto", "enable", "disable"):
        raise InvalidValue(field, value, "expected one of auto, enable, disable")
    return str(value)


def datapath_type(value: object, field: str = "datapath_type") -> str:
    """An OVS bridge datapath type ovs-vswitchd knows; "" (OVS's default, system)
    is accepted as stored by OVS."""
    if value != "" and value not in DATAPATH_TYPES:
        raise InvalidValue(field, value, f"expected one of {', '.join(DATAPATH_TYPES)}")
    return str(value)


def physnet(value: object, field: str = "physnet") -> str:
    """A Neutron physical network name: printable, at most 64 characters."""
    if (
        not isinstance(value, str)
        or not 1 <= len(value) <= MAX_PHYSNET_LENGTH
        or not value.isprintable()
        or value.strip() != value
    ):
        raise InvalidValue(
            field, value,
            f"expected a physical network name of 1-{MAX_PHYSNET_LENGTH} printable characters",
        )
    return value


def vhost_socket_path(
    value: object, field: str = "vhost_path", dirs: Sequence[str] = ()
) -> str:
    """A vhost-user socket path: absolute, normalised, printable, short enough
    for a unix socket and, when ``dirs`` is not empty, inside one of them.

    Only the form is checked here; :func:`smartnic_vif.host.forwarder.client.
    check_vhost_socket` checks the path on the host (an existing file that is
    not a socket, a symlinked directory leading out of ``dirs``)."""
    if not isinstance(value, str) or not value:
        raise InvalidValue(field, value, "expected an absolute socket path")
    if not value.isprintable():  # newline, NUL, escape sequences, ...
        raise InvalidValue(field, value, "a socket path cannot contain control characters")
    if not value.startswith("/"):
        raise InvalidValue(field, value, "expected an absolute socket path")
    if value.endswith("/") or value.startswith("//") or posixpath.normpath(value) != value:
        raise InvalidValue(
            field, value, "expected a normalised path to a socket (no '.', '..', '//' or "
            "trailing '/')"
        )
    if len(value.encode("utf-8", "surrogateescape")) > MAX_SOCKET_PATH_BYTES:
        raise InvalidValue(
            field, value, f"a unix socket path is at most {MAX_SOCKET_PATH_BYTES} bytes"
        )
    if dirs and not any(is_inside(value, d) for d in dirs):
        raise InvalidValue(
            field, value,
            f"not inside the vhost-user socket directories ({', '.join(dirs)}); use one of "
            "them or add its directory to vhostuser_socket_dirs (or set "
            "vhostuser_socket_dir_check = false)",
        )
    return value


def absolute_path(value: object, field: str = "path") -> str:
    """An absolute path without control characters (a relative one would
    depend on the directory a command happens to run in)."""
    if not isinstance(value, str) or not value.startswith("/") or not value.isprintable():
        raise InvalidValue(field, value, "expected an absolute path")
    return value


def zmq_endpoint(value: object, field: str = "endpoint") -> str:
    """A ZeroMQ endpoint: ``<transport>://<address>``."""
    if not isinstance(value, str) or "://" not in value or value.endswith("://"):
        raise InvalidValue(field, value, "expected a ZeroMQ endpoint such as ipc:///path")
    return value


_OVSDB_REMOTE_RE = re.compile(r"^(unix|tcp|ssl):\S+$")


def ovsdb_connection(value: object, field: str = "ovsdb_connection") -> str:
    """An OVSDB remote, or several separated by commas (a clustered database)."""
    if not isinstance(value, str) or not all(
        _OVSDB_REMOTE_RE.fullmatch(remote) for remote in value.split(",")
    ):
        raise InvalidValue(field, value, "expected unix:PATH, tcp:IP:PORT or ssl:IP:PORT")
    return value


def is_inside(path: str, directory: str) -> bool:
    """Whether normalised absolute ``path`` lies below ``directory``."""
    top = posixpath.normpath(directory)
    return path.startswith(top.rstrip("/") + "/") and path != top
