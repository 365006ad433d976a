"""The VNIC type model agrees with the installed Neutron and Nova."""

from __future__ import annotations

import pytest
from neutron_lib.api.definitions import portbindings
from nova.network import model as nova_model
from nova.pci import request as nova_pci_request

from smartnic_vif.model.errors import InvalidValue, UnsupportedVnicType
from smartnic_vif.model.vnic import (
    DIRECT_PASSTHROUGH_VNIC_TYPES,
    PCI_DEVICE_TYPE_FOR_VNIC,
    PCI_VNIC_TYPES,
    VF_VNIC_TYPES,
    VNIC_TYPES,
    PlugMode,
    VnicType,
    needs_pci_device,
    needs_vf,
    parse_vnic_type,
    plug_mode_for,
    profile_capabilities,
    requires_switchdev,
    vnic_type_of_port,
)

PORT = "5e7d1a52-0f5c-4f5e-a1d6-8a0d2f1e3b41"


def test_vnic_types_are_neutrons_in_neutrons_order() -> None:
    assert [v.value for v in VNIC_TYPES] == list(portbindings.VNIC_TYPES)


def test_pci_types_are_novas_sriov_types() -> None:
    assert {v.value for v in PCI_VNIC_TYPES} == set(nova_model.VNIC_TYPES_SRIOV)
    assert all(needs_pci_device(v) == (v.value in nova_model.VNIC_TYPES_SRIOV) for v in VnicType)


def test_direct_passthrough_types_are_novas() -> None:
    assert {v.value for v in DIRECT_PASSTHROUGH_VNIC_TYPES} == set(
        nova_model.VNIC_TYPES_DIRECT_PASSTHROUGH
    )
    assert VnicType.VIRTIO_FORWARDER not in DIRECT_PASSTHROUGH_VNIC_TYPES


def test_device_types_are_novas() -> None:
    assert {k.value: v for k, v in PCI_DEVICE_TYPE_FOR_VNIC.items()} == dict(
        nova_pci_request.DEVICE_TYPE_FOR_VNIC_TYPE
    )


def test_vf_types() -> None:
    assert needs_vf(VnicType.DIRECT) and needs_vf(VnicType.VIRTIO_FORWARDER)
    assert not needs_vf(VnicType.DIRECT_PHYSICAL)  # the whole PF
    assert not needs_vf(VnicType.NORMAL) and not needs_vf(VnicType.SMART_NIC)
    assert VF_VNIC_TYPES < PCI_VNIC_TYPES


@pytest.mark.parametrize(
    ("vnic", "mode"),
    [("normal", PlugMode.NORMAL), ("direct", PlugMode.PASSTHROUGH),
     ("virtio-forwarder", PlugMode.FORWARDER)],
)
def test_plug_modes(vnic: str, mode: PlugMode) -> None:
    assert plug_mode_for(vnic, PORT) is mode


@pytest.mark.parametrize(
    "vnic",
    ["macvtap", "baremetal", "direct-physical", "smart-nic", "vdpa", "accelerator-direct",
     "accelerator-direct-physical", "remote-managed"],
)
def test_known_but_unsupported_types_name_port_and_type(vnic: str) -> None:
    with pytest.raises(UnsupportedVnicType) as exc:
        plug_mode_for(vnic, PORT)
    assert exc.value.port_id == PORT and exc.value.vnic_type == vnic
    assert PORT in str(exc.value) and repr(vnic) in str(exc.value)
    assert "not accelerated here" in str(exc.value)


@pytest.mark.parametrize("value", ["virtio_forwarder", "DIRECT", "", None, 3, "sriov"])
def test_unknown_types_are_refused(value: object) -> None:
    with pytest.raises(UnsupportedVnicType) as exc:
        parse_vnic_type(value, PORT)
    assert "not a Neutron VNIC type" in str(exc.value) and PORT in str(exc.value)
    assert isinstance(exc.value, ValueError)


def test_port_without_vnic_type_is_normal() -> None:
    assert vnic_type_of_port({"id": PORT}) is VnicType.NORMAL
    with pytest.raises(UnsupportedVnicType, match=PORT):
        vnic_type_of_port({"id": PORT, "binding:vnic_type": "bogus"})


def test_switchdev_requirement() -> None:
    assert requires_switchdev(VnicType.VIRTIO_FORWARDER, {})
    assert requires_switchdev(VnicType.DIRECT, {"capabilities": ["switchdev"]})
    assert not requires_switchdev(VnicType.DIRECT, {})
    assert not requires_switchdev(VnicType.DIRECT, {"capabilities": []})
    assert not requires_switchdev(VnicType.NORMAL, {"capabilities": ["switchdev"]})


def test_capabilities_must_be_a_list_of_strings() -> None:
    # A bare string would otherwise pass a substring test.
    with pytest.raises(InvalidValue, match="capabilities"):
        profile_capabilities({"capabilities": "switchdev"}, PORT)
    with pytest.raises(InvalidValue, match=PORT):
        requires_switchdev(VnicType.DIRECT, {"capabilities": [1]}, PORT)
    assert profile_capabilities({"capabilities": ["switchdev", "x"]}) == ("switchdev", "x")
