"""Validated identifiers: PCI addresses, MAC addresses, interface names, VLANs.

Everything that may reach a privileged function passes through one of these
parsers first; each one raises :class:`InvalidValue` naming the field and value.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

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
    mac = mac_address(value, field)
    if int(mac[:2], 16) & 1:
        raise InvalidValue(field, value, "a multicast MAC cannot be given to a port")
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
