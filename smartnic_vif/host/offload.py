"""Read whether hardware offload can happen: netdev features and eswitch mode.

Two reads, neither needing the privileged helper nor running a program:

- a netdev's features (``hw-tc-offload`` above all) through ethtool's generic
  netlink family, as ``ethtool -k`` reads them: the feature names once
  (``ETHTOOL_MSG_STRSET_GET``, the ``ETH_SS_FEATURES`` string set, which is
  the same for every netdev), then per netdev ``ETHTOOL_MSG_FEATURES_GET``
  with compact bitsets, a few words of bits each (verbose bitsets name every
  bit of every set in every reply: decoding them for 64 representors cost
  doctor ~30 ms);
- a PF's eswitch mode through devlink's generic netlink family,
  ``DEVLINK_CMD_ESWITCH_GET`` on ``pci/<PF>`` (the kernel asks for
  ``CAP_NET_ADMIN``: doctor runs as root).

pyroute2 has no FEATURES_GET, and importing its netlink package costs about
0.1 s, more than a read command may spend: the few fixed messages are framed
here with ``struct``, sent on :mod:`smartnic_vif.host.rtnl`'s netlink socket,
and the answers walked by :func:`attributes`. The decoders are pure
functions of the reply's bytes.

Backends, chosen by ``kernel_backend`` as for :mod:`smartnic_vif.host.kernel`:

- :class:`LinuxOffload` reads the kernel;
- :class:`SimulatedOffload` serves the simulated host, whose representors are
  veths (``hw-tc-offload: off [fixed]``) and whose PFs have no devlink: it
  reads the representor's features from the kernel like a real host, then
  reports ``hw-tc-offload`` and the eswitch modes from the simulator's
  ``smartnic-sim/offload.json`` (what ``sim create`` and ``sim set-offload``
  write: a SmartNIC's representors offload, its PFs are in switchdev mode).
"""

from __future__ import annotations

import errno
import json
import os
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Protocol

from smartnic_vif.host.rtnl import NLM_F_ACK, NLM_F_REQUEST, NetlinkSocket
from smartnic_vif.model.errors import HostOperationError

NETLINK_GENERIC = 16
NLA_F_NESTED = 0x8000
NLA_TYPE_MASK = 0x3FFF
GENL_ID_CTRL = 0x10
CTRL_CMD_GETFAMILY, CTRL_ATTR_FAMILY_ID, CTRL_ATTR_FAMILY_NAME = 3, 1, 2
# ethtool netlink (include/uapi/linux/ethtool_netlink.h)
ETHTOOL_GENL_NAME, ETHTOOL_GENL_VERSION = "ethtool", 1
ETHTOOL_MSG_STRSET_GET, ETHTOOL_MSG_FEATURES_GET = 1, 11
ETHTOOL_A_HEADER_DEV_NAME, ETHTOOL_A_HEADER_FLAGS = 2, 3
ETHTOOL_FLAG_COMPACT_BITSETS = 1 << 0
ETHTOOL_A_STRSET_HEADER, ETHTOOL_A_STRSET_STRINGSETS = 1, 2
ETHTOOL_A_STRINGSETS_STRINGSET = 1
ETHTOOL_A_STRINGSET_ID, ETHTOOL_A_STRINGSET_STRINGS = 1, 3
ETHTOOL_A_STRINGS_STRING = 1
ETHTOOL_A_STRING_INDEX, ETHTOOL_A_STRING_VALUE = 1, 2
ETH_SS_FEATURES = 4
ETHTOOL_A_FEATURES_HEADER, ETHTOOL_A_FEATURES_HW = 1, 2
ETHTOOL_A_FEATURES_WANTED, ETHTOOL_A_FEATURES_ACTIVE, ETHTOOL_A_FEATURES_NOCHANGE = 3, 4, 5
ETHTOOL_A_BITSET_VALUE = 4
# devlink (include/uapi/linux/devlink.h)
DEVLINK_GENL_NAME, DEVLINK_GENL_VERSION = "devlink", 1
DEVLINK_CMD_ESWITCH_GET = 29
DEVLINK_ATTR_BUS_NAME, DEVLINK_ATTR_DEV_NAME, DEVLINK_ATTR_ESWITCH_MODE = 1, 2, 25
ESWITCH_MODES = {0: "legacy", 1: "switchdev"}

HW_TC_OFFLOAD = "hw-tc-offload"
SIM_OFFLOAD_FILE = os.path.join("smartnic-sim", "offload.json")

