"""Nova's ``[pci] device_spec`` and ``[pci] alias``: parse, match, generate.

Parsing and matching follow ``nova.pci.devspec.PciDeviceSpec`` so that a VF
matches here exactly when it matches in Nova, including Nova's quirks:

* a glob address field is ``*`` or one hex number, never a partial wildcard;
* a dict address holds one regex per field, matched with ``re.match`` (anchored
  at the start only, so ``"0"`` matches bus ``05``);
* a fully written address (or ``devname``) that names a PF matches the PF's VFs;
* a spec tagged ``remote_managed`` only matches devices whose VPD carries a card
  serial number, which the inventory does not record, so it matches none here.

Where Nova reads sysfs (is this address a PF? which device has this netdev?),
the functions here ask the :class:`Inventory` instead, so they stay pure.

Generation writes address-based specs (the fewest regex or glob addresses
that take exactly the wanted VFs among the host's devices, or with ``per_vf``
exact VF addresses and ``dddd:bb:ss.*`` for a slot whose eight functions are
all wanted VFs), so operators never write vendor or product ids to expose a
SmartNIC's VFs.
"""

from __future__ import annotations

import json
import re
import string
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from smartnic_vif.model.errors import InvalidValue, NotSwitchdev, SmartNICError
from smartnic_vif.model.inventory import Inventory, PhysicalFunction, VirtualFunction
from smartnic_vif.model.types import PciAddress


def _strutils() -> Any:
    """oslo.utils' strutils (Nova's own bool_from_string), imported on first
    use: its import compiles some hundred regular expressions (~50 ms),
    which reading specs without a boolean tag (doctor) need not pay for."""
    from oslo_utils import strutils

    return strutils


ANY = "*"
REGEX_ANY = ".*"

# Largest value of each address field and the width Nova prints it with.
_FIELD_LIMITS = {"domain": (0xFFFF, 4), "bus": (0xFF, 2), "slot": (0x1F, 2), "function": (0x7, 1)}
_ID_RE = re.compile(r"^[0-9a-fA-F]{4}$")
# Tags Nova rewrites to "true"/"false" and refuses when they are not booleans.
_BOOLEAN_TAGS = ("managed", "live_migratable", "one_time_use")

DEVICE_TYPES = ("type-PCI", "type-PF", "type-VF")
NUMA_POLICIES = ("required", "legacy", "preferred", "socket")
_ALIAS_KEYS = frozenset(
    {
        "name",
        "capability_type",
        "product_id",
        "vendor_id",
        "device_type",
        "numa_policy",
        "resource_class",
        "traits",
        "live_migratable",
    }
)


def _address_fields(address: PciAddress) -> dict[str, str]:
    return {
        name: f"{getattr(address, name):0{width}x}"
        for name, (_, width) in _FIELD_LIMITS.items()
    }


def _hex_field(value: str, name: str, where: str) -> str:
    """One address field (or id) as Nova normalises it: ``*`` or zero-padded hex."""
    text = value.strip()
    if text == ANY:
        return ANY
    maximum, width = _FIELD_LIMITS[name]
    try:
        number = int(text, 16)
    except ValueError:
        raise InvalidValue(where, value, f"address field {name} is not a hex number") from None
    if not 0 <= number <= maximum:
        raise InvalidValue(where, value, f"address field {name} must be 0-{maximum:x}")
    return f"{number:0{width}x}"


