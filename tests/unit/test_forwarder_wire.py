"""Wire compatibility of our virtio-forwarder schema with the daemon's.

The daemon only sees bytes, so these tests build messages byte by byte from the
field numbers, wire types and defaults of the protocol description and check
that our generated classes encode and decode exactly those bytes. A renumbered
field or a changed type or default fails here, not against a real daemon.
"""

from __future__ import annotations

import errno
import struct

import pytest
from google.protobuf.descriptor import FieldDescriptor as F
from google.protobuf.message import Message

from smartnic_vif.host.forwarder import virtio_forwarder_pb2 as pb
from smartnic_vif.host.forwarder.client import (
    MAX_VHOST_PATH_BYTES,
    ForwarderError,
    ForwarderTimeout,
    RelayStats,
    vhost_socket_path,
)
from smartnic_vif.model.errors import HostOperationError, InvalidValue
from smartnic_vif.model.types import PciAddress

VARINT, FIXED64, LEN, FIXED32 = 0, 1, 2, 5


def varint(value: int) -> bytes:
    # Negative int32/int64 values go on the wire as 10-byte two's complement.
    if value < 0:
        value += 1 << 64
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def key(field: int, wire_type: int) -> bytes:
    return varint(field << 3 | wire_type)


def field_varint(field: int, value: int) -> bytes:
    return key(field, VARINT) + varint(value)


def field_bytes(field: int, value: bytes | str) -> bytes:
    data = value.encode() if isinstance(value, str) else value
    return key(field, LEN) + varint(len(data)) + data


def field_float(field: int, value: float) -> bytes:
    return key(field, FIXED32) + struct.pack("<f", value)


def pci_bytes(domain: int, bus: int, slot: int, function: int) -> bytes:
    return (
        field_varint(1, domain)
        + field_varint(2, bus)
        + field_varint(3, slot)
        + field_varint(4, function)
    )


# -- schema table ---------------------------------------------------------------

