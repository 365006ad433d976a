"""Is hardware offload happening? ``doctor``'s offload checks, judged from
what :mod:`smartnic_vif.host.offload` read.

Three things must hold for a port's flows to reach the NIC:

- ovs-vswitchd offloads at all: ``other_config:hw-offload=true`` (read when
  it starts), and its ``tc-policy`` does not keep flows in software
  (``skip_hw``);
- every representor plugged on OVS has ``hw-tc-offload`` on;
- the PF behind representors is in ``switchdev`` eswitch mode (devlink).

Each failing check says what to run to fix it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

# OVS's other_config:tc-policy values (vswitch.xml); unset means "none".
TC_POLICIES = ("none", "skip_sw", "skip_hw")
_TC_POLICY_MEANS = {
    "none": "flows go to the NIC, and stay in software when it refuses them",
    "skip_sw": "flows go to the NIC only",
    "skip_hw": "flows never go to the NIC",
}
_RESTART = "then restart ovs-vswitchd (it reads this when it starts)"


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str
    fix: str  # what to do when the check fails ("" when it passes)


def _check(name: str, ok: bool, detail: str, fix: str) -> Check:
    return Check(name, ok, detail, "" if ok else fix)


@dataclass(frozen=True)
class PluggedRepresentor:
    """A VF representor that is a port on OVS, and what was read of it:
    ``hw_tc_offload`` is ethtool's text for the feature (``on``, ``off``,
    ``off [fixed]``) or None, with ``error`` saying why it could not be
    read."""

    ovs_port: str
    vf_address: str
    pf_address: str
    hw_tc_offload: str | None = None
    fixed: bool = False
    error: str | None = None


def judge_ovs_offload(other_config: Mapping[str, str]) -> list[Check]:
    """``hw-offload`` and ``tc-policy`` from OVSDB's Open_vSwitch other_config."""
    hw = other_config.get("hw-offload")
    checks = [_check(
        "hw_offload", hw == "true",
        "OVS other_config:hw-offload=true" if hw == "true"
        else f"OVS other_config:hw-offload={hw} (offload off)" if hw is not None
        else "OVS other_config:hw-offload is not set (offload off)",
        "ovs-vsctl set Open_vSwitch . other_config:hw-offload=true, " + _RESTART)]
    policy = other_config.get("tc-policy")
    shown = policy if policy is not None else "none (not set)"
    if policy is not None and policy not in TC_POLICIES:
        checks.append(_check("tc_policy", False,
                            f"OVS other_config:tc-policy={policy} is not one of "
                            f"{', '.join(TC_POLICIES)}",
                            "ovs-vsctl remove Open_vSwitch . other_config tc-policy, " + _RESTART))
    else:
        checks.append(_check("tc_policy", policy != "skip_hw",
                            f"OVS tc-policy {shown}: {_TC_POLICY_MEANS[policy or 'none']}",
                            "ovs-vsctl set Open_vSwitch . other_config:tc-policy=none, "
                            + _RESTART))
    return checks


def judge_representors(plugged: Sequence[PluggedRepresentor]) -> Check:
    """``hw-tc-offload`` on every representor plugged on OVS."""
    if not plugged:
        return _check("hw_tc_offload", True, "no VF representor is plugged on OVS", "")
    bad = [r for r in plugged if r.hw_tc_offload != "on"]
    if not bad:
        return _check("hw_tc_offload", True,
                     f"hw-tc-offload on for the {len(plugged)} representors plugged on OVS", "")
    details, fixes = [], []
    for r in bad:
        what = f"{r.ovs_port} (VF {r.vf_address})"
        if r.error is not None:
            details.append(f"{what}: cannot read hw-tc-offload: {r.error}")
            fixes.append(f"make {r.ovs_port} readable (does it still exist?)")
        elif r.fixed:
            details.append(f"{what}: hw-tc-offload {r.hw_tc_offload}")
            fixes.append(f"{r.ovs_port}'s driver does not let hw-tc-offload change: put PF "
                         f"{r.pf_address} in switchdev mode and use its driver's representors")
        else:
            details.append(f"{what}: hw-tc-offload {r.hw_tc_offload}")
            fixes.append(f"ethtool -K {r.ovs_port} hw-tc-offload on")
    return _check("hw_tc_offload", False,
                 f"{len(bad)}/{len(plugged)} representors plugged on OVS do not offload: "
                 + "; ".join(details), "; ".join(dict.fromkeys(fixes)))


def judge_eswitch(modes: Mapping[str, str | None], errors: Mapping[str, str]) -> Check:
    """The devlink eswitch mode of each PF that has representors
    (``modes``: PF -> mode, or None when ``errors`` says why it is unknown)."""
    if not modes:
        return _check("eswitch_mode", True, "no PF has representors", "")
    shown = ", ".join(f"{pf} {mode}" if mode is not None else f"{pf} unknown ({errors[pf]})"
                      for pf, mode in sorted(modes.items()))
    bad = sorted(pf for pf, mode in modes.items() if mode != "switchdev")
    if not bad:
        return _check("eswitch_mode", True, f"devlink eswitch mode: {shown}", "")
    fixes = [f"devlink dev eswitch set pci/{pf} mode switchdev" for pf in bad
             if modes[pf] is not None]
    unreadable = [pf for pf in bad if modes[pf] is None]
    if unreadable:
        fixes.append(f"check devlink dev eswitch show pci/{unreadable[0]} as root")
    return _check("eswitch_mode", False,
                 f"devlink eswitch mode: {shown}; offload needs switchdev",
                 "; ".join(fixes))


def judge_offload(
    other_config: Mapping[str, str] | None,
    plugged: Sequence[PluggedRepresentor] | None,
    modes: Mapping[str, str | None],
    errors: Mapping[str, str],
) -> list[Check]:
    """Every offload check, in doctor's order. ``other_config`` and
    ``plugged`` are None when OVSDB could not be read (doctor's ``ovsdb``
    check says so; these are then not judged)."""
    checks = judge_ovs_offload(other_config) if other_config is not None else []
    if plugged is not None:
        checks.append(judge_representors(plugged))
    checks.append(judge_eswitch(modes, errors))
    return checks
