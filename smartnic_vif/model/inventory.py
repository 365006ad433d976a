"""The host inventory: SmartNIC physical functions, their VFs and representors.

Built once by :mod:`smartnic_vif.host.discovery` and consumed, read-only, by every
decision function. It holds no handles and does no I/O, so tests build it from
plain values.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field, fields
from functools import cached_property
from typing import Any

from smartnic_vif.model.errors import NotAVirtualFunction, NotFound, RepresentorNotFound
from smartnic_vif.model.types import pci_address


@dataclass(frozen=True)
class Representor:
    """The netdev that stands in for a VF on the embedded switch."""

    name: str
    switch_id: str
    port_name: str  # phys_port_name as the driver writes it: pf0vf3, vf3, 3, c1pf0vf3
    pf_function: int | None  # the PF's PCI function, when the port name carries it
    vf_index: int


@dataclass(frozen=True)
class VirtualFunction:
    address: str
    index: int  # N of the PF's virtfnN link
    pf_address: str
    vendor_id: str  # 4 hex digits, no 0x
    product_id: str
    driver: str | None
    numa_node: int | None
    netdev: str | None  # the VF's own netdev, when bound to a network driver
    representor: Representor | None
    switchdev: bool  # the VF sits on an eswitch in switchdev mode

    @property
    def capabilities(self) -> tuple[str, ...]:
        """Network capabilities, in Nova's vocabulary (``switchdev``)."""
        return ("switchdev",) if self.switchdev else ()


@dataclass(frozen=True)
class PhysicalFunction:
    address: str
    vendor_id: str
    product_id: str
    driver: str | None
    numa_node: int | None
    netdev: str | None  # the PF's netdev (in switchdev mode, the uplink representor)
    uplink_port_name: str | None  # phys_port_name of the uplink, e.g. p0
    switch_id: str | None  # phys_switch_id of the uplink; None when not in switchdev mode
    total_vfs: int
    num_vfs: int
    vfs: tuple[VirtualFunction, ...] = field(default=())

    @property
    def switchdev(self) -> bool:
        return self.switch_id is not None

    @property
    def function(self) -> int:
        return int(self.address.rsplit(".", 1)[1], 16)


@dataclass(frozen=True)
class Inventory:
    sysfs_root: str
    pfs: tuple[PhysicalFunction, ...]

    def vfs(self) -> Iterator[VirtualFunction]:
        for pf in self.pfs:
            yield from pf.vfs

    def pf(self, address: str) -> PhysicalFunction:
        addr = pci_address(address)
        for pf in self.pfs:
            if pf.address == addr:
                return pf
        found = ", ".join(p.address for p in self.pfs) or "none"
        raise NotFound(
            f"PCI address {addr} is not an SR-IOV physical function under "
            f"{self.sysfs_root} (physical functions found: {found})"
        )

    def vf(self, address: str) -> VirtualFunction:
        """The VF at ``address``; errors say whether it is absent or a PF."""
        addr = pci_address(address)
        vf = self._vfs_by_address.get(addr)
        if vf is not None:
            return vf
        if any(pf.address == addr for pf in self.pfs):
            raise NotAVirtualFunction(
                f"PCI address {addr} is a physical function, not a virtual function"
            )
        raise NotFound(
            f"PCI address {addr} is not a virtual function of any SR-IOV device under "
            f"{self.sysfs_root} ({sum(1 for _ in self.vfs())} VFs found)"
        )

    def representor_of(self, address: str) -> Representor:
        vf = self.vf(address)
        if vf.representor is None:
            pf = self.pf(vf.pf_address)
            raise RepresentorNotFound(
                f"no representor for VF {vf.index} of PF {pf.address} (VF {vf.address}): "
                + (
                    f"no netdev with phys_switch_id {pf.switch_id} and a phys_port_name "
                    f"for pf{pf.function} vf{vf.index}"
                    if pf.switch_id
                    else f"PF {pf.address} is not in switchdev mode (its netdev has no "
                    "phys_switch_id)"
                )
            )
        return vf.representor

    @cached_property
    def _vfs_by_address(self) -> dict[str, VirtualFunction]:
        """Every VF by address, made on first use (kept beside the fields:
        a frozen dataclass's equality and to_dict see only those)."""
        return {vf.address: vf for vf in self.vfs()}

    def vf_by_representor(self, name: str) -> VirtualFunction | None:
        for vf in self.vfs():
            if vf.representor is not None and vf.representor.name == name:
                return vf
        return None

    def to_dict(self) -> dict[str, Any]:
        """As ``dataclasses.asdict`` gives it, built directly: asdict deep-copies
        every value, several times the cost on a host of 1,024 VFs."""
        return _plain(self)


def _plain(value: Any) -> Any:
    """A dataclass of this module as dicts (tuples stay tuples)."""
    if isinstance(value, tuple):
        return tuple(_plain(v) for v in value)
    names = _FIELDS.get(type(value))
    if names is None:
        return value
    return {name: _plain(getattr(value, name)) for name in names}


_FIELDS: dict[type, tuple[str, ...]] = {
    cls: tuple(f.name for f in fields(cls))
    for cls in (Representor, VirtualFunction, PhysicalFunction, Inventory)
}