@dataclass(frozen=True)
class AddressGlob:
    """``"dddd:bb:ss.f"`` where any field may be ``*`` or left out."""

    domain: str = ANY
    bus: str = ANY
    slot: str = ANY
    function: str = ANY

    @classmethod
    def parse(cls, text: str, where: str) -> AddressGlob:
        dbs, _, func = text.partition(".")
        fields = {"function": _hex_field(func, "function", where) if func.strip() else ANY}
        parts = dbs.split(":") if dbs else []
        if len(parts) > 3:
            raise InvalidValue(where, text, "expected at most domain:bus:slot before the '.'")
        # Like Nova, missing leading fields are wildcards: "08.1" is *:*:08.1.
        parts = [ANY] * (3 - len(parts)) + parts
        for name, part in zip(("domain", "bus", "slot"), parts, strict=True):
            fields[name] = _hex_field(part, name, where) if part.strip() else ANY
        return cls(**fields)

    def is_single(self) -> bool:
        return ANY not in (self.domain, self.bus, self.slot, self.function)

    def single_address(self) -> str:
        return f"{self.domain}:{self.bus}:{self.slot}.{self.function}"

    def matches(self, address: PciAddress) -> bool:
        have = _address_fields(address)
        return all(
            getattr(self, name) in (ANY, have[name])
            for name in ("domain", "bus", "slot", "function")
        )

    def to_config(self) -> str:
        return self.single_address()


@dataclass(frozen=True)
class AddressRegex:
    """``{"domain": re, "bus": re, "slot": re, "function": re}``; absent means ``.*``."""

    domain: str = REGEX_ANY
    bus: str = REGEX_ANY
    slot: str = REGEX_ANY
    function: str = REGEX_ANY

    @classmethod
    def parse(cls, value: Mapping[str, Any], where: str) -> AddressRegex:
        unknown = set(value) - {"domain", "bus", "slot", "function"}
        if unknown:
            raise InvalidValue(
                where, dict(value), f"unknown address keys {sorted(unknown)} "
                "(expected domain, bus, slot, function)"
            )
        fields = {}
        for name in ("domain", "bus", "slot", "function"):
            pattern = value.get(name, REGEX_ANY)
            if not isinstance(pattern, str):
                raise InvalidValue(where, dict(value), f"address {name} must be a regex string")
            try:
                re.compile(pattern)
            except re.error as exc:
                raise InvalidValue(
                    where, dict(value), f"address {name} is not a valid regex: {exc}"
                ) from None
            fields[name] = pattern
        return cls(**fields)

    def is_single(self) -> bool:
        # Nova's test: every field made of hex digits only (so a literal address).
        return all(
            all(c in string.hexdigits for c in getattr(self, name))
            for name in ("domain", "bus", "slot", "function")
        )

    def single_address(self) -> str:
        return f"{self.domain}:{self.bus}:{self.slot}.{self.function}"

    def matches(self, address: PciAddress) -> bool:
        have = _address_fields(address)
        return all(
            re.match(getattr(self, name), have[name]) is not None
            for name in ("domain", "bus", "slot", "function")
        )

    def to_config(self) -> dict[str, str]:
        return {
            "domain": self.domain,
            "bus": self.bus,
            "slot": self.slot,
            "function": self.function,
        }


@dataclass(frozen=True)
class DeviceSpec:
    """One parsed ``[pci] device_spec`` entry."""

    vendor_id: str = ANY  # 4 lowercase hex digits or "*"
    product_id: str = ANY
    address: AddressGlob | AddressRegex | None = None  # None when devname is given
    devname: str | None = None
    tags: Mapping[str, Any] = field(default_factory=dict, hash=False)
    source: str = "device_spec"  # which configuration entry, for messages

    @property
    def physical_network(self) -> str | None:
        value = self.tags.get("physical_network")
        return None if value is None else str(value)

    @property
    def trusted(self) -> bool | None:
        value = self.tags.get("trusted")
        return None if value is None else bool(_strutils().bool_from_string(value))

    @property
    def remote_managed(self) -> bool:
        return bool(_strutils().bool_from_string(self.tags.get("remote_managed")))

    def to_config(self) -> dict[str, Any]:
        """The entry as a JSON-ready dict, in the form it was parsed from."""
        out: dict[str, Any] = {}
        if self.vendor_id != ANY:
            out["vendor_id"] = self.vendor_id
        if self.product_id != ANY:
            out["product_id"] = self.product_id
        if self.devname is not None:
            out["devname"] = self.devname
        elif self.address is not None:
            out["address"] = self.address.to_config()
        out.update(self.tags)
        return out


@dataclass(frozen=True)
class PciAlias:
    """All ``[pci] alias`` entries of one name (Nova ORs their specs)."""

    name: str
    numa_policy: str
    specs: tuple[Mapping[str, str], ...]

    @property
    def dev_type(self) -> str | None:
        return self.specs[0].get("dev_type") if self.specs else None