EXPECTED_FIELDS = {
    "virtioforwarder.PortControlRequest": {
        "op": (1, F.TYPE_ENUM, "required"),
        "pci_addrs": (2, F.TYPE_MESSAGE, "repeated"),
        "virtio_id": (3, F.TYPE_UINT32, "optional"),
        "conditional": (4, F.TYPE_BOOL, "optional"),
        "name": (5, F.TYPE_STRING, "optional"),
        "mode": (6, F.TYPE_UINT32, "optional"),
        "vhost_path": (7, F.TYPE_STRING, "optional"),
    },
    "virtioforwarder.PortControlRequest.PciAddress": {
        "domain": (1, F.TYPE_UINT32, "required"),
        "bus": (2, F.TYPE_UINT32, "required"),
        "slot": (3, F.TYPE_UINT32, "required"),
        "function": (4, F.TYPE_UINT32, "required"),
    },
    "virtioforwarder.PortControlResponse": {
        "status": (4, F.TYPE_ENUM, "required"),
        "error_code": (5, F.TYPE_INT32, "optional"),
        "error_code_source": (6, F.TYPE_STRING, "optional"),
        "query_string": (7, F.TYPE_STRING, "optional"),
    },
    "virtioforwarder.StatsRequest": {
        "relay": (1, F.TYPE_UINT32, "repeated"),
        "include_inactive": (2, F.TYPE_BOOL, "optional"),
        "delay": (3, F.TYPE_UINT32, "optional"),
    },
    "virtioforwarder.StatsResponse": {
        "status": (1, F.TYPE_ENUM, "optional"),
        "relay": (2, F.TYPE_MESSAGE, "repeated"),
    },
    "virtioforwarder.RelayState": {
        "id": (1, F.TYPE_UINT32, "optional"),
        "active": (2, F.TYPE_BOOL, "optional"),
        "ident": (3, F.TYPE_STRING, "optional"),
        "cpu": (4, F.TYPE_MESSAGE, "optional"),
        "vhost": (5, F.TYPE_MESSAGE, "optional"),
        "vf": (6, F.TYPE_MESSAGE, "optional"),
        "vf_to_vm": (7, F.TYPE_MESSAGE, "optional"),
        "vm_to_vf": (8, F.TYPE_MESSAGE, "optional"),
        "socket_id": (9, F.TYPE_UINT32, "optional"),
    },
    "virtioforwarder.RelayState.Cpu": {
        "vf_to_vm": (1, F.TYPE_INT32, "optional"),
        "vm_to_vf": (2, F.TYPE_INT32, "optional"),
    },
    "virtioforwarder.RelayState.Vhost": {"vhost_socket_name": (1, F.TYPE_STRING, "optional")},
    "virtioforwarder.RelayState.Vf": {"pci_addr_str": (1, F.TYPE_STRING, "optional")},
    "virtioforwarder.RelayState.Direction": {
        "active": (1, F.TYPE_BOOL, "optional"),
        "internal_state": (2, F.TYPE_STRING, "optional"),
        "packets_received": (3, F.TYPE_UINT64, "optional"),
        "bytes_received": (4, F.TYPE_UINT64, "optional"),
        "packets_transmitted": (5, F.TYPE_UINT64, "optional"),
        "bytes_transmitted": (6, F.TYPE_UINT64, "optional"),
        "packets_dropped_queue_full": (7, F.TYPE_UINT64, "optional"),
        "bytes_dropped_queue_full": (8, F.TYPE_UINT64, "optional"),
        "packets_dropped_not_connected": (9, F.TYPE_UINT64, "optional"),
        "bytes_dropped_not_connected": (10, F.TYPE_UINT64, "optional"),
        "packet_rate_in": (11, F.TYPE_FLOAT, "optional"),
        "byte_rate_in": (12, F.TYPE_FLOAT, "optional"),
        "packet_rate_out": (13, F.TYPE_FLOAT, "optional"),
        "byte_rate_out": (14, F.TYPE_FLOAT, "optional"),
    },
}

MESSAGES: dict[str, type[Message]] = {
    "virtioforwarder.PortControlRequest": pb.PortControlRequest,
    "virtioforwarder.PortControlRequest.PciAddress": pb.PortControlRequest.PciAddress,
    "virtioforwarder.PortControlResponse": pb.PortControlResponse,
    "virtioforwarder.StatsRequest": pb.StatsRequest,
    "virtioforwarder.StatsResponse": pb.StatsResponse,
    "virtioforwarder.RelayState": pb.RelayState,
    "virtioforwarder.RelayState.Cpu": pb.RelayState.Cpu,
    "virtioforwarder.RelayState.Vhost": pb.RelayState.Vhost,
    "virtioforwarder.RelayState.Vf": pb.RelayState.Vf,
    "virtioforwarder.RelayState.Direction": pb.RelayState.Direction,
}


def _label(field: F) -> str:
    if field.is_repeated:
        return "repeated"
    return "required" if field.is_required else "optional"


@pytest.mark.parametrize("full_name", sorted(EXPECTED_FIELDS))
def test_schema_fields_match_the_protocol(full_name: str) -> None:
    descriptor = MESSAGES[full_name].DESCRIPTOR
    assert descriptor.full_name == full_name
    actual = {f.name: (f.number, f.type, _label(f)) for f in descriptor.fields}
    assert actual == EXPECTED_FIELDS[full_name]


def test_schema_is_proto2_in_package_virtioforwarder() -> None:
    assert pb.DESCRIPTOR.package == "virtioforwarder"
    # proto2 is what gives `conditional` its non-zero default and presence.
    assert pb.PortControlRequest.DESCRIPTOR.fields_by_name["conditional"].has_presence


