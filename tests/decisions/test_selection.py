"""VF selection on a host where a SmartNIC and a legacy SR-IOV NIC share a physnet."""

from __future__ import annotations

import dataclasses
import random

import pytest

from smartnic_vif.decisions.devspec import parse_device_specs
from smartnic_vif.decisions.pci_request import PortPciRequest, pci_request_for_port
from smartnic_vif.decisions.selection import (
    CLAIMED,
    IN_USE,
    NO_REPRESENTOR,
    NO_SWITCHDEV,
    NOT_IN_DEVICE_SPEC,
    assess_vfs,
    select_vf,
)
from smartnic_vif.model.errors import InvalidValue, NoSuitableVF
from smartnic_vif.model.inventory import Inventory
from smartnic_vif.model.vnic import VnicType
from tests.decisions.hosts import LEGACY_PF, REMOTE_PF, SMARTNIC_PF, mixed_host

HOST = mixed_host()
PORT = "33333333-0000-4000-8000-000000000001"
OTHER = "33333333-0000-4000-8000-000000000002"

# What an operator writes: both NICs of the host on physnet1, the second
# SmartNIC on physnet2. No vendor or product ids anywhere.
SPECS = parse_device_specs(
    [
        f'{{"address": "{SMARTNIC_PF}", "physical_network": "physnet1"}}',
        f'{{"address": "{LEGACY_PF}", "physical_network": "physnet1"}}',
        f'{{"address": "{REMOTE_PF}", "physical_network": "physnet2"}}',
    ]
)
SMARTNIC_VFS = [vf.address for vf in HOST.pf(SMARTNIC_PF).vfs]
LEGACY_VFS = [vf.address for vf in HOST.pf(LEGACY_PF).vfs]
REMOTE_VFS = [vf.address for vf in HOST.pf(REMOTE_PF).vfs]


def request(vnic: str, physnet: str | None = "physnet1", **profile: object) -> PortPciRequest:
    port = {"id": PORT, "binding:vnic_type": vnic, "binding:profile": dict(profile)}
    net = {"provider:network_type": "vlan" if physnet else "vxlan",
           "provider:physical_network": physnet}
    req = pci_request_for_port(port, net)
    assert req is not None
    return req


FORWARDER = request("virtio-forwarder")
OFFLOAD = request("direct", capabilities=["switchdev"])
LEGACY = request("direct")


def claims_of(addresses: list[str], port: str = OTHER) -> dict[str, str]:
    return {a: port for a in addresses}


def test_accelerated_ports_take_the_lowest_switchdev_vf() -> None:
    assert select_vf(HOST, {}, FORWARDER, SPECS).address == "0000:05:08.0"
    assert select_vf(HOST, {}, OFFLOAD, SPECS).address == "0000:05:08.0"
    taken = claims_of(SMARTNIC_VFS[:5])
    assert select_vf(HOST, taken, FORWARDER, SPECS).address == "0000:05:08.5"


def test_accelerated_ports_never_get_a_legacy_vf_or_one_without_representor() -> None:
    # Every usable SmartNIC VF taken: legacy VFs on the same physnet are free,
    # yet an accelerated port must not get one.
    taken = claims_of(SMARTNIC_VFS[:11])
    for req in (FORWARDER, OFFLOAD):
        with pytest.raises(NoSuitableVF) as exc:
            select_vf(HOST, taken, req, SPECS)
        err = exc.value
        assert err.port_id == PORT
        assert err.reasons == {
            **{a: CLAIMED for a in SMARTNIC_VFS[:11]},
            "0000:05:09.3": NO_REPRESENTOR,
            **{a: NO_SWITCHDEV for a in LEGACY_VFS},
            **{a: "physical_network physnet2" for a in REMOTE_VFS},
        }
        assert str(err) == (
            f"no suitable VF for port {PORT} (physical_network physnet1, switchdev): "
            "0000:05:08.0-0000:05:09.2: claimed; 0000:05:09.3: no representor; "
            "0000:06:10.0-0000:06:10.3: no switchdev; "
            "0000:81:0a.0-0000:81:0a.3: physical_network physnet2"
        )
        assert err.by_reason()[NO_SWITCHDEV] == LEGACY_VFS