def _load_json(text: object, where: str) -> Any:
    if not isinstance(text, str):
        raise InvalidValue(where, text, "expected a JSON string")
    try:
        return json.loads(text)
    except ValueError as exc:
        raise InvalidValue(where, text, f"not valid JSON: {exc}") from None


def _lines(json_strings: Iterable[str] | str) -> list[str]:
    # A bare string is one entry, not an iterable of one-character entries.
    return [json_strings] if isinstance(json_strings, str) else list(json_strings)


def _parse_id(value: object, name: str, where: str) -> str:
    if not isinstance(value, str):
        raise InvalidValue(where, value, f"{name} must be a string of 4 hex digits or '*'")
    text = value.strip()
    if text == ANY:
        return ANY
    try:
        number = int(text, 16)  # Nova accepts a 0x prefix here
    except ValueError:
        raise InvalidValue(where, value, f"{name} is not a hex number") from None
    if not 0 <= number <= 0xFFFF:
        raise InvalidValue(where, value, f"{name} must be 0000-ffff")
    return f"{number:04x}"


def parse_device_spec(entry: Mapping[str, Any], where: str = "device_spec") -> DeviceSpec:
    """One device_spec dict (already decoded from JSON)."""
    if not isinstance(entry, Mapping):
        raise InvalidValue(where, entry, "expected a JSON object")
    tags = dict(entry)
    vendor_id = _parse_id(tags.pop("vendor_id", ANY), "vendor_id", where)
    product_id = _parse_id(tags.pop("product_id", ANY), "product_id", where)
    devname = tags.pop("devname", None)
    raw_address = tags.pop("address", None)
    if devname is not None and (not isinstance(devname, str) or not devname):
        raise InvalidValue(where, devname, "devname must be a network interface name")
    if raw_address and devname:
        raise InvalidValue(where, dict(entry), "give either address or devname, not both")
    address: AddressGlob | AddressRegex | None = None
    if not devname:
        if isinstance(raw_address, Mapping):
            address = AddressRegex.parse(raw_address, where)
        elif isinstance(raw_address, str) or raw_address is None:
            address = AddressGlob.parse(raw_address or "*:*:*.*", where)
        else:
            raise InvalidValue(
                where, raw_address, "address must be a string (with * globs) or an object of "
                "domain/bus/slot/function regexes"
            )
    for tag in _BOOLEAN_TAGS:
        if tags.get(tag) is not None:
            try:
                true = _strutils().bool_from_string(tags[tag], strict=True)
                tags[tag] = "true" if true else "false"
            except ValueError:
                raise InvalidValue(where, tags[tag], f"tag {tag} must be true or false") from None
    for tag in ("trusted", "remote_managed"):
        # Nova reads these leniently (unknown means false); a typo that silently
        # flips what a VF is for is worth refusing instead.
        if tags.get(tag) is not None:
            try:
                _strutils().bool_from_string(tags[tag], strict=True)
            except ValueError:
                raise InvalidValue(where, tags[tag], f"tag {tag} must be true or false") from None
    return DeviceSpec(vendor_id, product_id, address, devname or None, tags, where)


def parse_device_specs(json_strings: Iterable[str] | str) -> list[DeviceSpec]:
    """``[pci] device_spec`` values: each a JSON object or a list of objects."""
    specs: list[DeviceSpec] = []
    for n, text in enumerate(_lines(json_strings)):
        where = f"[pci] device_spec entry {n}"
        value = _load_json(text, where)
        if isinstance(value, dict):
            value = [value]
        if not isinstance(value, list):
            raise InvalidValue(where, text, "expected a JSON object or a list of objects")
        for i, entry in enumerate(value):
            item_where = where if len(value) == 1 else f"{where} item {i}"
            specs.append(parse_device_spec(entry, item_where))
    return specs


