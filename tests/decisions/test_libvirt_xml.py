"""libvirt interface XML: every document emitted is validated by libvirt's own
``virt-xml-validate`` (domain schema), wrapped in a minimal domain."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest

from smartnic_vif.decisions.libvirt_xml import (
    domain_requirements,
    forwarder_interface,
    interface_for_vif,
    normal_interface,
    passthrough_interface,
)
from smartnic_vif.decisions.pci_request import pci_request_for_port
from smartnic_vif.decisions.selection import select_vf
from smartnic_vif.decisions.vif_builder import build_vif
from smartnic_vif.model.errors import InvalidValue
from smartnic_vif.model.vnic import PlugMode
from tests.decisions.hosts import mixed_host
from tests.libvirt_schema import domain_xml, validate

MAC = "fa:16:3e:00:00:01"
PORT = "88888888-0000-4000-8000-000000000001"
NET = "88888888-0000-4000-8000-0000000000ff"


EMITTED = {
    "ethernet": normal_interface(MAC, "tap88888888-00"),
    "ethernet mtu multiqueue": normal_interface(MAC, "tap88888888-00", mtu=9000, queues=8),
    "ovs bridge": normal_interface(MAC, "tap88888888-00", bridge="br-int", interface_id=PORT),
    "hostdev": passthrough_interface(MAC, "0000:05:08.3"),
    "hostdev vlan": passthrough_interface(MAC, "0000:81:1f.7", vlan=100),
    "hostdev high domain": passthrough_interface(MAC, "ffff:ff:1f.7"),
    "vhostuser server": forwarder_interface(MAC, "/var/lib/vhost_sockets/vhu88888888-00"),
    "vhostuser client multiqueue": forwarder_interface(
        MAC, "/run/vf/vhu88888888-00", mode="client", queues=4, mtu=1450
    ),
    "vhostuser one queue": forwarder_interface(MAC, "/run/vf/s", queues=1),
}


@pytest.mark.parametrize("name", sorted(EMITTED))
def test_emitted_xml_is_valid_for_libvirt(name: str) -> None:
    validate(domain_xml([EMITTED[name]]))


@pytest.mark.parametrize("hugepages", [False, True])
def test_one_domain_with_every_mode_and_its_requirements(hugepages: bool) -> None:
    backing = domain_requirements(PlugMode.FORWARDER).to_xml(hugepages=hugepages)
    assert ("<hugepages />" in backing) is hugepages
    validate(domain_xml(list(EMITTED.values()), backing))


def test_the_validator_does_reject() -> None:
    # Guard against a validator that accepts anything.
    bad = '<interface type="vhostuser"><source type="unix" path="relative" mode="x"/></interface>'
    with pytest.raises(AssertionError):
        validate(domain_xml([bad]))


def test_passthrough_shape() -> None:
    root = ET.fromstring(EMITTED["hostdev vlan"])
    assert root.attrib == {"type": "hostdev", "managed": "yes"}
    assert root.find("mac").attrib == {"address": MAC}  # type: ignore[union-attr]
    assert root.find("source/address").attrib == {  # type: ignore[union-attr]
        "type": "pci", "domain": "0x0000", "bus": "0x81", "slot": "0x1f", "function": "0x7"}
    assert root.find("vlan/tag").attrib == {"id": "100"}  # type: ignore[union-attr]


def test_forwarder_shape() -> None:
    root = ET.fromstring(EMITTED["vhostuser client multiqueue"])
    assert root.attrib == {"type": "vhostuser"}
    assert root.find("source").attrib == {  # type: ignore[union-attr]
        "type": "unix", "path": "/run/vf/vhu88888888-00", "mode": "client"}
    assert root.find("model").attrib == {"type": "virtio"}  # type: ignore[union-attr]
    assert root.find("driver").attrib == {"queues": "4"}  # type: ignore[union-attr]
    assert root.find("mtu").attrib == {"size": "1450"}  # type: ignore[union-attr]
    assert ET.fromstring(EMITTED["vhostuser one queue"]).find("driver") is None


def test_normal_shapes() -> None:
    eth = ET.fromstring(EMITTED["ethernet"])
    assert eth.attrib == {"type": "ethernet"}
    assert eth.find("target").attrib == {"dev": "tap88888888-00"}  # type: ignore[union-attr]
    br = ET.fromstring(EMITTED["ovs bridge"])
    assert br.find("source").attrib == {"bridge": "br-int"}  # type: ignore[union-attr]
    assert br.find("virtualport").attrib == {"type": "openvswitch"}  # type: ignore[union-attr]
    assert br.find("virtualport/parameters").attrib == {  # type: ignore[union-attr]
        "interfaceid": PORT}


def test_values_are_escaped() -> None:
    path = "/run/a'b\"c<d>&e/sock"
    text = forwarder_interface(MAC, path)
    assert "<d>" not in text and "&amp;" in text
    assert ET.fromstring(text).find("source").attrib["path"] == path  # type: ignore[union-attr]
    validate(domain_xml([text]))


def test_domain_requirements() -> None:
    forwarder = domain_requirements("forwarder")
    assert forwarder.shared_memory and forwarder.hugepages_sufficient and not forwarder.iommu
    backing = ET.fromstring(forwarder.to_xml())
    assert backing.tag == "memoryBacking"
    assert backing.find("access").attrib == {"mode": "shared"}  # type: ignore[union-attr]
    assert backing.find("source").attrib == {"type": "memfd"}  # type: ignore[union-attr]
    passthrough = domain_requirements(PlugMode.PASSTHROUGH)
    assert passthrough.iommu and not passthrough.shared_memory and passthrough.to_xml() == ""
    assert domain_requirements("normal").to_xml() == "" and not domain_requirements(
        "normal").notes
    with pytest.raises(InvalidValue, match="mode"):
        domain_requirements("hostdev")


@pytest.mark.parametrize(
    ("call", "field"),
    [
        (lambda: passthrough_interface(MAC, "0000:05:08"), "vf_address"),
        (lambda: passthrough_interface(MAC, "0000:05:20.0"), "vf_address"),
        (lambda: passthrough_interface("fa:16:3e:00:00", "0000:05:08.1"), "mac"),
        (lambda: passthrough_interface(MAC, "0000:05:08.1", vlan=4095), "vlan"),
        (lambda: forwarder_interface(MAC, "relative/sock"), "socket_path"),
        (lambda: forwarder_interface(MAC, "/run/s", mode="both"), "mode"),
        (lambda: forwarder_interface(MAC, "/run/s", queues=0), "queues"),
        (lambda: forwarder_interface(MAC, "/run/s", queues=True), "queues"),
        (lambda: forwarder_interface(MAC, "/run/s", mtu=20), "mtu"),
        (lambda: normal_interface(MAC, "tap with space"), "target_dev"),
        (lambda: normal_interface(MAC, "tap0", bridge="br-int"), "interface_id"),
        (lambda: normal_interface(MAC, "tap0", bridge="br-int", interface_id="x"), "interface_id"),
        (lambda: normal_interface(MAC, "tap0", bridge="br/int", interface_id=PORT), "bridge"),
    ],
)
def test_bad_input(call: object, field: str) -> None:
    with pytest.raises(InvalidValue) as exc:
        call()  # type: ignore[operator]
    assert exc.value.field == field


def _port(vnic: str, details: dict[str, object]) -> dict[str, object]:
    return {
        "id": PORT, "network_id": NET, "mac_address": MAC, "status": "ACTIVE",
        "binding:vnic_type": vnic, "binding:vif_type": "agilio_ovs",
        "binding:vif_details": details, "binding:profile": {},
    }


@pytest.mark.parametrize("upstream", [False, True])
def test_from_port_to_valid_domain_xml(upstream: bool) -> None:
    """The whole chain: port -> PCI request -> VF -> os-vif VIF -> libvirt XML."""
    host = mixed_host()
    network = {"provider:network_type": "vlan", "provider:physical_network": "physnet1"}
    interfaces = []
    claims: dict[str, str] = {}
    for vnic, details in [
        ("normal", {"bridge_name": "br-int"}),
        ("normal", {"ovs_hybrid_plug": True}),
        ("direct", {"bridge_name": "br-int"}),
        ("virtio-forwarder", {"vhostuser_socket": "/var/lib/vhost_sockets/vhu88888888-00"}),
    ]:
        port = _port(vnic, details)
        request = pci_request_for_port(port, network)
        vf = None
        if request is not None:
            vf = select_vf(host, claims, request)
            claims[vf.address] = f"{vnic}-port"
        vif = build_vif(port, vf=vf, upstream=upstream, delegate_create=False)
        interfaces.append(interface_for_vif(vif, queues=2))
    assert [ET.fromstring(i).attrib["type"] for i in interfaces] == [
        "bridge", "bridge", "hostdev", "vhostuser"]
    assert "0x08" in interfaces[2] and claims == {
        "0000:05:08.0": "direct-port", "0000:05:08.1": "virtio-forwarder-port"}
    validate(domain_xml(interfaces, domain_requirements("forwarder").to_xml()))


def test_interface_for_vif_with_plugin_created_port() -> None:
    vif = build_vif(_port("normal", {}), delegate_create=True)
    root = ET.fromstring(interface_for_vif(vif))
    assert root.attrib["type"] == "ethernet" and root.find("virtualport") is None
    with pytest.raises(InvalidValue, match="VIF class"):
        interface_for_vif(object())  # type: ignore[arg-type]
