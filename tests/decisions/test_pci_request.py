"""PCI requests: ours against Nova's ``create_resource_requests`` on the same ports.

Nova runs unmodified; only its Neutron client is a fake that answers from the
same port and network dicts the library is given.
"""

from __future__ import annotations

import itertools
from typing import Any

import pytest
from nova import exception as nova_exception
from nova import objects as nova_objects
from nova.network import neutron as nova_neutron

from smartnic_vif.decisions.pci_request import (
    NetworkPlacement,
    PortPciRequest,
    network_placement,
    pci_request_for_port,
    pci_requests_for_ports,
)
from smartnic_vif.model.errors import InvalidValue, UnsupportedVnicType
from smartnic_vif.model.vnic import VnicType
from tests.decisions.novaref import FakeNeutronClient

NETWORKS: dict[str, dict[str, Any]] = {
    "vlan": {
        "id": "11111111-0000-4000-8000-000000000001",
        "provider:network_type": "vlan",
        "provider:physical_network": "physnet1",
        "provider:segmentation_id": 100,
    },
    "flat": {
        "id": "11111111-0000-4000-8000-000000000002",
        "provider:network_type": "flat",
        "provider:physical_network": "PhysNet2",
    },
    "vxlan": {
        "id": "11111111-0000-4000-8000-000000000003",
        "provider:network_type": "vxlan",
        "provider:physical_network": None,
        "provider:segmentation_id": 4242,
    },
    "geneve": {
        "id": "11111111-0000-4000-8000-000000000004",
        "provider:network_type": "geneve",
        "provider:physical_network": None,
    },
    "segments-tunnel-first": {
        "id": "11111111-0000-4000-8000-000000000005",
        "segments": [
            {"provider:network_type": "vxlan", "provider:physical_network": None},
            {"provider:network_type": "vlan", "provider:physical_network": "physnet3"},
        ],
    },
    "segments-two-vlans": {
        "id": "11111111-0000-4000-8000-000000000006",
        "segments": [
            {"provider:network_type": "vlan", "provider:physical_network": "physnet4"},
            {"provider:network_type": "vlan", "provider:physical_network": "physnet5"},
        ],
    },
}

# Types Nova handles without Cyborg (accelerator-* need a device profile service).
VNIC_TYPES = [
    "normal", "direct", "macvtap", "baremetal", "direct-physical", "virtio-forwarder",
    "smart-nic", "vdpa", "remote-managed",
]
PROFILES: dict[str, dict[str, Any] | None] = {
    "none": None,
    "empty": {},
    "trusted-true": {"trusted": True},
    "trusted-false": {"trusted": False},
    "trusted-yes": {"trusted": "yes"},
    "trusted-0": {"trusted": "0"},
    "switchdev": {"capabilities": ["switchdev"]},
    "switchdev-trusted": {"capabilities": ["switchdev"], "trusted": "True"},
}

_port_ids = (f"22222222-0000-4000-8000-{n:012d}" for n in itertools.count(1))


def make_port(
    network: str, vnic: str, profile: dict[str, Any] | None, numa_policy: str | None = None
) -> dict[str, Any]:
    port: dict[str, Any] = {
        "id": next(_port_ids),
        "network_id": NETWORKS[network]["id"],
        "binding:vnic_type": vnic,
        "binding:profile": profile,
        "resource_request": None,
        "mac_address": "fa:16:3e:12:34:56",
    }
    if numa_policy:
        port["numa_affinity_policy"] = numa_policy
    return port