def test_enum_values_match_the_protocol() -> None:
    assert dict(pb.PortControlRequest.Op.items()) == {
        "ADD": 0,
        "REMOVE": 1,
        "ADD_SOCK": 2,
        "REMOVE_SOCK": 3,
        "QUERY_PCI": 4,
    }
    assert dict(pb.PortControlResponse.Status.items()) == {"ERROR": 0, "OK": 1}
    assert dict(pb.StatsResponse.Status.items()) == {
        "OK": 0,
        "EBADR": 400,
        "E2BIG": 413,
        "ENOMEM": 500,
    }


def test_defaults_match_the_protocol() -> None:
    req = pb.PortControlRequest()
    assert req.conditional is True and not req.HasField("conditional")
    stats = pb.StatsRequest()
    assert stats.include_inactive is True and not stats.HasField("include_inactive")
    assert stats.delay == 0
    assert pb.StatsRequest.DESCRIPTOR.fields_by_name["relay"].GetOptions().packed


# -- PortControlRequest ------------------------------------------------------------


def test_add_sock_request_encodes_to_the_expected_bytes() -> None:
    path = "/var/lib/vhost/vhu-1234"
    req = pb.PortControlRequest(
        op=pb.PortControlRequest.ADD_SOCK,
        pci_addrs=[pb.PortControlRequest.PciAddress(domain=0, bus=0x05, slot=0x08, function=1)],
        conditional=True,
        vhost_path=path,
    )
    expected = (
        bytes([0x08, 0x02])  # field 1 varint: op = ADD_SOCK
        + bytes([0x12, 0x08, 0x08, 0x00, 0x10, 0x05, 0x18, 0x08, 0x20, 0x01])  # pci_addrs
        + bytes([0x20, 0x01])  # field 4 varint: conditional = true
        + bytes([0x3A, len(path)]) + path.encode()  # field 7 length-delimited
    )
    assert req.SerializeToString() == expected


def test_hand_encoded_request_decodes_every_field() -> None:
    raw = (
        field_varint(1, 0)  # ADD
        + field_bytes(2, pci_bytes(0x1234, 0xAB, 0x1F, 7))
        + field_bytes(2, pci_bytes(0, 0x81, 0x00, 2))
        + field_varint(3, 42)
        + field_varint(4, 0)
        + field_bytes(5, "bond0")
        + field_varint(6, 1)
        + field_bytes(7, "/run/vhu/sock")
    )
    req = pb.PortControlRequest()
    req.ParseFromString(raw)
    assert req.IsInitialized()
    assert req.op == pb.PortControlRequest.ADD
    assert [(a.domain, a.bus, a.slot, a.function) for a in req.pci_addrs] == [
        (0x1234, 0xAB, 0x1F, 7),
        (0, 0x81, 0, 2),
    ]
    assert req.virtio_id == 42
    assert req.HasField("conditional") and req.conditional is False
    assert req.name == "bond0"
    assert req.mode == 1
    assert req.vhost_path == "/run/vhu/sock"


def test_conditional_absent_on_the_wire_means_true() -> None:
    req = pb.PortControlRequest()
    req.ParseFromString(field_varint(1, 3) + field_bytes(7, "/x"))
    assert req.op == pb.PortControlRequest.REMOVE_SOCK
    assert req.conditional is True


# -- PortControlResponse -----------------------------------------------------------


def test_error_response_status_is_field_4() -> None:
    source = "virtio_add_sock_dev_pair()"
    raw = (
        bytes([0x20, 0x00])  # key (4 << 3 | 0) = 0x20: status = ERROR
        + bytes([0x28]) + varint(-errno.EEXIST)  # field 5 int32, negative
        + bytes([0x32, len(source)]) + source.encode()  # field 6
    )
    resp = pb.PortControlResponse()
    resp.ParseFromString(raw)
    assert resp.IsInitialized()
    assert resp.status == pb.PortControlResponse.ERROR
    assert resp.error_code == -errno.EEXIST
    assert resp.error_code_source == source
    assert not resp.HasField("query_string")
    # And back: our encoder produces the same bytes.
    assert resp.SerializeToString() == raw


