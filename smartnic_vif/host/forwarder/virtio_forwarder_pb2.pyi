# ruff: noqa
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class PortControlRequest(_message.Message):
    __slots__ = ("op", "pci_addrs", "virtio_id", "conditional", "name", "mode", "vhost_path")
    class Op(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        ADD: _ClassVar[PortControlRequest.Op]
        REMOVE: _ClassVar[PortControlRequest.Op]
        ADD_SOCK: _ClassVar[PortControlRequest.Op]
        REMOVE_SOCK: _ClassVar[PortControlRequest.Op]
        QUERY_PCI: _ClassVar[PortControlRequest.Op]
    ADD: PortControlRequest.Op
    REMOVE: PortControlRequest.Op
    ADD_SOCK: PortControlRequest.Op
    REMOVE_SOCK: PortControlRequest.Op
    QUERY_PCI: PortControlRequest.Op
    class PciAddress(_message.Message):
        __slots__ = ("domain", "bus", "slot", "function")
        DOMAIN_FIELD_NUMBER: _ClassVar[int]
        BUS_FIELD_NUMBER: _ClassVar[int]
        SLOT_FIELD_NUMBER: _ClassVar[int]
        FUNCTION_FIELD_NUMBER: _ClassVar[int]
        domain: int
        bus: int
        slot: int
        function: int
        def __init__(self, domain: _Optional[int] = ..., bus: _Optional[int] = ..., slot: _Optional[int] = ..., function: _Optional[int] = ...) -> None: ...
    OP_FIELD_NUMBER: _ClassVar[int]
    PCI_ADDRS_FIELD_NUMBER: _ClassVar[int]
    VIRTIO_ID_FIELD_NUMBER: _ClassVar[int]
    CONDITIONAL_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    VHOST_PATH_FIELD_NUMBER: _ClassVar[int]
    op: PortControlRequest.Op
    pci_addrs: _containers.RepeatedCompositeFieldContainer[PortControlRequest.PciAddress]
    virtio_id: int
    conditional: bool
    name: str
    mode: int
    vhost_path: str
    def __init__(self, op: _Optional[_Union[PortControlRequest.Op, str]] = ..., pci_addrs: _Optional[_Iterable[_Union[PortControlRequest.PciAddress, _Mapping]]] = ..., virtio_id: _Optional[int] = ..., conditional: _Optional[bool] = ..., name: _Optional[str] = ..., mode: _Optional[int] = ..., vhost_path: _Optional[str] = ...) -> None: ...

class PortControlResponse(_message.Message):
    __slots__ = ("status", "error_code", "error_code_source", "query_string")
    class Status(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        ERROR: _ClassVar[PortControlResponse.Status]
        OK: _ClassVar[PortControlResponse.Status]
    ERROR: PortControlResponse.Status
    OK: PortControlResponse.Status
    STATUS_FIELD_NUMBER: _ClassVar[int]
    ERROR_CODE_FIELD_NUMBER: _ClassVar[int]
    ERROR_CODE_SOURCE_FIELD_NUMBER: _ClassVar[int]
    QUERY_STRING_FIELD_NUMBER: _ClassVar[int]
    status: PortControlResponse.Status
    error_code: int
    error_code_source: str
    query_string: str
    def __init__(self, status: _Optional[_Union[PortControlResponse.Status, str]] = ..., error_code: _Optional[int] = ..., error_code_source: _Optional[str] = ..., query_string: _Optional[str] = ...) -> None: ...

class StatsRequest(_message.Message):
    __slots__ = ("relay", "include_inactive", "delay")
    RELAY_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_INACTIVE_FIELD_NUMBER: _ClassVar[int]
    DELAY_FIELD_NUMBER: _ClassVar[int]
    relay: _containers.RepeatedScalarFieldContainer[int]
    include_inactive: bool
    delay: int
    def __init__(self, relay: _Optional[_Iterable[int]] = ..., include_inactive: _Optional[bool] = ..., delay: _Optional[int] = ...) -> None: ...

class RelayState(_message.Message):
    __slots__ = ("id", "active", "ident", "cpu", "vhost", "vf", "vf_to_vm", "vm_to_vf", "socket_id")
    class Cpu(_message.Message):
        __slots__ = ("vf_to_vm", "vm_to_vf")
        VF_TO_VM_FIELD_NUMBER: _ClassVar[int]
        VM_TO_VF_FIELD_NUMBER: _ClassVar[int]
        vf_to_vm: int
        vm_to_vf: int
        def __init__(self, vf_to_vm: _Optional[int] = ..., vm_to_vf: _Optional[int] = ...) -> None: ...
    class Vhost(_message.Message):
        __slots__ = ("vhost_socket_name",)
        VHOST_SOCKET_NAME_FIELD_NUMBER: _ClassVar[int]
        vhost_socket_name: str
        def __init__(self, vhost_socket_name: _Optional[str] = ...) -> None: ...
    class Vf(_message.Message):
        __slots__ = ("pci_addr_str",)
        PCI_ADDR_STR_FIELD_NUMBER: _ClassVar[int]
        pci_addr_str: str
        def __init__(self, pci_addr_str: _Optional[str] = ...) -> None: ...
    class Direction(_message.Message):
        __slots__ = ("active", "internal_state", "packets_received", "bytes_received", "packets_transmitted", "bytes_transmitted", "packets_dropped_queue_full", "bytes_dropped_queue_full", "packets_dropped_not_connected", "bytes_dropped_not_connected", "packet_rate_in", "byte_rate_in", "packet_rate_out", "byte_rate_out")
        ACTIVE_FIELD_NUMBER: _ClassVar[int]
        INTERNAL_STATE_FIELD_NUMBER: _ClassVar[int]
        PACKETS_RECEIVED_FIELD_NUMBER: _ClassVar[int]
        BYTES_RECEIVED_FIELD_NUMBER: _ClassVar[int]
        PACKETS_TRANSMITTED_FIELD_NUMBER: _ClassVar[int]
        BYTES_TRANSMITTED_FIELD_NUMBER: _ClassVar[int]
        PACKETS_DROPPED_QUEUE_FULL_FIELD_NUMBER: _ClassVar[int]
        BYTES_DROPPED_QUEUE_FULL_FIELD_NUMBER: _ClassVar[int]
        PACKETS_DROPPED_NOT_CONNECTED_FIELD_NUMBER: _ClassVar[int]
        BYTES_DROPPED_NOT_CONNECTED_FIELD_NUMBER: _ClassVar[int]
        PACKET_RATE_IN_FIELD_NUMBER: _ClassVar[int]
        BYTE_RATE_IN_FIELD_NUMBER: _ClassVar[int]
        PACKET_RATE_OUT_FIELD_NUMBER: _ClassVar[int]
        BYTE_RATE_OUT_FIELD_NUMBER: _ClassVar[int]
        active: bool
        internal_state: str
        packets_received: int
        bytes_received: int
        packets_transmitted: int
        bytes_transmitted: int
        packets_dropped_queue_full: int
        bytes_dropped_queue_full: int
        packets_dropped_not_connected: int
        bytes_dropped_not_connected: int
        packet_rate_in: float
        byte_rate_in: float
        packet_rate_out: float
        byte_rate_out: float
        def __init__(self, active: _Optional[bool] = ..., internal_state: _Optional[str] = ..., packets_received: _Optional[int] = ..., bytes_received: _Optional[int] = ..., packets_transmitted: _Optional[int] = ..., bytes_transmitted: _Optional[int] = ..., packets_dropped_queue_full: _Optional[int] = ..., bytes_dropped_queue_full: _Optional[int] = ..., packets_dropped_not_connected: _Optional[int] = ..., bytes_dropped_not_connected: _Optional[int] = ..., packet_rate_in: _Optional[float] = ..., byte_rate_in: _Optional[float] = ..., packet_rate_out: _Optional[float] = ..., byte_rate_out: _Optional[float] = ...) -> None: ...
    ID_FIELD_NUMBER: _ClassVar[int]
    ACTIVE_FIELD_NUMBER: _ClassVar[int]
    IDENT_FIELD_NUMBER: _ClassVar[int]
    CPU_FIELD_NUMBER: _ClassVar[int]
    VHOST_FIELD_NUMBER: _ClassVar[int]
    VF_FIELD_NUMBER: _ClassVar[int]
    VF_TO_VM_FIELD_NUMBER: _ClassVar[int]
    VM_TO_VF_FIELD_NUMBER: _ClassVar[int]
    SOCKET_ID_FIELD_NUMBER: _ClassVar[int]
    id: int
    active: bool
    ident: str
    cpu: RelayState.Cpu
    vhost: RelayState.Vhost
    vf: RelayState.Vf
    vf_to_vm: RelayState.Direction
    vm_to_vf: RelayState.Direction
    socket_id: int
    def __init__(self, id: _Optional[int] = ..., active: _Optional[bool] = ..., ident: _Optional[str] = ..., cpu: _Optional[_Union[RelayState.Cpu, _Mapping]] = ..., vhost: _Optional[_Union[RelayState.Vhost, _Mapping]] = ..., vf: _Optional[_Union[RelayState.Vf, _Mapping]] = ..., vf_to_vm: _Optional[_Union[RelayState.Direction, _Mapping]] = ..., vm_to_vf: _Optional[_Union[RelayState.Direction, _Mapping]] = ..., socket_id: _Optional[int] = ...) -> None: ...

class StatsResponse(_message.Message):
    __slots__ = ("status", "relay")
    class Status(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        OK: _ClassVar[StatsResponse.Status]
        EBADR: _ClassVar[StatsResponse.Status]
        E2BIG: _ClassVar[StatsResponse.Status]
        ENOMEM: _ClassVar[StatsResponse.Status]
    OK: StatsResponse.Status
    EBADR: StatsResponse.Status
    E2BIG: StatsResponse.Status
    ENOMEM: StatsResponse.Status
    STATUS_FIELD_NUMBER: _ClassVar[int]
    RELAY_FIELD_NUMBER: _ClassVar[int]
    status: StatsResponse.Status
    relay: _containers.RepeatedCompositeFieldContainer[RelayState]
    def __init__(self, status: _Optional[_Union[StatsResponse.Status, str]] = ..., relay: _Optional[_Iterable[_Union[RelayState, _Mapping]]] = ...) -> None: ...