def _resolve_devname(
    devname: str, vf: VirtualFunction, inventory: Inventory | None
) -> tuple[str, bool] | None:
    """(PCI address, is a PF) of the device owning ``devname``, as Nova finds it
    through ``/sys/class/net/<devname>/device``; None when there is no such netdev."""
    if vf.netdev == devname:
        return vf.address, False
    if inventory is None:
        return None
    for pf in inventory.pfs:
        # Representors hang under the PF's device, so their name resolves to
        # the PF just like the uplink's.
        if pf.netdev == devname or any(
            v.representor is not None and v.representor.name == devname for v in pf.vfs
        ):
            return pf.address, True
        for other in pf.vfs:
            if other.netdev == devname:
                return other.address, False
    return None


def matches(spec: DeviceSpec, vf: VirtualFunction, inventory: Inventory | None = None) -> bool:
    """Whether Nova would count ``vf`` as matched by ``spec``.

    ``inventory`` lets a ``devname`` spec resolve PF, representor and other
    VFs' netdev names; without it only the VF's own netdev is known.
    """
    if spec.vendor_id not in (ANY, vf.vendor_id.lower()):
        return False
    if spec.product_id not in (ANY, vf.product_id.lower()):
        return False
    vf_address = PciAddress.parse(vf.address)
    if spec.devname is not None:
        target = _resolve_devname(spec.devname, vf, inventory)
        if target is None:
            return False
        address, is_pf = target
        if not (address == vf.address or (is_pf and address == vf.pf_address)):
            return False
    elif not _address_matches(spec, vf_address, vf.pf_address):
        return False
    # Nova requires a card serial number from PCI VPD for remote-managed
    # devices; the inventory has none, so such a spec matches nothing here.
    return not spec.remote_managed


def _address_matches(spec: DeviceSpec, address: PciAddress, parent: str | None) -> bool:
    """Whether the address part of an address-based ``spec`` takes the device
    at ``address`` whose PF is ``parent`` (None for a device that is no VF)."""
    assert spec.address is not None  # parse_device_spec sets address or devname
    # A literal address that is a PF stands for the PF's VFs (Nova checks
    # sysfs for sriov_totalvfs; the PF of a VF is certainly one).
    names_parent = (
        parent is not None
        and spec.address.is_single()
        and spec.address.single_address() == parent
    )
    return names_parent or spec.address.matches(address)


def first_match(
    specs: Iterable[DeviceSpec], vf: VirtualFunction, inventory: Inventory | None = None
) -> DeviceSpec | None:
    """The spec that decides ``vf``'s tags: the first that matches, as in Nova."""
    for spec in specs:
        if matches(spec, vf, inventory):
            return spec
    return None


def _resolve_physnet_map(
    inventory: Inventory, physnet_map: Mapping[str, str | None]
) -> dict[str, str | None]:
    """PF address -> physnet, from keys that are PF addresses or PF netdev names."""
    by_pf: dict[str, str | None] = {}
    for key, physnet in physnet_map.items():
        if physnet is not None and (not isinstance(physnet, str) or not physnet.strip()):
            raise InvalidValue(
                f"physnet_map[{key!r}]", physnet, "expected a physical network name or None"
            )
        pf = _find_pf(inventory, key)
        if pf.address in by_pf and by_pf[pf.address] != physnet:
            raise InvalidValue(
                f"physnet_map[{key!r}]",
                physnet,
                f"PF {pf.address} is also mapped to {by_pf[pf.address]!r}",
            )
        if not pf.switchdev:
            raise NotSwitchdev(
                f"PF {pf.address} ({pf.netdev or 'no netdev'}) is mapped to physical network "
                f"{physnet!r} but its eswitch is not in switchdev mode (no phys_switch_id)"
            )
        by_pf[pf.address] = physnet
    return by_pf


def _find_pf(inventory: Inventory, key: str) -> PhysicalFunction:
    try:
        address: str | None = str(PciAddress.parse(key))
    except InvalidValue:
        address = None
    for pf in inventory.pfs:
        if pf.address == address or (pf.netdev is not None and pf.netdev == key):
            return pf
    known = ", ".join(f"{pf.address} ({pf.netdev or '-'})" for pf in inventory.pfs) or "none"
    raise InvalidValue(
        "physnet_map", key, f"names no physical function on this host (PFs: {known})"
    )


