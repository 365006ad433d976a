"""The PCI addresses of every device on the host (``sys/bus/pci/devices``)."""

from __future__ import annotations

import os

from smartnic_vif.model.errors import InvalidValue
from smartnic_vif.model.types import PciAddress


def pci_addresses(root: str = "/") -> list[str]:
    """Every PCI device's address under ``root``, SR-IOV or not, normalised;
    entries that are not PCI addresses are skipped."""
    out = []
    for name in os.listdir(os.path.join(root, "sys", "bus", "pci", "devices")):
        try:
            out.append(str(PciAddress.parse(name)))
        except InvalidValue:
            continue
    return sorted(out)


__all__ = ["pci_addresses"]
