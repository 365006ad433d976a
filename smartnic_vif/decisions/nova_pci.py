"""What Nova's ``[pci]`` configuration gives it of this host's VFs.

Pure: takes the inventory and the ``device_spec`` and ``alias`` values as
nova.conf holds them (:mod:`smartnic_vif.host.novaconf` reads them) and
returns doctor's findings, each failed one with the fix, naming ``source``
(the file they came from). Matching is :mod:`.devspec`'s, which follows
``nova.pci.devspec.PciDeviceSpec``: a VF is Nova's when an entry matches it,
and the first entry that matches gives its tags.

Why legacy VFs beside switchdev VFs matter: for a ``direct`` port Nova asks
the PCI tracker for one VF by ``physical_network``, ``remote_managed``
(``false``: ``true`` is for vnic type ``remote-managed``, DPUs with a card
serial number in VPD) and ``dev_type`` ``type-VF``, plus ``trusted`` only when
the port asks for it. Nothing in that request says switchdev, so on a physical
network with both kinds Nova may give a direct port a legacy VF, which has no
representor and cannot be offloaded (Nova's own comment: both SR-IOV modes
cannot be used together). The only real separation is the physical network:
give the legacy VFs another one, or leave them out of ``device_spec``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from smartnic_vif.decisions.devspec import (
    DeviceSpec,
    first_match,
    parse_aliases,
    parse_device_specs,
)
from smartnic_vif.model.errors import InvalidValue
from smartnic_vif.model.inventory import Inventory, VirtualFunction

PCI_SPEC_HINT = "smartnic-vif pci-spec --physnet-map PF=PHYSNET"


@dataclass(frozen=True)
class Finding:
    check: str
    ok: bool
    detail: str
    fix: str | None  # None when ok


def describe_vfs(vfs: Sequence[VirtualFunction], limit: int = 4) -> str:
    """VFs per PF as index ranges with their first and last address:
    ``PF 0000:05:00.0 VFs 0-7 (0000:05:08.0..0000:05:08.7)``."""
    by_pf: dict[str, list[VirtualFunction]] = {}
    for vf in vfs:
        by_pf.setdefault(vf.pf_address, []).append(vf)
    parts = []
    for pf, members in sorted(by_pf.items()):
        members.sort(key=lambda v: v.index)
        ranges: list[list[int]] = []
        for vf in members:
            if ranges and ranges[-1][1] == vf.index - 1:
                ranges[-1][1] = vf.index
            else:
                ranges.append([vf.index, vf.index])
        shown = ",".join(f"{a}" if a == b else f"{a}-{b}" for a, b in ranges[:limit])
        more = ",..." if len(ranges) > limit else ""
        span = (members[0].address if len(members) == 1
                else f"{members[0].address}..{members[-1].address}")
        parts.append(f"PF {pf} VF{'s' if len(members) > 1 else ''} {shown}{more} ({span})")
    return "; ".join(parts)


def check_nova_pci(
    inventory: Inventory,
    device_spec: Iterable[str],
    alias: Iterable[str] | None,
    source: str,
) -> list[Finding]:
    """doctor's findings on ``device_spec`` and ``alias`` (from ``source``):

    * ``device_spec``: it parses, and every switchdev VF is matched by an entry;
    * ``physnet``: every matched switchdev VF has a ``physical_network`` tag;
    * ``legacy_physnet``: no matched legacy VF shares a physical network (or
      the lack of one) with a matched switchdev VF;
    * ``alias``: the aliases parse as Nova parses them (not checked when
      ``alias`` is None: a source that has none, like ``pci_device_spec``).
    """
    findings = _device_spec_findings(inventory, list(device_spec), source)
    if alias is None:
        return findings
    try:
        aliases = parse_aliases(list(alias))
        findings.append(Finding(
            "alias", True,
            f"{len(aliases)} [pci] alias name(s) in {source}" + (
                f": {', '.join(sorted(aliases))}" if aliases else
                " (only flavors' pci_passthrough:alias need one)"), None))
    except InvalidValue as e:
        findings.append(Finding("alias", False, f"{source}: {e}",
                                f"correct that [pci] alias entry in {source} "
                                "('smartnic-vif pci-spec' prints working ones)"))
    return findings


def _device_spec_findings(inventory: Inventory, lines: list[str], source: str) -> list[Finding]:
    if not lines:
        return [Finding("device_spec", False, f"{source} has no [pci] device_spec",
                        f"add the lines '{PCI_SPEC_HINT}' prints to [pci] in {source}")]
    try:
        specs = parse_device_specs(lines)
    except InvalidValue as e:
        return [Finding("device_spec", False, f"{source}: {e}",
                        f"correct that entry in {source}, or replace [pci] device_spec there "
                        f"with what '{PCI_SPEC_HINT}' prints")]
    switchdev = [vf for vf in inventory.vfs() if vf.switchdev]
    legacy = [vf for vf in inventory.vfs() if not vf.switchdev]
    tags = {vf.address: first_match(specs, vf, inventory) for vf in inventory.vfs()}
    uncovered = [vf for vf in switchdev if tags[vf.address] is None]
    covered = [vf for vf in switchdev if tags[vf.address] is not None]
    findings = [Finding(
        "device_spec", not uncovered,
        f"{len(covered)}/{len(switchdev)} switchdev VFs match the device_spec entries in {source}"
        + (f"; no entry matches {describe_vfs(uncovered)}" if uncovered else ""),
        None if not uncovered else
        f"add the entries '{PCI_SPEC_HINT}' prints to [pci] device_spec in {source}")]

    untagged = [vf for vf in covered if _physnet(tags, vf) is None]
    findings.append(Finding(
        "physnet", not untagged,
        "every matched switchdev VF has a physical_network tag" if not untagged else
        f"matched without a physical_network tag, so Nova gives them only to ports on "
        f"tunnelled networks: {describe_vfs(untagged)}",
        None if not untagged else
        f"add \"physical_network\": \"<physnet>\" to the entries matching them in {source} "
        f"('{PCI_SPEC_HINT}' prints them); leave it out only for a PF that carries "
        "tunnelled networks alone"))

    switchdev_nets = {_physnet(tags, vf) for vf in covered}
    shared = [vf for vf in legacy
              if tags[vf.address] is not None and _physnet(tags, vf) in switchdev_nets]
    nets = sorted({str(_physnet(tags, vf)) for vf in shared})
    findings.append(Finding(
        "legacy_physnet", not shared,
        "no legacy (non-switchdev) VF shares a physical network with switchdev VFs"
        if not shared else
        f"legacy VFs {describe_vfs(shared)} share physical_network {', '.join(nets)} with "
        "switchdev VFs: Nova's request for a direct port names only physical_network "
        "(and remote_managed, trusted), so it may give the port a legacy VF, which "
        "cannot be offloaded",
        None if not shared else
        f"in {source}, give the legacy PFs' VFs another physical_network (one Neutron maps "
        "to the legacy NIC) or leave them out of [pci] device_spec"))
    return findings


def _physnet(tags: Mapping[str, DeviceSpec | None], vf: VirtualFunction) -> str | None:
    spec = tags[vf.address]
    return None if spec is None else spec.physical_network


__all__ = ["Finding", "PCI_SPEC_HINT", "check_nova_pci", "describe_vfs"]
