"""LinuxKernel.bind_driver against a sysfs tree in a temp dir.

The tree's ``unbind``, ``bind``, ``driver_override`` and ``drivers_probe`` are
plain files; :class:`FakePciBus` stands in for the kernel behind them (every
sysfs write goes through ``kernel._write``): it moves the device's ``driver``
link the way the PCI core would. A driver in ``broken`` is one the kernel has
no module for, or one whose probe fails: probing with it binds nothing.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from smartnic_vif.host import kernel
from smartnic_vif.model.errors import HostOperationError

VF = "0000:05:08.0"


class FakePciBus:
    """What the PCI core does on each sysfs write (bus/pci/drivers_probe,
    drivers/<d>/bind and unbind, devices/<a>/driver_override)."""

    def __init__(self, root: Path, broken: set[str]) -> None:
        self.root = root
        self.pci = root / "sys" / "bus" / "pci"
        self.broken = broken
        self.writes: list[tuple[str, str]] = []

    def device(self, address: str) -> Path:
        return self.pci / "devices" / address

    def driver(self, address: str) -> str | None:
        link = self.device(address) / "driver"
        return os.path.basename(os.readlink(link)) if link.is_symlink() else None

    def _attach(self, address: str, driver: str) -> None:
        if driver in self.broken or self.driver(address) is not None:
            return  # the probe fails: the device stays without a driver
        (self.device(address) / "driver").symlink_to(f"../../drivers/{driver}")

    def write(self, path: str, value: str) -> None:
        rel = os.path.relpath(path, self.pci)
        self.writes.append((rel, value))
        Path(path).write_text(value)
        parts = rel.split("/")
        override = (self.device(VF) / "driver_override").read_text().strip() or None
        if parts[0] == "drivers" and parts[2] == "unbind" and self.driver(value) == parts[1]:
            (self.device(value) / "driver").unlink()
        elif parts[0] == "drivers" and parts[2] == "bind" and override in (None, parts[1]):
            # Without an override only a driver whose id table matches binds;
            # here every driver that is not broken matches.
            self._attach(value, parts[1])
        elif rel == "drivers_probe" and override is not None:
            self._attach(value, override)


@pytest.fixture
def bus(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FakePciBus:
    pci = tmp_path / "sys" / "bus" / "pci"
    for driver in ("nfp", "vfio-pci", "nosuchdrv-not-loaded"):
        for name in ("bind", "unbind"):
            (pci / "drivers" / driver).mkdir(parents=True, exist_ok=True)
            (pci / "drivers" / driver / name).write_text("")
    (pci / "drivers_probe").write_text("")
    dev = pci / "devices" / VF
    dev.mkdir(parents=True)
    (dev / "driver_override").write_text("\n")
    (dev / "driver").symlink_to("../../drivers/nfp")
    fake = FakePciBus(tmp_path, broken={"nosuchdrv", "nosuchdrv-not-loaded"})
    monkeypatch.setattr(kernel, "_write", fake.write)
    return fake


def test_bind_moves_the_vf_and_clears_the_override(bus: FakePciBus) -> None:
    assert kernel.LinuxKernel(str(bus.root)).bind_driver(VF, "vfio-pci") == "nfp"
    assert bus.driver(VF) == "vfio-pci"
    assert bus.writes[-1] == (f"devices/{VF}/driver_override", "\n")


@pytest.mark.parametrize("driver", ["nosuchdrv", "nosuchdrv-not-loaded"])
def test_a_failed_bind_gives_the_vf_its_previous_driver_back(bus: FakePciBus,
                                                             driver: str) -> None:
    with pytest.raises(HostOperationError) as exc:
        kernel.LinuxKernel(str(bus.root)).bind_driver(VF, driver)
    assert f"binding {VF} to {driver} failed" in str(exc.value)
    assert "previous driver nfp" in str(exc.value)
    assert bus.driver(VF) == "nfp"
    # Re-bound the way it was bound to the new one: override, then probe
    # (so a driver without the VF in its id table, vfio-pci, comes back too).
    assert bus.writes[-3:] == [(f"devices/{VF}/driver_override", "nfp"),
                               ("drivers_probe", VF),
                               (f"devices/{VF}/driver_override", "\n")]


def test_a_failed_bind_from_vfio_gives_vfio_back(bus: FakePciBus) -> None:
    linux = kernel.LinuxKernel(str(bus.root))
    assert linux.bind_driver(VF, "vfio-pci") == "nfp"
    with pytest.raises(HostOperationError, match="previous driver vfio-pci"):
        linux.bind_driver(VF, "nosuchdrv")
    assert bus.driver(VF) == "vfio-pci"


def test_when_the_previous_driver_cannot_come_back_the_error_says_so(
    bus: FakePciBus,
) -> None:
    bus.broken.add("nfp")  # the old driver's probe fails now too
    with pytest.raises(HostOperationError) as exc:
        kernel.LinuxKernel(str(bus.root)).bind_driver(VF, "nosuchdrv")
    assert "previous driver nfp" in str(exc.value) and "no driver" in str(exc.value)
    assert bus.driver(VF) is None