def test_legacy_port_may_take_any_vf_of_its_physnet() -> None:
    assert select_vf(HOST, {}, LEGACY, SPECS).address == "0000:05:08.0"
    taken = claims_of(SMARTNIC_VFS)
    assert select_vf(HOST, taken, LEGACY, SPECS).address == "0000:06:10.0"
    # The VF without a representor is fine for a port that is not offloaded.
    assert select_vf(HOST, claims_of(SMARTNIC_VFS[:11]), LEGACY, SPECS).address == "0000:05:09.3"


def test_physnet_comes_from_device_spec_tags() -> None:
    assert select_vf(HOST, {}, request("virtio-forwarder", "physnet2"), SPECS).address == (
        "0000:81:0a.0"
    )
    # Tags compare case-insensitively, as in Nova.
    assert select_vf(HOST, {}, request("virtio-forwarder", "PHYSNET2"), SPECS).address == (
        "0000:81:0a.0"
    )
    with pytest.raises(NoSuitableVF) as exc:
        select_vf(HOST, {}, request("virtio-forwarder", "physnet9"), SPECS)
    assert set(exc.value.by_reason()) == {"physical_network physnet1", "physical_network physnet2"}


def test_tunnelled_port_needs_vfs_without_physnet_tag() -> None:
    tunnel = request("virtio-forwarder", None)
    with pytest.raises(NoSuitableVF, match=r"physical_network \(none: tunnelled\)"):
        select_vf(HOST, {}, tunnel, SPECS)
    specs = parse_device_specs([f'{{"address": "{REMOTE_PF}"}}'])
    assert select_vf(HOST, {}, tunnel, specs).address == "0000:81:0a.0"


def test_vfs_outside_device_spec_are_not_used() -> None:
    specs = parse_device_specs(['{"address": "0000:05:09.*", "physical_network": "physnet1"}'])
    assert select_vf(HOST, {}, FORWARDER, specs).address == "0000:05:09.0"
    reasons = {a.vf.address: a.reason for a in assess_vfs(HOST, {}, FORWARDER, specs)}
    assert reasons["0000:05:08.0"] == NOT_IN_DEVICE_SPEC
    assert reasons["0000:05:09.0"] is None


def test_without_device_specs_physnet_is_not_checked() -> None:
    assert select_vf(HOST, {}, request("virtio-forwarder", "physnet9")).address == "0000:05:08.0"


def test_trusted_must_match_the_spec_tag() -> None:
    trusted = request("virtio-forwarder", trusted=True)
    with pytest.raises(NoSuitableVF) as exc:
        select_vf(HOST, {}, trusted, SPECS)
    assert exc.value.reasons["0000:05:08.0"] == "trusted unset"
    specs = parse_device_specs(
        ['{"address": "0000:05:09.1", "physical_network": "physnet1", "trusted": "true"}',
         '{"address": "0000:05:09.2", "physical_network": "physnet1", "trusted": "false"}']
        + [f'{{"address": "{SMARTNIC_PF}", "physical_network": "physnet1"}}']
    )
    assert select_vf(HOST, {}, trusted, specs).address == "0000:05:09.1"
    untrusted = request("virtio-forwarder", trusted=False)
    assert select_vf(HOST, {}, untrusted, specs).address == "0000:05:09.2"
    # A port that does not say takes any of them.
    assert select_vf(HOST, {}, FORWARDER, specs).address == "0000:05:08.0"


def test_remote_managed_vfs_are_kept_for_remote_managed_ports() -> None:
    specs = parse_device_specs(
        ['{"address": "0000:05:08.0", "physical_network": "physnet1", "remote_managed": "true"}',
         f'{{"address": "{SMARTNIC_PF}", "physical_network": "physnet1"}}']
    )
    # The remote-managed spec matches nothing here (no VPD serial), so 05:08.0
    # falls to the second entry, like in Nova.
    assert select_vf(HOST, {}, FORWARDER, specs).address == "0000:05:08.0"


