"""Read-only discovery of SR-IOV/switchdev devices from sysfs.

Everything is read under a configurable root (``/`` on a real host), so the
simulated SmartNIC host can lay out the same tree in a directory. Facts used
here are summarised in ``shared/sysfs-sriov.md``:

- a PF has ``sriov_totalvfs`` and ``virtfnN`` links; a VF has ``physfn``;
- a representor is found by ``phys_switch_id`` (same as its PF's uplink) and a
  parsed ``phys_port_name``, never by the netdev's name, which udev may change.
"""

from __future__ import annotations

import os
import re
import signal
from collections.abc import Collection
from dataclasses import dataclass, replace

from smartnic_vif.model.errors import DiscoveryError, InvalidValue
from smartnic_vif.model.inventory import (
    Inventory,
    PhysicalFunction,
    Representor,
    VirtualFunction,
)
from smartnic_vif.model.types import ifname, pci_address

# VF representor port names across drivers and kernels: pf0vf3, vf3, 3 and,
# on multi-host NICs, c1pf0vf3 (controller prefix).
_VF_PORT_NAME = re.compile(r"^(?:c(?P<controller>\d+))?(?:pf(?P<pf>\d+)vf|vf)?(?P<vf>\d+)$")
_UPLINK_PORT_NAME = re.compile(r"^p(?P<port>\d+)$")
_VIRTFN = re.compile(r"^virtfn(?P<index>\d+)$")


@dataclass(frozen=True)
class VfPortName:
    controller: int | None
    pf: int | None
    vf: int


def parse_vf_port_name(port_name: str) -> VfPortName | None:
    """Parse a VF representor's ``phys_port_name``; None for other ports."""
    m = _VF_PORT_NAME.match(port_name)
    if not m:
        return None
    return VfPortName(
        controller=int(m["controller"]) if m["controller"] is not None else None,
        pf=int(m["pf"]) if m["pf"] is not None else None,
        vf=int(m["vf"]),
    )


def is_vf_representor(root: str, name: str) -> bool:
    """Whether netdev ``name`` is a VF representor by its own sysfs entry
    under ``root`` (a tap or an OVS internal port has no ``phys_port_name``).
    ``name`` may come from OVSDB: it is checked before it makes a path."""
    try:
        name = ifname(name)
    except InvalidValue:
        return False
    port_name = _read(os.path.join(root, "sys", "class", "net", name, "phys_port_name"))
    return bool(port_name) and parse_vf_port_name(port_name or "") is not None


def is_uplink_port_name(port_name: str) -> bool:
    return _UPLINK_PORT_NAME.match(port_name) is not None


