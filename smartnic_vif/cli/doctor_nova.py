"""doctor's checks of Nova's ``[pci]`` configuration against the inventory.

The file is ``--nova-config FILE``, else ``/etc/nova/nova.conf`` when it is
readable. On a host without Nova (the standalone CLI, the demo) the project's
own ``[os_vif_smartnic] pci_device_spec`` is checked instead: it is the copy
``attach`` selects VFs with, and only a fallback for doctor.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from smartnic_vif.cli.main import UsageError, config_field

if TYPE_CHECKING:
    from smartnic_vif.model.inventory import Inventory

Check = Callable[[str, bool, str, str], None]


def nova_checks(args: argparse.Namespace, group: Any, inventory: Inventory | None,
                check: Check) -> None:
    from smartnic_vif.decisions.nova_pci import PCI_SPEC_HINT, check_nova_pci
    from smartnic_vif.host.novaconf import DEFAULT_PATH, NovaConfigError, read_nova_pci

    path = getattr(args, "nova_config", None)
    aliases: list[str] | None
    if path is not None and not os.path.isfile(path):
        raise UsageError(f"--nova-config {path}: no such file")
    if path is None and os.path.isfile(DEFAULT_PATH) and os.access(DEFAULT_PATH, os.R_OK):
        path = DEFAULT_PATH
    if path is None:
        lines = list(group.pci_device_spec or [])
        if not lines:
            if inventory is not None:
                check("device_spec", False,
                      f"no nova.conf to check ({DEFAULT_PATH} is not readable) and "
                      "pci_device_spec is not set",
                      "run doctor --nova-config FILE with the nova.conf nova-compute reads, "
                      f"or (no Nova here) set {config_field('pci_device_spec')} to what "
                      f"'{PCI_SPEC_HINT}' prints")
            return
        source, aliases = config_field("pci_device_spec"), None
    else:
        try:
            pci = read_nova_pci(path)
        except NovaConfigError as e:
            check("nova_config", False, str(e),
                  f"correct {path} (nova-compute cannot read it either)")
            return
        notes = "; ".join(pci.deprecated)
        check("nova_config", True, f"read [pci] of {path}" + (f" ({notes})" if notes else ""),
              "")
        source, lines, aliases = path, list(pci.device_spec), list(pci.alias)
    if inventory is None:
        return
    for finding in check_nova_pci(inventory, lines, aliases, source):
        check(finding.check, finding.ok, finding.detail, finding.fix or "")


__all__ = ["nova_checks"]
