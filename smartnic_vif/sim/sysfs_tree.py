"""Generate a sysfs tree that looks like a SmartNIC host's.

The tree has the same shape as the kernel's (relative symlinks, so it works
under any root): ``sys/devices/pci0000:00/<addr>`` holds the devices,
``sys/bus/pci/devices`` and ``sys/class/net`` link into it, PFs have
``sriov_*`` files and ``virtfnN`` links, VFs have ``physfn``, switchdev netdevs
have ``phys_switch_id`` and ``phys_port_name``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

VENDORS = {
    # driver: (vendor id, PF device id, VF device id)
    "nfp": ("0x19ee", "0x4000", "0x6003"),
    "mlx5_core": ("0x15b3", "0x101d", "0x101e"),
}
PORT_NAME_FORMS = ("pfXvfY", "vfY", "Y", "cZpfXvfY")


def port_name(form: str, pf_function: int, vf_index: int) -> str:
    if form == "pfXvfY":
        return f"pf{pf_function}vf{vf_index}"
    if form == "vfY":
        return f"vf{vf_index}"
    if form == "Y":
        return str(vf_index)
    if form == "cZpfXvfY":
        return f"c1pf{pf_function}vf{vf_index}"
    raise ValueError(f"unknown port name form {form!r}; expected one of {PORT_NAME_FORMS}")


@dataclass
class NetdevSpec:
    name: str
    mac: str
    mtu: int = 1500
    switch_id: str | None = None
    port_name: str | None = None


@dataclass
class VfSpec:
    address: str
    index: int
    netdev: NetdevSpec | None
    representor: NetdevSpec | None


@dataclass
class PfSpec:
    address: str
    function: int
    driver: str
    numa_node: int
    netdev: NetdevSpec
    switchdev: bool
    vfs: list[VfSpec] = field(default_factory=list)


def _write(path: str, text: str) -> None:
    with open(path, "w") as f:
        f.write(text + "\n")


def _link(target: str, link: str) -> None:
    """A relative link written as the kernel writes it (kernfs): up to the
    first ancestor of the target's parent, then down, so that a link to an
    ancestor (a netdev's ``device``) ends in the target's name
    (``../../../0000:05:00.0``, not ``../..``)."""
    up = os.path.relpath(os.path.dirname(target), os.path.dirname(link))
    os.symlink(os.path.normpath(os.path.join(up, os.path.basename(target))), link)


class SysfsTree:
    def __init__(self, root: str) -> None:
        self.root = root
        self.devices = os.path.join(root, "sys", "devices", "pci0000:00")
        self.bus_devices = os.path.join(root, "sys", "bus", "pci", "devices")
        self.drivers = os.path.join(root, "sys", "bus", "pci", "drivers")
        self.class_net = os.path.join(root, "sys", "class", "net")

    def skeleton(self, drivers: list[str]) -> None:
        for d in (self.devices, self.bus_devices, self.drivers, self.class_net):
            os.makedirs(d, exist_ok=True)
        for name in drivers:
            path = os.path.join(self.drivers, name)
            os.makedirs(path, exist_ok=True)
            for f in ("bind", "unbind", "new_id", "remove_id"):
                open(os.path.join(path, f), "a").close()
        open(os.path.join(self.root, "sys", "bus", "pci", "drivers_probe"), "a").close()

    def _device(self, address: str, ids: tuple[str, str], driver: str | None, numa: int) -> str:
        path = os.path.join(self.devices, address)
        os.makedirs(os.path.join(path, "net"))
        _write(os.path.join(path, "vendor"), ids[0])
        _write(os.path.join(path, "device"), ids[1])
        _write(os.path.join(path, "class"), "0x020000")
        _write(os.path.join(path, "numa_node"), str(numa))
        _write(os.path.join(path, "driver_override"), "(null)")
        if driver:
            _link(os.path.join(self.drivers, driver), os.path.join(path, "driver"))
        _link(path, os.path.join(self.bus_devices, address))
        return path

    def _netdev(self, device_path: str, nd: NetdevSpec) -> None:
        path = os.path.join(device_path, "net", nd.name)
        os.makedirs(path)
        _write(os.path.join(path, "address"), nd.mac)
        _write(os.path.join(path, "mtu"), str(nd.mtu))
        if nd.switch_id:
            _write(os.path.join(path, "phys_switch_id"), nd.switch_id)
        if nd.port_name:
            _write(os.path.join(path, "phys_port_name"), nd.port_name)
        _link(device_path, os.path.join(path, "device"))
        _link(path, os.path.join(self.class_net, nd.name))

    def add_pf(self, pf: PfSpec, total_vfs: int) -> None:
        vendor, pf_dev, vf_dev = VENDORS[pf.driver]
        path = self._device(pf.address, (vendor, pf_dev), pf.driver, pf.numa_node)
        _write(os.path.join(path, "sriov_totalvfs"), str(total_vfs))
        _write(os.path.join(path, "sriov_numvfs"), str(len(pf.vfs)))
        # As the kernel prints it: hex without 0x.
        _write(os.path.join(path, "sriov_vf_device"), vf_dev.removeprefix("0x"))
        self._netdev(path, pf.netdev)
        for vf in pf.vfs:
            vf_path = self._device(vf.address, (vendor, vf_dev), pf.driver, pf.numa_node)
            _link(path, os.path.join(vf_path, "physfn"))
            _link(vf_path, os.path.join(path, f"virtfn{vf.index}"))
            if vf.netdev:
                self._netdev(vf_path, vf.netdev)
            if vf.representor:
                # Representors hang under the PF's device, as on nfp and mlx5.
                self._netdev(path, vf.representor)