def nova_requests(
    client: FakeNeutronClient, ctx: Any, ports: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """Run Nova's create_resource_requests on ``ports``; the requests it made."""
    client.ports = {p["id"]: p for p in ports}
    client.networks = {n["id"]: n for n in NETWORKS.values()}
    requested = nova_objects.NetworkRequestList(
        objects=[nova_objects.NetworkRequest(port_id=p["id"]) for p in ports]
    )
    pci_requests = nova_objects.InstancePCIRequests(requests=[])
    nova_neutron.API().create_resource_requests(ctx, requested, pci_requests)
    out = []
    for r in pci_requests.requests:
        out.append(
            {
                "requester_id": r.requester_id,
                "count": r.count,
                "spec": r.spec,
                "numa_policy": r.numa_policy if "numa_policy" in r else None,
            }
        )
    return out


def our_requests(ports: list[dict[str, Any]]) -> list[dict[str, Any]]:
    by_id = {n["id"]: n for n in NETWORKS.values()}
    return [
        {
            "requester_id": r.port_id,
            "count": r.count,
            "spec": [r.to_nova_spec()],
            "numa_policy": r.numa_policy,
        }
        for r in pci_requests_for_ports(ports, by_id)
    ]


@pytest.mark.parametrize("network", sorted(NETWORKS))
@pytest.mark.parametrize("vnic", VNIC_TYPES)
def test_same_request_as_nova_per_vnic_type_and_network(
    fake_neutron: FakeNeutronClient, nova_ctx: Any, network: str, vnic: str
) -> None:
    ports = [make_port(network, vnic, profile) for profile in PROFILES.values()]
    theirs = nova_requests(fake_neutron, nova_ctx, ports)
    ours = our_requests(ports)
    assert ours == theirs
    # Not vacuous: Nova did make one request per port for the PCI types.
    expected = len(ports) if vnic in ("direct", "macvtap", "direct-physical",
                                      "virtio-forwarder", "vdpa", "remote-managed") else 0
    assert len(theirs) == expected


def test_specific_values_agreed_with_nova(fake_neutron: FakeNeutronClient, nova_ctx: Any) -> None:
    ports = [
        make_port("vlan", "virtio-forwarder", None),
        make_port("vxlan", "direct", {"capabilities": ["switchdev"], "trusted": "yes"}),
        make_port("segments-tunnel-first", "direct-physical", {}),
        make_port("flat", "remote-managed", {"trusted": False}),
        make_port("segments-two-vlans", "vdpa", None, numa_policy="required"),
        make_port("vlan", "normal", None),
    ]
    theirs = nova_requests(fake_neutron, nova_ctx, ports)
    assert our_requests(ports) == theirs
    specs = [r["spec"][0] for r in theirs]
    assert specs == [
        {"physical_network": "physnet1", "remote_managed": "False"},
        {"physical_network": None, "remote_managed": "False", "trusted": "True"},
        {"physical_network": "physnet3", "remote_managed": "False", "dev_type": "type-PF"},
        {"physical_network": "PhysNet2", "remote_managed": "True", "trusted": "False"},
        {"physical_network": "physnet4", "remote_managed": "False", "dev_type": "vdpa"},
    ]
    assert theirs[4]["numa_policy"] == "required"


def test_same_as_nova_without_multi_provider_extension(
    fake_neutron: FakeNeutronClient, nova_ctx: Any
) -> None:
    fake_neutron.extensions = ()
    ports = [make_port(n, "direct", {"trusted": "1"}) for n in ("vlan", "flat", "vxlan")]
    assert our_requests(ports) == nova_requests(fake_neutron, nova_ctx, ports)


def test_capabilities_are_ours_only() -> None:
    net = NETWORKS["vlan"]
    forwarder = pci_request_for_port(make_port("vlan", "virtio-forwarder", None), net)
    offload = pci_request_for_port(make_port("vlan", "direct", PROFILES["switchdev"]), net)
    legacy = pci_request_for_port(make_port("vlan", "direct", {}), net)
    assert forwarder is not None and offload is not None and legacy is not None
    assert forwarder.capabilities == ("switchdev",) and forwarder.needs_switchdev
    assert offload.capabilities == ("switchdev",)
    assert legacy.capabilities == () and not legacy.needs_switchdev
    assert "capabilities" not in str(offload.to_nova_spec())
    assert forwarder.vnic_type is VnicType.VIRTIO_FORWARDER


def test_request_is_frozen() -> None:
    req = pci_request_for_port(make_port("vlan", "direct", {}), NETWORKS["vlan"])
    assert isinstance(req, PortPciRequest)
    with pytest.raises(AttributeError):
        req.physical_network = "other"  # type: ignore[misc]


def test_normal_and_other_non_pci_ports_get_none() -> None:
    for vnic in ("normal", "baremetal", "smart-nic", "accelerator-direct"):
        assert pci_request_for_port(make_port("vlan", vnic, None), NETWORKS["vlan"]) is None
    # No network is needed to know that.
    assert pci_request_for_port(make_port("vlan", "normal", None), None) is None


def test_multi_segment_without_physnet_diverges_from_nova_on_purpose(
    fake_neutron: FakeNeutronClient, nova_ctx: Any
) -> None:
    """Nova refuses a multi-segment network none of whose segments has a
    physnet; here it is tunnelled (no physnet), as a VXLAN network would be."""
    NETWORKS["segments-all-tunnels"] = {
        "id": "11111111-0000-4000-8000-000000000009",
        "segments": [
            {"provider:network_type": "vxlan", "provider:physical_network": None},
            {"provider:network_type": "geneve", "provider:physical_network": None},
        ],
    }
    try:
        port = make_port("segments-all-tunnels", "direct", None)
        with pytest.raises(nova_exception.NovaException, match="physical_network"):
            nova_requests(fake_neutron, nova_ctx, [port])
        req = pci_request_for_port(port, NETWORKS["segments-all-tunnels"])
        assert req is not None and req.physical_network is None
        assert network_placement(NETWORKS["segments-all-tunnels"]) == NetworkPlacement(None, True)
    finally:
        del NETWORKS["segments-all-tunnels"]


def test_network_placement() -> None:
    assert network_placement(NETWORKS["vlan"]) == NetworkPlacement("physnet1", False)
    assert network_placement(NETWORKS["vxlan"]) == NetworkPlacement(None, True)
    assert network_placement(NETWORKS["segments-tunnel-first"]) == NetworkPlacement(
        "physnet3", False
    )
    assert network_placement({"segments": []}) == NetworkPlacement(None, False)


class TestBadInput:
    def test_unknown_vnic_type_names_port(self) -> None:
        port = make_port("vlan", "virtio", None)
        with pytest.raises(UnsupportedVnicType) as exc:
            pci_request_for_port(port, NETWORKS["vlan"])
        assert port["id"] in str(exc.value) and "'virtio'" in str(exc.value)

    def test_unrecognised_trusted_is_an_error_not_false(self) -> None:
        # Nova would read "maybe" as False; a typo must not silently untrust.
        port = make_port("vlan", "direct", {"trusted": "maybe"})
        with pytest.raises(InvalidValue) as exc:
            pci_request_for_port(port, NETWORKS["vlan"])
        assert exc.value.value == "maybe" and "trusted" in exc.value.field
        assert port["id"] in exc.value.field

    @pytest.mark.parametrize("port_id", [None, "", 5])
    def test_port_without_id(self, port_id: object) -> None:
        with pytest.raises(InvalidValue, match="port.id"):
            pci_request_for_port({"id": port_id, "binding:vnic_type": "direct"}, NETWORKS["vlan"])

    def test_vf_port_without_network(self) -> None:
        port = make_port("vlan", "direct", None)
        with pytest.raises(InvalidValue, match="network"):
            pci_request_for_port(port, None)
        with pytest.raises(InvalidValue, match="network"):
            pci_requests_for_ports([port], {})

    def test_binding_profile_must_be_an_object(self) -> None:
        port = make_port("vlan", "direct", None)
        port["binding:profile"] = "trusted"
        with pytest.raises(InvalidValue, match="binding:profile"):
            pci_request_for_port(port, NETWORKS["vlan"])

    def test_bad_capabilities(self) -> None:
        port = make_port("vlan", "direct", {"capabilities": "switchdev"})
        with pytest.raises(InvalidValue, match="capabilities"):
            pci_request_for_port(port, NETWORKS["vlan"])

    def test_bad_numa_policy(self) -> None:
        port = make_port("vlan", "direct", None, numa_policy="strict")
        with pytest.raises(InvalidValue, match="numa_affinity_policy"):
            pci_request_for_port(port, NETWORKS["vlan"])

    def test_bad_segments(self) -> None:
        with pytest.raises(InvalidValue, match="segments"):
            network_placement({"segments": "vlan"})
        with pytest.raises(InvalidValue, match="segments"):
            network_placement({"segments": ["vlan"]})