def _compact_addresses(addresses: list[PciAddress]) -> list[str]:
    """Exact addresses, with a slot whose eight functions are all present as
    one ``dddd:bb:ss.*`` glob."""
    by_slot: dict[tuple[int, int, int], list[PciAddress]] = {}
    for address in sorted(addresses):
        by_slot.setdefault((address.domain, address.bus, address.slot), []).append(address)
    out = []
    for (domain, bus, slot), members in by_slot.items():
        if {a.function for a in members} == set(range(8)):
            out.append(f"{domain:04x}:{bus:02x}:{slot:02x}.*")
        else:
            out.extend(str(a) for a in members)
    return out


def generate_device_specs(
    inventory: Inventory,
    physnet_map: Mapping[str, str | None],
    *,
    per_vf: bool = False,
    host_addresses: Iterable[str] = (),
) -> list[dict[str, Any]]:
    """device_spec entries exposing the switchdev VFs of the mapped PFs.

    ``physnet_map`` maps a PF (PCI address or netdev name) to its physical
    network, or to None for a PF that only carries tunnelled networks (Nova
    gives such ports a VF whose spec has no ``physical_network`` tag). PFs not
    in the map are not exposed; a key naming no PF, or a PF whose eswitch is not
    in switchdev mode, is an error.

    By default the entries are the fewest this generator finds (see
    :func:`_cover`): Nova's regex address form, or a glob where one says the
    same, one physical network per entry. Each matches only wanted VFs among
    the devices on the host (the inventory's PFs and VFs and
    ``host_addresses``, every PCI address the host has); it may also match
    addresses where no device exists. ``per_vf`` gives one entry per VF (a
    slot whose eight functions are all wanted as one ``dddd:bb:ss.*``) instead.
    Either way the entries are checked (:func:`check_generated_specs`) before
    they are returned.
    """
    by_pf = _resolve_physnet_map(inventory, physnet_map)
    wanted: dict[str, str | None] = {}
    for pf in sorted(inventory.pfs, key=lambda p: PciAddress.parse(p.address)):
        if pf.address in by_pf:
            wanted.update((vf.address, by_pf[pf.address]) for vf in pf.vfs if vf.switchdev)
    devices = _host_devices(inventory, host_addresses)
    specs: list[dict[str, Any]] = []
    physnets = list(dict.fromkeys(wanted.values()))  # in PF order
    for physnet in physnets:
        mine = [PciAddress.parse(a) for a, p in wanted.items() if p == physnet]
        if per_vf:
            addresses: list[str | dict[str, str]] = list(_compact_addresses(mine))
        else:
            others = frozenset(
                _fields_of(PciAddress.parse(a)) for a in devices if wanted.get(a, 0) != physnet
            )
            addresses = [
                _entry_address(e)
                for e in _cover(frozenset(_fields_of(a) for a in mine), others)
            ]
        for address in addresses:
            entry: dict[str, Any] = {"address": address}
            if physnet is not None:
                entry["physical_network"] = physnet
            specs.append(entry)
    check_generated_specs(specs, wanted, inventory, host_addresses)
    return specs


# -- the fewest entries ---------------------------------------------------------------
# An address is four numbers (domain, bus, slot, function); an entry of Nova's
# regex form takes the product of one set of values per field.
_Fields = tuple[int, int, int, int]
_Box = tuple[frozenset[int], frozenset[int], frozenset[int], frozenset[int]]
_FIELD_ORDER = ("domain", "bus", "slot", "function")


def _fields_of(address: PciAddress) -> _Fields:
    return (address.domain, address.bus, address.slot, address.function)