def test_query_response_encodes_to_the_expected_bytes() -> None:
    resp = pb.PortControlResponse(status=pb.PortControlResponse.OK, query_string="0000:05:08.1")
    assert resp.SerializeToString() == bytes([0x20, 0x01, 0x3A, 12]) + b"0000:05:08.1"


def test_response_without_status_is_not_initialized() -> None:
    # A message with status at field 1 (an easy mistake) leaves field 4 unset.
    resp = pb.PortControlResponse()
    resp.ParseFromString(bytes([0x08, 0x01]))
    assert not resp.HasField("status")
    assert not resp.IsInitialized()


# -- stats -------------------------------------------------------------------------


def test_stats_request_relays_are_packed() -> None:
    req = pb.StatsRequest(relay=[1, 300], include_inactive=False, delay=250)
    assert req.SerializeToString() == (
        bytes([0x0A, 0x03, 0x01, 0xAC, 0x02])  # field 1, LEN, packed varints 1 and 300
        + bytes([0x10, 0x00])  # include_inactive = false
        + bytes([0x18, 0xFA, 0x01])  # delay = 250
    )


def test_stats_request_accepts_unpacked_relays_too() -> None:
    # Parsers must accept both encodings of a repeated scalar.
    req = pb.StatsRequest()
    req.ParseFromString(field_varint(1, 4) + field_varint(1, 9))
    assert list(req.relay) == [4, 9]


def _direction_bytes(base: int) -> bytes:
    out = field_varint(1, 1) + field_bytes(2, "running")
    for number in range(3, 11):
        out += field_varint(number, base + number)
    for number, rate in zip(range(11, 15), (1.5, 2.5, 3.5, 4.5), strict=True):
        out += field_float(number, rate)
    return out


def test_hand_encoded_stats_response_decodes_into_relay_stats() -> None:
    relay = (
        field_varint(1, 7)
        + field_varint(2, 1)
        + field_bytes(3, "relay7")
        + field_bytes(4, field_varint(1, 3) + field_varint(2, -1))
        + field_bytes(5, field_bytes(1, "/run/vhu/a"))
        + field_bytes(6, field_bytes(1, "0000:05:08.1"))
        + field_bytes(7, _direction_bytes(100))
        + field_bytes(8, _direction_bytes(200))
        + field_varint(9, 1)
    )
    raw = field_varint(1, 0) + field_bytes(2, relay)
    resp = pb.StatsResponse()
    resp.ParseFromString(raw)
    assert resp.status == pb.StatsResponse.OK
    assert len(resp.relay) == 1

    stats = RelayStats.from_message(resp.relay[0])
    assert stats.relay_id == 7
    assert stats.active is True
    assert stats.ident == "relay7"
    assert stats.vhost_path == "/run/vhu/a"
    assert stats.pci == PciAddress(0, 5, 8, 1)
    assert stats.vf_ident == "0000:05:08.1"
    assert stats.socket_id == 1
    assert (stats.cpu_vf_to_vm, stats.cpu_vm_to_vf) == (3, -1)
    vf_to_vm = stats.vf_to_vm
    assert vf_to_vm.active is True and vf_to_vm.internal_state == "running"
    assert (vf_to_vm.packets_received, vf_to_vm.bytes_received) == (103, 104)
    assert (vf_to_vm.packets_transmitted, vf_to_vm.bytes_transmitted) == (105, 106)
    assert (vf_to_vm.packets_dropped_queue_full, vf_to_vm.bytes_dropped_queue_full) == (107, 108)
    assert (vf_to_vm.packets_dropped_not_connected, vf_to_vm.bytes_dropped_not_connected) == (
        109,
        110,
    )
    assert (vf_to_vm.packet_rate_in, vf_to_vm.byte_rate_in) == (1.5, 2.5)
    assert (vf_to_vm.packet_rate_out, vf_to_vm.byte_rate_out) == (3.5, 4.5)
    assert stats.vm_to_vf.packets_received == 203


