"""Helpers for comparing the library with real Nova: a fake Neutron client
(the only thing Nova talks to in these tests) and primitive normalisation."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any


class FakeNeutronClient:
    """What Nova's code calls on its Neutron client, answered from dicts.

    ``fields`` is honoured like Neutron does (only the named keys come back),
    because Nova's physnet lookup depends on which keys are present.
    """

    def __init__(
        self,
        ports: Mapping[str, Mapping[str, Any]] | None = None,
        networks: Mapping[str, Mapping[str, Any]] | None = None,
        subnets: list[Mapping[str, Any]] | None = None,
        extensions: tuple[str, ...] = ("multi-provider",),
    ) -> None:
        self.ports = dict(ports or {})
        self.networks = dict(networks or {})
        self.subnets = list(subnets or [])
        self.extensions = extensions
        self.calls: list[tuple[str, Any]] = []

    @staticmethod
    def _fields(obj: Mapping[str, Any], fields: Any) -> dict[str, Any]:
        if not fields:
            return copy.deepcopy(dict(obj))
        names = [fields] if isinstance(fields, str) else list(fields)
        return {k: copy.deepcopy(obj[k]) for k in names if k in obj}

    def list_extensions(self) -> dict[str, Any]:
        self.calls.append(("list_extensions", None))
        return {"extensions": [{"alias": a} for a in self.extensions]}

    def show_port(self, port_id: str, fields: Any = None) -> dict[str, Any]:
        self.calls.append(("show_port", port_id))
        return {"port": self._fields(self.ports[port_id], fields)}

    def show_network(self, network_id: str, fields: Any = None) -> dict[str, Any]:
        self.calls.append(("show_network", network_id))
        return {"network": self._fields(self.networks[network_id], fields)}

    def list_subnets(self, **search: Any) -> dict[str, Any]:
        self.calls.append(("list_subnets", search))
        ids = search.get("id")
        found = [copy.deepcopy(s) for s in self.subnets if ids is None or s["id"] in ids]
        return {"subnets": found}

    def list_ports(self, **search: Any) -> dict[str, Any]:
        self.calls.append(("list_ports", search))
        return {"ports": []}

    def list_floatingips(self, **search: Any) -> dict[str, Any]:
        self.calls.append(("list_floatingips", search))
        return {"floatingips": []}


def normalise_primitive(value: Any) -> Any:
    """obj_to_primitive output with change lists sorted: the set of changed
    fields matters, the order they were assigned in does not."""
    if isinstance(value, dict):
        out = {k: normalise_primitive(v) for k, v in value.items()}
        if "versioned_object.changes" in out:
            out["versioned_object.changes"] = sorted(out["versioned_object.changes"])
        return out
    if isinstance(value, list):
        return [normalise_primitive(v) for v in value]
    return value
