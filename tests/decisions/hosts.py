"""Host inventories for the decision tests, built from plain values.

``mixed_host()`` is the host the selection tests are about: one SmartNIC PF in
switchdev mode (VFs with representors; one VF whose representor is missing) and
one legacy SR-IOV PF (no switch id, no representors), cabled to the same
physical network, plus a second SmartNIC on the other NUMA node.
"""

from __future__ import annotations

from smartnic_vif.model.inventory import Inventory, PhysicalFunction, Representor, VirtualFunction
from smartnic_vif.model.types import PciAddress
from smartnic_vif.sim.host import VENDORS, SimLayout

NFP = ("19ee", "4000", "6003")  # vendor, PF product, VF product
MLX = ("15b3", "1017", "1018")

SMARTNIC_PF = "0000:05:00.0"
LEGACY_PF = "0000:06:00.0"
REMOTE_PF = "0000:81:00.0"


def _vf_addresses(pf: str, first_slot: int, count: int) -> list[str]:
    base = PciAddress.parse(pf)
    out = []
    for n in range(count):
        slot, function = divmod(n, 8)
        out.append(str(PciAddress(base.domain, base.bus, first_slot + slot, function)))
    return out


def switchdev_pf(
    pf: str,
    netdev: str,
    switch_id: str,
    *,
    first_slot: int = 8,
    count: int = 12,
    numa: int | None = 0,
    missing_representors: tuple[int, ...] = (),
    ids: tuple[str, str, str] = NFP,
    driver: str = "nfp",
) -> PhysicalFunction:
    function = PciAddress.parse(pf).function
    vfs = []
    for index, address in enumerate(_vf_addresses(pf, first_slot, count)):
        rep = None
        if index not in missing_representors:
            rep = Representor(
                name=f"{netdev}r{index}",  # udev-style rename, as on real hosts
                switch_id=switch_id,
                port_name=f"pf{function}vf{index}",
                pf_function=function,
                vf_index=index,
            )
        vfs.append(
            VirtualFunction(
                address=address, index=index, pf_address=pf, vendor_id=ids[0],
                product_id=ids[2], driver=driver, numa_node=numa, netdev=None,
                representor=rep, switchdev=True,
            )
        )
    return PhysicalFunction(
        address=pf, vendor_id=ids[0], product_id=ids[1], driver=driver, numa_node=numa,
        netdev=netdev, uplink_port_name="p0", switch_id=switch_id, total_vfs=64,
        num_vfs=count, vfs=tuple(vfs),
    )


def legacy_pf(
    pf: str, netdev: str, *, first_slot: int = 0x10, count: int = 4, numa: int | None = 1
) -> PhysicalFunction:
    vfs = tuple(
        VirtualFunction(
            address=address, index=index, pf_address=pf, vendor_id=MLX[0], product_id=MLX[2],
            driver="mlx5_core", numa_node=numa, netdev=f"{netdev}v{index}", representor=None,
            switchdev=False,
        )
        for index, address in enumerate(_vf_addresses(pf, first_slot, count))
    )
    return PhysicalFunction(
        address=pf, vendor_id=MLX[0], product_id=MLX[1], driver="mlx5_core", numa_node=numa,
        netdev=netdev, uplink_port_name=None, switch_id=None, total_vfs=8, num_vfs=count,
        vfs=vfs,
    )


def mixed_host() -> Inventory:
    return Inventory(
        sysfs_root="/",
        pfs=(
            switchdev_pf(SMARTNIC_PF, "enp5s0np0", "00154d1300a1", missing_representors=(11,)),
            legacy_pf(LEGACY_PF, "enp6s0f0"),
            switchdev_pf(
                REMOTE_PF, "enp129s0np0", "00154d1300b2", count=4, numa=1, first_slot=0x0A
            ),
        ),
    )


def sim_layout(pfs: int, vfs: int, legacy: int = 0, root: str = "/") -> SimLayout:
    return SimLayout(dir=root, sim_id="ab12", pfs=pfs, vfs_per_pf=vfs, legacy_pfs=legacy,
                     port_name_form="pfXvfY", driver="nfp")


def sim_inventory(pfs: int, vfs: int, legacy: int = 0) -> Inventory:
    """The simulator's host of this layout (switchdev PFs at 05:00.x, legacy
    PFs at 81:00.x, ``SimLayout.pf_specs``) as discovery reads its tree, built in
    memory (the tree of a 4x256 host takes seconds to write)."""
    vendor, pf_product, vf_product = (i.removeprefix("0x") for i in VENDORS["nfp"])
    out = []
    for pf in sim_layout(pfs, vfs, legacy).pf_specs():
        switch_id = pf.netdev.switch_id
        vf_list = tuple(
            VirtualFunction(
                address=vf.address, index=vf.index, pf_address=pf.address,
                vendor_id=vendor, product_id=vf_product, driver=pf.driver,
                numa_node=pf.numa_node, netdev=vf.netdev.name if vf.netdev else None,
                representor=None if vf.representor is None or switch_id is None else
                Representor(vf.representor.name, switch_id, vf.representor.port_name or "",
                            pf.function, vf.index),
                switchdev=pf.switchdev)
            for vf in pf.vfs)
        out.append(PhysicalFunction(
            address=pf.address, vendor_id=vendor, product_id=pf_product, driver=pf.driver,
            numa_node=pf.numa_node, netdev=pf.netdev.name,
            uplink_port_name=pf.netdev.port_name, switch_id=switch_id,
            total_vfs=max(vfs, 64), num_vfs=vfs, vfs=vf_list))
    return Inventory("/", tuple(out))


def nova_dev_dict(vf: VirtualFunction) -> dict[str, object]:
    """The device dict Nova's libvirt driver reports for a VF, as
    ``PciDeviceSpec.match`` reads it."""
    return {
        "dev_id": "pci_" + vf.address.replace(":", "_").replace(".", "_"),
        "address": vf.address,
        "product_id": vf.product_id,
        "vendor_id": vf.vendor_id,
        "numa_node": vf.numa_node,
        "label": f"label_{vf.vendor_id}_{vf.product_id}",
        "dev_type": "type-VF",
        "parent_addr": vf.pf_address,
    }