def _read(path: str) -> str | None:
    """A sysfs attribute's stripped text; None when absent or unsupported
    (reading phys_switch_id on a non-switchdev netdev fails with EOPNOTSUPP).

    Plain ``os.open``/``os.read``: a host has thousands of these files and
    Python's buffered text file costs several times more per read."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        data = os.read(fd, 4096)
    except OSError:
        return None
    finally:
        os.close(fd)
    return data.decode(errors="replace").strip()


def _link_name(path: str) -> str | None:
    """The last component of the link at ``path``; None if there is none."""
    try:
        return os.readlink(path).rpartition("/")[2]
    except OSError:
        return None


def _hex_id(text: str | None) -> str:
    if not text:
        return ""
    return text.lower().removeprefix("0x").zfill(4)


def _numa(text: str | None) -> int | None:
    try:
        node = int(text) if text is not None else -1
    except ValueError:
        return None
    return node if node >= 0 else None


@dataclass(frozen=True)
class _Netdev:
    name: str
    switch_id: str | None
    port_name: str | None
    device: str | None  # PCI address of the device the netdev belongs to


class SysfsReader:
    """Paths under one sysfs root."""

    def __init__(self, root: str = "/") -> None:
        self.root = os.path.abspath(root)
        self.pci_devices = os.path.join(self.root, "sys", "bus", "pci", "devices")
        self.class_net = os.path.join(self.root, "sys", "class", "net")
        if not os.path.isdir(self.pci_devices):
            raise DiscoveryError(
                f"sysfs root {self.root} is not a sysfs tree: "
                f"{self.pci_devices} is not a directory"
            )

    def device(self, address: str) -> str:
        return os.path.join(self.pci_devices, address)

    def netdevs(self, vfs: Collection[str] = ()) -> dict[str, _Netdev]:
        """Every netdev of ``class/net``. Those of the devices in ``vfs``
        (VFs' own netdevs, never a representor: those hang under the PF)
        only get their device."""
        found: dict[str, _Netdev] = {}
        try:
            names = os.listdir(self.class_net)
        except OSError:
            return found
        for name in names:
            base = f"{self.class_net}/{name}"
            device = _device_of(base)
            port_name = None if device in vfs else _read(f"{base}/phys_port_name") or None
            found[name] = _Netdev(
                name=name,
                # Only a port of an eswitch has a switch id that matters here.
                switch_id=_read(f"{base}/phys_switch_id") or None if port_name else None,
                port_name=port_name,
                device=device,
            )
        return found


def _device_of(class_entry: str) -> str | None:
    """The name of the device a netdev belongs to (its ``device`` link's
    target), None without one.

    Resolved from the links' text, not by ``realpath``, which would stat every
    component (thousands of netdevs on a big host). The kernel writes the
    link as ``../../../<device>``, whose last component is the answer; a
    link ending in ``..`` is resolved from the netdev's own directory."""
    try:
        target = os.readlink(f"{class_entry}/device")
    except OSError:
        return None
    name = target.rpartition("/")[2]
    if name not in ("", ".", ".."):
        return name
    try:
        netdev_dir = os.path.join(os.path.dirname(class_entry), os.readlink(class_entry))
    except OSError:  # not a link: the entry is the netdev's directory
        netdev_dir = class_entry
    return os.path.basename(os.path.normpath(os.path.join(netdev_dir, target))) or None


def _device_netdevs(path: str) -> list[str]:
    try:
        return sorted(os.listdir(f"{path}/net"))
    except OSError:
        return []


def _find_representor(
    pf_address: str,
    pf_function: int,
    switch_id: str,
    vf_index: int,
    candidates: dict[tuple[str, int], list[tuple[_Netdev, VfPortName]]],
    pfs_on_switch: int,
) -> Representor | None:
    """``candidates``: VF representors by (switch id, VF number in the port name)."""
    matches: list[tuple[_Netdev, VfPortName]] = []
    for netdev, parsed in candidates.get((switch_id, vf_index), ()):
        if parsed.pf is not None:
            if parsed.pf != pf_function:
                continue
        elif netdev.device is not None:
            # No PF number in the port name: the representor lives under its PF.
            if netdev.device != pf_address:
                continue
        elif pfs_on_switch > 1:
            # Neither the name nor the device says which PF: ambiguous.
            continue
        matches.append((netdev, parsed))
    if len(matches) != 1:
        return None
    netdev, parsed = matches[0]
    return Representor(
        name=netdev.name,
        switch_id=switch_id,
        port_name=netdev.port_name or "",
        pf_function=parsed.pf,
        vf_index=parsed.vf,
    )


def discover(root: str = "/") -> Inventory:
    """Build the inventory of every SR-IOV PF under ``root``.

    A big host has thousands of VFs and netdevs, and the time goes in
    system calls, so each file is read once and only where it can matter:
    a VF's address sorts after its PF's (its routing id is the PF's plus a
    positive offset), so a VF already listed by its PF is not probed as a
    PF; a VF's netdev is found by its ``device`` link in the one pass over
    ``class/net`` (not by listing each VF's ``net/``), and is not read as a
    possible representor (those hang under the PF); and VF ids come from
    the PF when the kernel gives them there (see :func:`_vf_ids`)."""
    sysfs = SysfsReader(root)
    found: list[tuple[str, str, str, list[tuple[int, str]]]] = []
    listed: set[str] = set()
    for address in sorted(os.listdir(sysfs.pci_devices)):
        if address in listed:
            continue
        path = f"{sysfs.pci_devices}/{address}"
        total = _read(f"{path}/sriov_totalvfs")
        if total is None:
            continue
        virtfns = []
        for entry in os.listdir(path):
            m = _VIRTFN.match(entry)
            if m and (vf_address := _link_name(f"{path}/{entry}")) is not None:
                virtfns.append((int(m["index"]), vf_address))
                listed.add(vf_address)
        found.append((address, path, total, virtfns))
    netdevs = sysfs.netdevs(vfs=listed)
    # A VF's netdev: the first by name of those whose device it is, as the
    # VF's own net/ directory would list them.
    vf_netdevs: dict[str, list[str]] = {}
    for name in sorted(netdevs):
        device = netdevs[name].device
        if device in listed:
            vf_netdevs.setdefault(device, []).append(name)
    vf_port_candidates: dict[tuple[str, int], list[tuple[_Netdev, VfPortName]]] = {}
    for candidate in netdevs.values():
        if (candidate.switch_id and candidate.port_name
                and (parsed := parse_vf_port_name(candidate.port_name))):
            vf_port_candidates.setdefault((candidate.switch_id, parsed.vf), []).append(
                (candidate, parsed))

    raw_pfs = []
    for address, path, total, virtfns in found:
        pf_netdevs = _device_netdevs(path)
        uplink = None
        for name in pf_netdevs:
            nd = netdevs.get(name)
            if nd and nd.port_name and is_uplink_port_name(nd.port_name):
                uplink = nd
                break
        if uplink is None:
            # A PF netdev that is not a representor of a VF or PF.
            plain = [
                n
                for n in pf_netdevs
                if not (netdevs.get(n) and netdevs[n].port_name
                        and parse_vf_port_name(netdevs[n].port_name or ""))
                and not (netdevs.get(n) and (netdevs[n].port_name or "").startswith("pf"))
            ]
            pf_netdev = plain[0] if plain else None
        else:
            pf_netdev = uplink.name
        raw_pfs.append((address, path, total, virtfns, pf_netdev, uplink))

    switch_population: dict[str, int] = {}
    for *_, uplink in raw_pfs:
        if uplink is not None and uplink.switch_id:
            switch_population[uplink.switch_id] = switch_population.get(uplink.switch_id, 0) + 1

    pfs = []
    for address, path, total, virtfns, pf_netdev, uplink in raw_pfs:
        switch_id = uplink.switch_id if uplink is not None else None
        function = int(address.rsplit(".", 1)[1], 16)
        pf_vendor = _hex_id(_read(f"{path}/vendor"))
        ids = _vf_ids(path, pf_vendor)
        vfs = []
        for index, vf_address in virtfns:
            vf_path = f"{sysfs.pci_devices}/{vf_address}"
            netdev_names = vf_netdevs.get(vf_address)
            representor = (
                _find_representor(
                    address,
                    function,
                    switch_id,
                    index,
                    vf_port_candidates,
                    switch_population.get(switch_id, 1),
                )
                if switch_id
                else None
            )
            vendor_id, product_id = ids or (_hex_id(_read(f"{vf_path}/vendor")),
                                            _hex_id(_read(f"{vf_path}/device")))
            vfs.append(
                VirtualFunction(
                    address=vf_address,
                    index=index,
                    pf_address=address,
                    vendor_id=vendor_id,
                    product_id=product_id,
                    driver=_link_name(f"{vf_path}/driver"),
                    numa_node=_numa(_read(f"{vf_path}/numa_node")),
                    netdev=netdev_names[0] if netdev_names else None,
                    representor=representor,
                    switchdev=switch_id is not None,
                )
            )
        vfs.sort(key=lambda v: v.index)
        pfs.append(
            PhysicalFunction(
                address=address,
                vendor_id=pf_vendor,
                product_id=_hex_id(_read(f"{path}/device")),
                driver=_link_name(f"{path}/driver"),
                numa_node=_numa(_read(f"{path}/numa_node")),
                netdev=pf_netdev,
                uplink_port_name=uplink.port_name if uplink is not None else None,
                switch_id=switch_id,
                total_vfs=int(total or 0),
                num_vfs=int(_read(f"{path}/sriov_numvfs") or 0),
                vfs=tuple(vfs),
            )
        )
    return Inventory(sysfs_root=sysfs.root, pfs=tuple(pfs))


def _vf_ids(pf_path: str, pf_vendor: str) -> tuple[str, str] | None:
    """(vendor, device) of every VF of the PF at ``pf_path``, as the kernel
    gives each VF: the PF's vendor and the VF device id of the PF's SR-IOV
    capability, which it shows as the PF's ``sriov_vf_device``. None where
    that file is missing (older kernels): then each VF's own files are read."""
    device = _read(f"{pf_path}/sriov_vf_device")
    return (pf_vendor, _hex_id(device)) if device else None


def find_representor(root: str, pf_address: str, vf_index: int) -> Representor:
    """The representor of VF ``vf_index`` of PF ``pf_address``."""
    inventory = discover(root)
    pf = inventory.pf(pci_address(pf_address, "pf_address"))
    for vf in pf.vfs:
        if vf.index == vf_index:
            return inventory.representor_of(vf.address)
    raise DiscoveryError(
        f"PF {pf.address} has no VF {vf_index} (VFs found: {len(pf.vfs)})"
    )


def refresh_vf(inventory: Inventory, address: str) -> Inventory:
    """``inventory`` with one VF's driver and netdev read again (after a
    rebind), instead of rediscovering the whole host."""
    vf = inventory.vf(address)
    path = SysfsReader(inventory.sysfs_root).device(vf.address)
    netdevs = _device_netdevs(path)
    return _with_vf(inventory, replace(
        vf,
        driver=_link_name(os.path.join(path, "driver")),
        netdev=netdevs[0] if netdevs else None,
    ))


def _with_vf(inventory: Inventory, fresh: VirtualFunction) -> Inventory:
    """``inventory`` with the VF at ``fresh``'s address replaced by ``fresh``."""
    pfs = tuple(
        replace(pf, vfs=tuple(fresh if v.address == fresh.address else v for v in pf.vfs))
        if pf.address == fresh.pf_address
        else pf
        for pf in inventory.pfs
    )
    return replace(inventory, pfs=pfs)


def rename_representor(inventory: Inventory, old: str, new: str) -> Inventory:
    """``inventory`` after representor ``old`` was renamed ``new`` (by this
    process: sysfs follows, so discovery would now say ``new``)."""
    vf = inventory.vf_by_representor(old)
    if vf is None or vf.representor is None:
        return inventory
    return _with_vf(inventory, replace(vf, representor=replace(vf.representor, name=new)))


class BackgroundDiscovery:
    """:func:`discover` run in a child process while this one does other
    work; :meth:`result` waits for the inventory.

    For read commands (``status``, ``doctor``): on a host of 1,024 VFs
    discovery takes ~45 ms of system calls and the OVSDB connection ~55 ms
    of parsing JSON in pure Python, and neither needs the other. Threads
    cannot run them side by side (both need the interpreter lock); a forked
    child can, on another core. The child only reads sysfs, sends the
    inventory back pickled through a pipe (~140 KB, ~2 ms each way) and
    exits without running any of this process's exit handlers.

    A process that already runs threads is not forked (a lock held by
    another thread would stay held in the child): discovery then happens
    in-process, on :meth:`result`, as does a second try when the child died
    without an answer (said in a warning)."""

    def __init__(self, root: str) -> None:
        import pickle  # noqa: F401 - imported before the fork, used by the child
        import threading

        self.root = root
        self.pid: int | None = None
        self._fd: int | None = None
        if threading.active_count() > 1:
            return
        read_end, write_end = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child
            os.close(read_end)
            try:
                _send_discovery(root, write_end)
            finally:
                os._exit(0)
        os.close(write_end)
        self.pid, self._fd = pid, read_end

    def result(self) -> Inventory:
        """The inventory (or the child's :class:`DiscoveryError`, raised here)."""
        import pickle

        if self._fd is None:
            return discover(self.root)
        chunks = []
        try:
            while chunk := os.read(self._fd, 1 << 20):
                chunks.append(chunk)
        finally:
            os.close(self._fd)
            self._fd = None
            status = self._reap()
        if not chunks:
            import logging

            logging.getLogger(__name__).warning(
                "discovery in a child process ended without an answer (%s); discovering "
                "again in this process", f"wait status {status}")
            return discover(self.root)
        kind, value = pickle.loads(b"".join(chunks))  # noqa: S301 - our own child's bytes
        if kind == "error":
            raise DiscoveryError(value)
        return value  # type: ignore[no-any-return]

    def close(self) -> None:
        """Stop and reap the child if its answer was not taken (a command
        that ended before it needed the inventory)."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
            if self.pid is not None:
                os.kill(self.pid, signal.SIGKILL)
        self._reap()

    def _reap(self) -> int | None:
        status = None
        if self.pid is not None:
            _, status = os.waitpid(self.pid, 0)
            self.pid = None
        return status


def _send_discovery(root: str, fd: int) -> None:
    """In the child: the inventory, or the error's message, pickled to ``fd``."""
    import pickle

    try:
        payload = pickle.dumps(("inventory", discover(root)), protocol=pickle.HIGHEST_PROTOCOL)
    except Exception as e:
        payload = pickle.dumps(("error", str(e)))
    view = memoryview(payload)
    try:
        while view:
            view = view[os.write(fd, view):]
    except OSError:  # the parent no longer wants it
        pass