def test_numa_affinity() -> None:
    on_node1 = select_vf(HOST, {}, request("virtio-forwarder", None), parse_device_specs(
        ['{"address": "*:*:*.*"}']), numa_node=1)
    assert on_node1.address == "0000:81:0a.0"
    with pytest.raises(NoSuitableVF) as exc:
        select_vf(HOST, {}, FORWARDER, SPECS, numa_node=1)
    assert exc.value.reasons["0000:05:08.0"] == "NUMA node 0"
    assert "NUMA node 1 (legacy)" in str(exc.value)
    preferred = dataclasses.replace(FORWARDER, numa_policy="preferred")
    assert select_vf(HOST, {}, preferred, SPECS, numa_node=1).address == "0000:05:08.0"
    # preferred puts same-node VFs first, then keeps address order
    any_net = dataclasses.replace(preferred, physical_network=None)
    everything = parse_device_specs(['{"address": "*:*:*.*"}'])
    assert select_vf(HOST, {}, any_net, everything, numa_node=1).address == "0000:81:0a.0"


def test_unknown_numa_node_passes_legacy_not_required() -> None:
    host = Inventory("/", tuple(
        dataclasses.replace(pf, vfs=tuple(dataclasses.replace(vf, numa_node=None)
                                          for vf in pf.vfs))
        for pf in HOST.pfs
    ))
    assert select_vf(host, {}, FORWARDER, SPECS, numa_node=0).address == "0000:05:08.0"
    required = dataclasses.replace(FORWARDER, numa_policy="required")
    with pytest.raises(NoSuitableVF, match="NUMA node unknown"):
        select_vf(host, {}, required, SPECS, numa_node=0)


def test_driver_constraint() -> None:
    assert select_vf(HOST, {}, LEGACY, SPECS, drivers={"mlx5_core"}).address == "0000:06:10.0"
    with pytest.raises(NoSuitableVF) as exc:
        select_vf(HOST, {}, FORWARDER, SPECS, drivers={"vfio-pci", None})
    assert exc.value.reasons["0000:05:08.0"] == "driver nfp"


def test_deterministic_whatever_the_inventory_order() -> None:
    rng = random.Random(4)
    for _ in range(5):
        pfs = list(HOST.pfs)
        rng.shuffle(pfs)
        shuffled = Inventory("/", tuple(
            dataclasses.replace(pf, vfs=tuple(rng.sample(pf.vfs, len(pf.vfs)))) for pf in pfs
        ))
        assert select_vf(shuffled, claims_of(SMARTNIC_VFS[:3]), FORWARDER, SPECS).address == (
            "0000:05:08.3"
        )


def test_a_ports_own_claim_is_free_for_it() -> None:
    mine = {"0000:05:08.0": PORT, "0000:05:08.1": OTHER}
    assert select_vf(HOST, mine, FORWARDER, SPECS).address == "0000:05:08.0"
    # Claims may be written in any case; they are normalised.
    assert select_vf(HOST, {"0000:05:08.0": OTHER.upper()} | {"0000:05:08.1".upper(): OTHER},
                     FORWARDER, SPECS).address == "0000:05:08.2"


def test_bad_claims_and_requests() -> None:
    with pytest.raises(InvalidValue, match="claims"):
        select_vf(HOST, {"05:08": OTHER}, FORWARDER, SPECS)
    physical = request("direct-physical")
    with pytest.raises(InvalidValue, match="type-PF"):
        select_vf(HOST, {}, physical, SPECS)
    assert physical.vnic_type is VnicType.DIRECT_PHYSICAL


def test_empty_host() -> None:
    with pytest.raises(NoSuitableVF, match="no SR-IOV virtual functions") as exc:
        select_vf(Inventory("/", ()), {}, FORWARDER)
    assert exc.value.reasons == {}


def test_a_vf_in_use_on_the_host_without_a_claim_is_never_handed_out() -> None:
    # A lost state database leaves VFs whose representor is on OVS for a
    # port, or whose relay exists, with no claim: the host layer says so.
    busy = {"0000:05:08.0": "representor tap1 is on OVS for port p1",
            "0000:05:08.1": "virtio-forwarder relays it to /run/vhu1"}
    assert select_vf(HOST, {}, FORWARDER, SPECS, busy=busy).address == "0000:05:08.2"
    with pytest.raises(NoSuitableVF) as exc:
        select_vf(HOST, claims_of(SMARTNIC_VFS[2:]), FORWARDER, SPECS, busy=busy)
    assert exc.value.reasons["0000:05:08.0"] == f"{IN_USE}: representor tap1 is on OVS for port p1"
    assert exc.value.reasons["0000:05:08.1"].startswith(IN_USE)