def _cover(wanted: frozenset[_Fields], others: frozenset[_Fields]) -> list[_Box]:
    """Few boxes whose union holds every address of ``wanted`` and none of
    ``others`` (addresses in neither are free to take).

    A set is first tried as one box: each field's values among its addresses.
    A box that takes another device is split by the values of one field, each
    part covered the same way, and boxes that differ in one field only merged
    again; the field giving the fewest boxes wins.
    """
    memo: dict[frozenset[_Fields], list[_Box]] = {}

    def solve(part: frozenset[_Fields], near: frozenset[_Fields]) -> list[_Box]:
        if part in memo:
            return memo[part]
        box: _Box = tuple(  # type: ignore[assignment]
            frozenset(a[i] for a in part) for i in range(4)
        )
        inside = frozenset(o for o in near if all(o[i] in box[i] for i in range(4)))
        if not inside:
            memo[part] = [box]
            return memo[part]
        best: list[_Box] | None = None
        for i in range(4):
            if len(box[i]) < 2:
                continue
            boxes: list[_Box] = []
            for value in sorted(box[i]):
                boxes.extend(solve(frozenset(a for a in part if a[i] == value), inside))
            merged = _merge(boxes)
            if best is None or len(merged) < len(best):
                best = merged
        assert best is not None  # a box of one wanted address takes no other device
        memo[part] = best
        return best

    if not wanted:
        return []
    return sorted(solve(wanted, others), key=lambda b: tuple(min(f) for f in b))


def _merge(boxes: list[_Box]) -> list[_Box]:
    """Boxes equal in three fields joined into one (their union, exactly)."""
    out = list(boxes)
    changed = True
    while changed:
        changed = False
        for i in range(4):
            groups: dict[tuple[frozenset[int], ...], set[int]] = {}
            for b in out:
                groups.setdefault(b[:i] + b[i + 1:], set()).update(b[i])
            if len(groups) < len(out):
                out = [
                    rest[:i] + (frozenset(values),) + rest[i:]  # type: ignore[misc]
                    for rest, values in groups.items()
                ]
                changed = True
    return out


_HEX = "0123456789abcdef"


def _char_class(chars: set[str]) -> str:
    if len(chars) == 1:
        return next(iter(chars))
    if len(chars) == 16:
        return "."
    text = ""
    # Ranges stay inside 0-9 or a-f: "[9-a]" would take ':' and 'A'-'Z' too.
    for segment in ("0123456789", "abcdef"):
        run: list[str] = []
        for c in segment + " ":
            if c in chars:
                run.append(c)
                continue
            text += f"{run[0]}-{run[-1]}" if len(run) > 2 else "".join(run)
            run = []
    return f"[{text}]"


def _values_regex(values: Iterable[str]) -> str:
    """A regex ``re.match`` takes exactly these fixed-width hex strings with."""
    values = sorted(values)
    if len(values[0]) == 1:
        return _char_class(set(values))
    suffixes: dict[str, set[str]] = {}
    for v in values:
        suffixes.setdefault(v[0], set()).add(v[1:])
    firsts: dict[str, set[str]] = {}
    for first in sorted(suffixes, key=_HEX.index):
        firsts.setdefault(_values_regex(suffixes[first]), set()).add(first)
    terms = []
    for rest, chars in firsts.items():
        terms.append(_char_class(chars) + (f"(?:{rest})" if "|" in rest else rest))
    return "|".join(terms)


def _entry_address(box: _Box) -> str | dict[str, str]:
    """One box as Nova writes it: a glob when each field is one value or all of
    them, else the regex form."""
    fields: dict[str, list[str] | None] = {}
    glob = True
    for name, values in zip(_FIELD_ORDER, box, strict=True):
        maximum, width = _FIELD_LIMITS[name]
        if len(values) == maximum + 1:
            fields[name] = None
        else:
            fields[name] = sorted(f"{v:0{width}x}" for v in values)
            glob = glob and len(values) == 1
    if glob:
        d, b, s, f = (ANY if v is None else v[0] for v in fields.values())
        return f"{d}:{b}:{s}.{f}"
    return {name: REGEX_ANY if v is None else _values_regex(v) for name, v in fields.items()}


def _host_devices(inventory: Inventory, host_addresses: Iterable[str]) -> list[str]:
    """Every PCI address on the host: the inventory's and ``host_addresses``."""
    devices = dict.fromkeys(str(PciAddress.parse(a)) for a in host_addresses)
    for pf in inventory.pfs:
        devices[pf.address] = None
        devices.update((vf.address, None) for vf in pf.vfs)
    return list(devices)