_NLMSGHDR = struct.Struct("=IHHII")  # length, type, flags, sequence, port id
_GENLMSGHDR = struct.Struct("=BBH")  # cmd, version, reserved
_NLATTR = struct.Struct("=HH")  # length, type
_U16 = struct.Struct("=H")
_U32 = struct.Struct("=I")


class OffloadReadError(Exception):
    """A read that could not be made; the message says what and why."""

    def __init__(self, message: str, code: int = 0) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class FeatureState:
    """One netdev feature as ``ethtool -k`` shows it: ``active`` is on/off,
    ``fixed`` means the driver does not let it change, ``requested`` is what
    was asked for (it differs from ``active`` when the driver refused)."""

    active: bool
    fixed: bool
    requested: bool

    def describe(self) -> str:
        text = "on" if self.active else "off"
        if self.fixed:
            text += " [fixed]"
        elif self.requested != self.active:
            text += f" [requested {'on' if self.requested else 'off'}]"
        return text


# -- netlink framing and walking ------------------------------------------------------
def _attr(kind: int, payload: bytes) -> bytes:
    raw = _NLATTR.pack(_NLATTR.size + len(payload), kind) + payload
    return raw + b"\0" * (-len(raw) % 4)


def _string(kind: int, value: str) -> bytes:
    return _attr(kind, value.encode() + b"\0")


def attributes(data: bytes, offset: int = 0, end: int | None = None) -> Iterator[tuple[int, bytes]]:
    """(type without flags, payload) of each netlink attribute in
    ``data[offset:end]``; a truncated attribute ends the walk."""
    end = len(data) if end is None else end
    while offset + _NLATTR.size <= end:
        length, kind = _NLATTR.unpack_from(data, offset)
        if length < _NLATTR.size or offset + length > end:
            return
        yield kind & NLA_TYPE_MASK, data[offset + _NLATTR.size:offset + length]
        offset += (length + 3) & ~3


def genl_payload(message: bytes) -> bytes:
    """The attributes of one generic netlink message (after both headers)."""
    return message[_NLMSGHDR.size + _GENLMSGHDR.size:]


def _genl_request(family: int, cmd: int, version: int, attrs: bytes, seq: int) -> bytes:
    body = _GENLMSGHDR.pack(cmd, version, 0) + attrs
    return _NLMSGHDR.pack(_NLMSGHDR.size + len(body), family, NLM_F_REQUEST | NLM_F_ACK,
                          seq, 0) + body


class GenericNetlink(NetlinkSocket):
    """One NETLINK_GENERIC socket; requests on it are serialised, family ids
    are resolved once."""

    def __init__(self) -> None:
        super().__init__(NETLINK_GENERIC)
        self._families: dict[str, int] = {}

    def __enter__(self) -> GenericNetlink:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def request(self, family: int, cmd: int, version: int, attrs: bytes) -> list[bytes]:
        """The answers (raw messages) to one request; a kernel error raises
        :class:`OffloadReadError` with its errno as ``code``."""
        try:
            answers, code = self._exchange(_genl_request(family, cmd, version, attrs, 0))
        except HostOperationError as e:  # no answer in time
            raise OffloadReadError(str(e)) from None
        if code:
            raise OffloadReadError(os.strerror(code), code)
        return answers

    def family(self, name: str) -> int:
        """The id of generic netlink family ``name``."""
        if name not in self._families:
            try:
                answers = self.request(GENL_ID_CTRL, CTRL_CMD_GETFAMILY, 1,
                                       _string(CTRL_ATTR_FAMILY_NAME, name))
            except OffloadReadError as e:
                if e.code == errno.ENOENT:
                    raise OffloadReadError(
                        f"this kernel has no {name} netlink interface", e.code) from None
                raise
            ids = [_U16.unpack_from(v)[0] for a in answers
                   for k, v in attributes(genl_payload(a)) if k == CTRL_ATTR_FAMILY_ID]
            if not ids:
                raise OffloadReadError(f"the kernel gave no id for netlink family {name}")
            self._families[name] = ids[0]
        return self._families[name]