def test_stats_error_status_decodes() -> None:
    resp = pb.StatsResponse()
    resp.ParseFromString(field_varint(1, 413))
    assert resp.status == pb.StatsResponse.E2BIG


def test_relay_stats_of_a_bond_has_no_pci() -> None:
    msg = pb.RelayState(id=1, vf=pb.RelayState.Vf(pci_addr_str="bond0"))
    stats = RelayStats.from_message(msg)
    assert stats.pci is None and stats.vf_ident == "bond0"
    assert stats.vhost_path is None and stats.cpu_vf_to_vm is None


# -- client-side values ------------------------------------------------------------


def test_vhost_socket_path_limits() -> None:
    longest = "/" + "a" * (MAX_VHOST_PATH_BYTES - 1)
    assert vhost_socket_path(longest) == longest
    for bad in ("relative/sock", "", "/with\0nul", longest + "b", None, b"/bytes"):
        with pytest.raises(InvalidValue) as info:
            vhost_socket_path(bad)
        assert info.value.field == "vhost_path"
    # The limit is in bytes, not characters.
    with pytest.raises(InvalidValue):
        vhost_socket_path("/" + "é" * 60)


def test_forwarder_errors_carry_code_and_source() -> None:
    err = ForwarderError("ADD_SOCK", -errno.EEXIST, "virtio_add_sock_dev_pair()")
    assert isinstance(err, HostOperationError)
    assert err.error_code == -errno.EEXIST
    assert err.error_code_source == "virtio_add_sock_dev_pair()"
    assert "error code -17" in str(err) and "virtio_add_sock_dev_pair()" in str(err)
    bare = ForwarderError("QUERY_PCI", None, None)
    assert bare.error_code is None and "QUERY_PCI" in str(bare)
    assert issubclass(ForwarderTimeout, HostOperationError)


@pytest.mark.parametrize("code", [-17, -1, 1, 2, 3, 4])
def test_forwarder_error_codes_are_not_named_as_errno(code: int) -> None:
    """The daemon's codes are step numbers of the function that failed (3 from
    virtio_add_sock_dev_pair() is "the VF cannot be attached", not ESRCH):
    the message gives the number and the source as they are."""
    err = ForwarderError("ADD_SOCK", code, "virtio_add_sock_dev_pair()")
    text = str(err)
    assert f"error code {code}" in text and "virtio_add_sock_dev_pair()" in text
    names = {name for name in errno.errorcode.values()}
    assert not names & set(text.replace("(", " ").replace(")", " ").split()), text


def test_relay_stats_of_an_unused_slot_is_not_in_use() -> None:
    # What the daemon says of an empty slot (see "Stats" in the protocol notes).
    msg = pb.RelayState(
        id=5,
        active=False,
        vhost=pb.RelayState.Vhost(vhost_socket_name="NONE"),
        vf_to_vm=pb.RelayState.Direction(active=False, internal_state="DPDK_UNINIT"),
        vm_to_vf=pb.RelayState.Direction(active=False, internal_state="VIRTIO_UNINIT"),
        socket_id=0,
    )
    stats = RelayStats.from_message(msg)
    assert stats.vhost_path is None and stats.vf_ident is None
    assert stats.in_use is False


def test_relay_stats_in_use_by_what_it_holds() -> None:
    vf_only = pb.RelayState(
        id=0,
        vhost=pb.RelayState.Vhost(vhost_socket_name="NONE"),
        vf=pb.RelayState.Vf(pci_addr_str="0000:05:08.1"),
    )
    vhost_only = pb.RelayState(id=1, vhost=pb.RelayState.Vhost(vhost_socket_name="/run/vhu/b"))
    assert RelayStats.from_message(vf_only).in_use is True
    assert RelayStats.from_message(vf_only).vhost_path is None
    assert RelayStats.from_message(vhost_only).in_use is True
    assert RelayStats.from_message(vhost_only).vhost_path == "/run/vhu/b"