def check_generated_specs(
    specs: Iterable[Mapping[str, Any]],
    wanted: Mapping[str, str | None],
    inventory: Inventory,
    host_addresses: Iterable[str] = (),
) -> None:
    """Raise unless ``specs`` give Nova exactly the VFs of ``wanted``, each with
    its physical network: every entry matches wanted VFs of its own physical
    network only, among every device on the host, and every wanted VF is
    matched. Address-based entries only (what the generator writes)."""
    parents = {vf.address: vf.pf_address for vf in inventory.vfs()}
    devices = [(a, PciAddress.parse(a), parents.get(a))
               for a in _host_devices(inventory, host_addresses)]
    matched: set[str] = set()
    for n, entry in enumerate(specs):
        spec = parse_device_spec(entry, f"generated device_spec entry {n}")
        if spec.address is None or (spec.vendor_id, spec.product_id) != (ANY, ANY):
            raise SmartNICError(f"generated device_spec entry {n} is not address-based: {entry}")
        for address, parsed, parent in devices:
            if not _address_matches(spec, parsed, parent):
                continue
            if address not in wanted or wanted[address] != spec.physical_network:
                raise SmartNICError(
                    f"generated device_spec entry {n} {json.dumps(dict(entry))} also matches "
                    f"{address}, which is not a wanted VF of physical network "
                    f"{spec.physical_network!r}; please report this"
                )
            matched.add(address)
    missing = [a for a in wanted if a not in matched]
    if missing:
        raise SmartNICError(
            f"generated device_spec misses {len(missing)} wanted VFs ({', '.join(missing[:4])}"
            f"{', ...' if len(missing) > 4 else ''}); please report this"
        )


def device_spec_lines(specs: Iterable[Mapping[str, Any] | DeviceSpec]) -> list[str]:
    """One JSON string per entry, as ``device_spec = ...`` lines take them."""
    out = []
    for spec in specs:
        value = spec.to_config() if isinstance(spec, DeviceSpec) else dict(spec)
        out.append(json.dumps(value, sort_keys=True, separators=(", ", ": ")))
    return out


def _validate_alias(spec: Any, where: str) -> dict[str, Any]:
    # The checks of Nova's alias JSON schema, with our field naming.
    if not isinstance(spec, dict):
        raise InvalidValue(where, spec, "expected a JSON object")
    unknown = set(spec) - _ALIAS_KEYS
    if unknown:
        raise InvalidValue(where, spec, f"unknown keys {sorted(unknown)}")
    name = spec.get("name")
    if not isinstance(name, str) or not 1 <= len(name) <= 256:
        raise InvalidValue(where, name, "name must be a string of 1-256 characters")
    for key in ("vendor_id", "product_id"):
        if key in spec and (not isinstance(spec[key], str) or not _ID_RE.match(spec[key])):
            raise InvalidValue(where, spec[key], f"{key} must be 4 hex digits")
    if "device_type" in spec and spec["device_type"] not in DEVICE_TYPES:
        raise InvalidValue(
            where, spec["device_type"], "device_type must be one of " + ", ".join(DEVICE_TYPES)
        )
    if "numa_policy" in spec and spec["numa_policy"] not in NUMA_POLICIES:
        raise InvalidValue(
            where, spec["numa_policy"], "numa_policy must be one of " + ", ".join(NUMA_POLICIES)
        )
    if "capability_type" in spec and spec["capability_type"] != "pci":
        raise InvalidValue(where, spec["capability_type"], "capability_type must be pci")
    for key in ("resource_class", "traits", "live_migratable"):
        if key in spec and not isinstance(spec[key], str):
            raise InvalidValue(where, spec[key], f"{key} must be a string")
    return spec