# -- decoding (pure) --------------------------------------------------------------------
def string_set_from_reply(message: bytes) -> list[str]:
    """The strings of the one string set an ETHTOOL_MSG_STRSET_GET reply
    carries, by index ("" for an index the kernel leaves unnamed)."""
    by_index: dict[int, str] = {}
    for kind, sets in attributes(genl_payload(message)):
        if kind != ETHTOOL_A_STRSET_STRINGSETS:
            continue
        for skind, string_set in attributes(sets):
            if skind != ETHTOOL_A_STRINGSETS_STRINGSET:
                continue
            for ikind, strings in attributes(string_set):
                if ikind != ETHTOOL_A_STRINGSET_STRINGS:
                    continue
                for tkind, string in attributes(strings):
                    if tkind != ETHTOOL_A_STRINGS_STRING:
                        continue
                    fields = dict(attributes(string))
                    if ETHTOOL_A_STRING_INDEX in fields:
                        index = _U32.unpack_from(fields[ETHTOOL_A_STRING_INDEX])[0]
                        value = fields.get(ETHTOOL_A_STRING_VALUE, b"")
                        by_index[index] = value.split(b"\0", 1)[0].decode(errors="replace")
    if not by_index:
        raise OffloadReadError("the kernel's string set reply names no string")
    return [by_index.get(i, "") for i in range(max(by_index) + 1)]