def parse_aliases(
    json_strings: Iterable[str] | str, *, pci_in_placement: bool = False
) -> dict[str, PciAlias]:
    """``[pci] alias`` values, grouped by name as Nova does.

    Entries of one name must agree on numa_policy and device_type. Each entry
    needs vendor_id and product_id (or, with ``pci_in_placement``, a
    resource_class instead).
    """
    grouped: dict[str, tuple[str, list[dict[str, str]]]] = {}
    for n, text in enumerate(_lines(json_strings)):
        where = f"[pci] alias entry {n}"
        spec = dict(_validate_alias(_load_json(text, where), where))
        name = spec.pop("name").strip()
        numa_policy = spec.pop("numa_policy", None) or "legacy"
        dev_type = spec.pop("device_type", None)
        if dev_type:
            spec["dev_type"] = dev_type
        if spec.get("live_migratable") is not None:
            try:
                live = _strutils().bool_from_string(spec["live_migratable"], strict=True)
            except ValueError:
                raise InvalidValue(
                    where, spec["live_migratable"], "live_migratable must be true or false"
                ) from None
            spec["live_migratable"] = "true" if live else "false"
        has_ids = "vendor_id" in spec and "product_id" in spec
        if not has_ids and not (pci_in_placement and "resource_class" in spec):
            wanted = "vendor_id and product_id" + (
                " (or resource_class)" if pci_in_placement else ""
            )
            raise InvalidValue(where, text, f"alias {name!r} needs {wanted}")
        if name not in grouped:
            grouped[name] = (numa_policy, [spec])
            continue
        first_policy, existing = grouped[name]
        if first_policy != numa_policy:
            raise InvalidValue(where, text, f"NUMA policy mismatch for alias {name!r}")
        # Nova compares the device types of same-named entries and refuses an
        # entry (or a first entry) that lacks one.
        if "dev_type" not in existing[0] or "dev_type" not in spec:
            raise InvalidValue(
                where, text, f"alias {name!r} is repeated; every entry needs device_type"
            )
        if existing[0]["dev_type"] != spec["dev_type"]:
            raise InvalidValue(where, text, f"device type mismatch for alias {name!r}")
        if pci_in_placement:
            raise InvalidValue(
                where, text, f"alias {name!r} has several entries, which PCI in Placement refuses"
            )
        existing.append(spec)
    return {
        name: PciAlias(name, policy, tuple(specs)) for name, (policy, specs) in grouped.items()
    }


def generate_alias(
    inventory: Inventory,
    name: str = "smartnic-vf",
    *,
    numa_policy: str | None = None,
    switchdev_only: bool = True,
) -> list[dict[str, str]]:
    """Alias entries (one per VF vendor/product pair present) for the host's VFs.

    Nova's alias needs vendor and product ids; they come from the inventory so
    nobody has to look them up. All entries share ``name`` and so are ORed.
    """
    if not isinstance(name, str) or not 1 <= len(name) <= 256 or ":" in name or "," in name:
        # ':' and ',' separate alias names and counts in pci_passthrough:alias.
        raise InvalidValue("alias name", name, "expected 1-256 characters without ':' or ','")
    if numa_policy is not None and numa_policy not in NUMA_POLICIES:
        raise InvalidValue(
            "numa_policy", numa_policy, "expected one of " + ", ".join(NUMA_POLICIES)
        )
    ids = sorted(
        {
            (vf.vendor_id.lower(), vf.product_id.lower())
            for vf in inventory.vfs()
            if vf.switchdev or not switchdev_only
        }
    )
    if not ids:
        kind = "switchdev VFs" if switchdev_only else "VFs"
        raise InvalidValue("inventory", inventory.sysfs_root, f"has no {kind} to alias")
    out = []
    for vendor_id, product_id in ids:
        entry = {
            "name": name,
            "vendor_id": vendor_id,
            "product_id": product_id,
            "device_type": "type-VF",
        }
        if numa_policy is not None:
            entry["numa_policy"] = numa_policy
        out.append(entry)
    return out


__all__ = [
    "AddressGlob",
    "AddressRegex",
    "DeviceSpec",
    "PciAlias",
    "device_spec_lines",
    "first_match",
    "generate_alias",
    "check_generated_specs",
    "generate_device_specs",
    "matches",
    "parse_aliases",
    "parse_device_spec",
    "parse_device_specs",
]