def compact_bits(payload: bytes) -> int:
    """A compact ethtool bitset's value as one integer (bit i: feature i).
    The kernel writes it as 32-bit words in host order; the features sets
    have no mask (every bit is given)."""
    for kind, value in attributes(payload):
        if kind == ETHTOOL_A_BITSET_VALUE:
            words = struct.unpack(f"={len(value) // 4}I", value[:len(value) // 4 * 4])
            return sum(word << (32 * i) for i, word in enumerate(words))
    raise OffloadReadError("a compact bitset in the kernel's reply has no value")


@dataclass(frozen=True)
class FeatureSets:
    """The four feature sets of an ETHTOOL_MSG_FEATURES_GET reply, each as
    one integer (bit i: the feature named i in ``ETH_SS_FEATURES``): ``hw``
    the features the driver lets change, ``wanted`` what was asked for,
    ``active`` what is on, ``nochange`` what cannot change now."""

    hw: int
    wanted: int
    active: int
    nochange: int

    def state(self, bit: int) -> FeatureState:
        """A feature is fixed when it is not changeable or cannot change
        (ethtool's ``[fixed]``)."""
        def on(bits: int) -> bool:
            return bool((bits >> bit) & 1)

        return FeatureState(active=on(self.active), fixed=not on(self.hw) or on(self.nochange),
                            requested=on(self.wanted))

    def named(self, names: list[str]) -> dict[str, FeatureState]:
        """Every feature by name; ``names``: the ``ETH_SS_FEATURES`` strings,
        by bit (the kernel leaves some bits unnamed)."""
        return {name: self.state(bit) for bit, name in enumerate(names) if name}


def feature_sets_from_reply(message: bytes) -> FeatureSets:
    """The sets of an ETHTOOL_MSG_FEATURES_GET reply with compact bitsets;
    a set the reply leaves out has no bit set."""
    sets: dict[int, int] = {}
    for kind, value in attributes(genl_payload(message)):
        if kind in (ETHTOOL_A_FEATURES_HW, ETHTOOL_A_FEATURES_WANTED,
                    ETHTOOL_A_FEATURES_ACTIVE, ETHTOOL_A_FEATURES_NOCHANGE):
            sets[kind] = compact_bits(value)
    if ETHTOOL_A_FEATURES_ACTIVE not in sets:
        raise OffloadReadError("the kernel's features reply has no active set")
    return FeatureSets(hw=sets.get(ETHTOOL_A_FEATURES_HW, 0),
                       wanted=sets.get(ETHTOOL_A_FEATURES_WANTED, 0),
                       active=sets[ETHTOOL_A_FEATURES_ACTIVE],
                       nochange=sets.get(ETHTOOL_A_FEATURES_NOCHANGE, 0))


OFF_FIXED = FeatureState(active=False, fixed=True, requested=False)


def feature(features: dict[str, FeatureState], name: str) -> FeatureState:
    """Feature ``name`` of a decoded reply: one the reply does not list is
    set nowhere, so it is off and the driver cannot turn it on."""
    return features.get(name, OFF_FIXED)


def eswitch_mode_from_reply(message: bytes) -> str:
    """``legacy``, ``switchdev`` (or ``mode N``) from a DEVLINK_CMD_ESWITCH_GET reply."""
    for kind, value in attributes(genl_payload(message)):
        if kind == DEVLINK_ATTR_ESWITCH_MODE:
            mode = _U16.unpack_from(value)[0]
            return ESWITCH_MODES.get(mode, f"mode {mode}")
    raise OffloadReadError("the kernel's eswitch reply has no mode")


# -- reading the kernel ---------------------------------------------------------------------
def read_feature_names(nl: GenericNetlink) -> list[str]:
    """The kernel's netdev feature names, by bit (``ETH_SS_FEATURES``)."""
    string_set = _attr(ETHTOOL_A_STRINGSETS_STRINGSET | NLA_F_NESTED,
                       _attr(ETHTOOL_A_STRINGSET_ID, _U32.pack(ETH_SS_FEATURES)))
    attrs = (_attr(ETHTOOL_A_STRSET_HEADER | NLA_F_NESTED, b"")
             + _attr(ETHTOOL_A_STRSET_STRINGSETS | NLA_F_NESTED, string_set))
    try:
        answers = nl.request(nl.family(ETHTOOL_GENL_NAME), ETHTOOL_MSG_STRSET_GET,
                             ETHTOOL_GENL_VERSION, attrs)
    except OffloadReadError as e:
        raise OffloadReadError(f"netdev feature names: {e}", e.code) from None
    if not answers:
        raise OffloadReadError("netdev feature names: the kernel sent no reply")
    return string_set_from_reply(answers[0])


def read_feature_sets(nl: GenericNetlink, ifname: str) -> FeatureSets:
    """The feature sets of netdev ``ifname`` in this network namespace."""
    header = _attr(ETHTOOL_A_FEATURES_HEADER | NLA_F_NESTED,
                   _string(ETHTOOL_A_HEADER_DEV_NAME, ifname)
                   + _attr(ETHTOOL_A_HEADER_FLAGS, _U32.pack(ETHTOOL_FLAG_COMPACT_BITSETS)))
    try:
        answers = nl.request(nl.family(ETHTOOL_GENL_NAME), ETHTOOL_MSG_FEATURES_GET,
                             ETHTOOL_GENL_VERSION, header)
    except OffloadReadError as e:
        if e.code == errno.ENODEV:
            raise OffloadReadError(f"netdev {ifname} does not exist", e.code) from None
        raise OffloadReadError(f"features of {ifname}: {e}", e.code) from None
    if not answers:
        raise OffloadReadError(f"features of {ifname}: the kernel sent no reply")
    return feature_sets_from_reply(answers[0])


def read_features(nl: GenericNetlink, ifname: str) -> dict[str, FeatureState]:
    """Every named feature of netdev ``ifname`` (what ``ethtool -k`` lists)."""
    return read_feature_sets(nl, ifname).named(read_feature_names(nl))


def read_eswitch_mode(nl: GenericNetlink, pf_address: str) -> str:
    """The devlink eswitch mode of PCI device ``pf_address``."""
    attrs = _string(DEVLINK_ATTR_BUS_NAME, "pci") + _string(DEVLINK_ATTR_DEV_NAME, pf_address)
    try:
        answers = nl.request(nl.family(DEVLINK_GENL_NAME), DEVLINK_CMD_ESWITCH_GET,
                             DEVLINK_GENL_VERSION, attrs)
    except OffloadReadError as e:
        why = {errno.ENODEV: "no devlink device",
               errno.EPERM: "reading the eswitch mode needs CAP_NET_ADMIN (run as root)",
               errno.EOPNOTSUPP: "its driver has no eswitch"}.get(e.code, str(e))
        raise OffloadReadError(f"devlink pci/{pf_address}: {why}", e.code) from None
    if not answers:
        raise OffloadReadError(f"devlink pci/{pf_address}: the kernel sent no reply")
    return eswitch_mode_from_reply(answers[0])


class OffloadReader(Protocol):
    def hw_tc_offload(self, ifname: str, vf_address: str) -> FeatureState: ...

    def eswitch_mode(self, pf_address: str) -> str: ...

    def close(self) -> None: ...


class LinuxOffload:
    """The kernel's answers (``vf_address`` is not needed: the representor's
    own features say it)."""

    def __init__(self) -> None:
        self._nl: GenericNetlink | None = None
        self._feature_names: list[str] | None = None

    @property
    def nl(self) -> GenericNetlink:
        if self._nl is None:
            self._nl = GenericNetlink()
        return self._nl

    def feature(self, ifname: str, name: str) -> FeatureState:
        """Feature ``name`` of netdev ``ifname``; one this kernel does not
        have is off and fixed."""
        # The feature names are the kernel's, the same for every netdev:
        # read once per reader (one doctor run).
        if self._feature_names is None:
            self._feature_names = read_feature_names(self.nl)
        sets = read_feature_sets(self.nl, ifname)
        if name not in self._feature_names:
            return OFF_FIXED
        return sets.state(self._feature_names.index(name))

    def hw_tc_offload(self, ifname: str, vf_address: str) -> FeatureState:
        return self.feature(ifname, HW_TC_OFFLOAD)

    def eswitch_mode(self, pf_address: str) -> str:
        return read_eswitch_mode(self.nl, pf_address)

    def close(self) -> None:
        if self._nl is not None:
            self._nl.close()
            self._nl = None


def sim_offload_state(root: str) -> dict[str, Any]:
    """The simulated host's offload state (``offload.json`` under ``root``)."""
    path = os.path.join(root, SIM_OFFLOAD_FILE)
    try:
        with open(path) as f:
            state = json.load(f)
    except FileNotFoundError:
        raise OffloadReadError(f"{path} is missing (a simulated host made before offload "
                               "was simulated: make it again)") from None
    except (OSError, ValueError) as e:
        raise OffloadReadError(f"cannot read {path}: {e}") from None
    if not isinstance(state, dict):
        raise OffloadReadError(f"{path} does not hold a JSON object")
    return state


class SimulatedOffload(LinuxOffload):
    """The simulated host: the representor (a veth) is read from the kernel
    as on a real host, so a missing one is found missing; its
    ``hw-tc-offload`` and the PFs' eswitch modes are the simulator's."""

    def __init__(self, root: str) -> None:
        super().__init__()
        self.root = root
        self._state: dict[str, Any] | None = None

    @property
    def state(self) -> dict[str, Any]:
        """``offload.json``, read once per reader (one doctor run)."""
        if self._state is None:
            self._state = sim_offload_state(self.root)
        return self._state

    def hw_tc_offload(self, ifname: str, vf_address: str) -> FeatureState:
        self.feature(ifname, HW_TC_OFFLOAD)  # the representor must exist, as on a real host
        on = self.state.get("hw_tc_offload", {}).get(vf_address)
        if on is None:
            raise OffloadReadError(f"{ifname}: the simulated host has no representor for "
                                   f"VF {vf_address}")
        return FeatureState(active=bool(on), fixed=False, requested=bool(on))

    def eswitch_mode(self, pf_address: str) -> str:
        mode = self.state.get("eswitch_mode", {}).get(pf_address)
        if mode is None:
            raise OffloadReadError(f"devlink pci/{pf_address}: no devlink device",
                                   errno.ENODEV)
        return str(mode)


def offload_reader(backend: str, root: str) -> OffloadReader:
    return SimulatedOffload(root) if backend == "simulated" else LinuxOffload()


# -- what doctor reads ------------------------------------------------------------------
@dataclass
class OffloadFacts:
    """Everything :func:`smartnic_vif.decisions.offload.judge_offload` needs."""

    other_config: dict[str, str] | None
    plugged: list[Any] | None  # PluggedRepresentor
    modes: dict[str, str | None]
    errors: dict[str, str]


def read_offload_facts(group: Any, inventory: Any, ovsdb: Any | None) -> OffloadFacts:
    """Read the offload state of this host: OVS's other_config and the
    representors plugged on OVS (through ``ovsdb``, an OvsdbClient, or None
    when OVSDB cannot be reached), their ``hw-tc-offload``, and the eswitch
    mode of every PF with representors."""
    from smartnic_vif.decisions.offload import PluggedRepresentor

    reader = offload_reader(str(group.kernel_backend), str(group.sysfs_root))
    try:
        other_config, plugged = None, None
        if ovsdb is not None:
            from smartnic_vif.host.traces import vfs_of_links

            other_config = ovsdb.other_config()
            plugged = []
            for name, vf_address in sorted(vfs_of_links(inventory, ovsdb.port_names()).items()):
                vf = inventory.vf(vf_address)
                try:
                    state = reader.hw_tc_offload(name, vf_address)
                    plugged.append(PluggedRepresentor(name, vf_address, vf.pf_address,
                                                      state.describe(), state.fixed))
                except OffloadReadError as e:
                    plugged.append(PluggedRepresentor(name, vf_address, vf.pf_address,
                                                      error=str(e)))
        modes: dict[str, str | None] = {}
        errors: dict[str, str] = {}
        for pf in inventory.pfs:
            if pf.switch_id is None:
                continue
            try:
                modes[pf.address] = reader.eswitch_mode(pf.address)
            except OffloadReadError as e:
                modes[pf.address], errors[pf.address] = None, str(e)
        return OffloadFacts(other_config, plugged, modes, errors)
    finally:
        reader.close()
