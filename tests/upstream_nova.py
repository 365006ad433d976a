"""Real upstream Nova for the tests that hand it Neutron ports.

Importing Nova does not monkey patch eventlet (only ``nova.cmd`` entry points
and Nova's own test package call ``nova.monkey_patch.patch()``); the variable
below keeps it that way should anything in this process call it (the same
approach as ``tests/decisions/conftest.py``).

:class:`FakeNeutron` stands in for Nova's Neutron client (what ``get_client``
returns), the HTTP boundary Nova's own unit tests fake too: it answers the read
calls ``nova.network.neutron.API._build_vif_model`` makes from Neutron-style
dicts, so Nova's own code turns them into a ``nova.network.model.VIF``
exactly as nova-compute does.
"""

from __future__ import annotations

import os
from typing import Any

os.environ.setdefault("OS_NOVA_DISABLE_EVENTLET_PATCHING", "1")

import nova.conf  # noqa: E402,F401 - registers the options Nova's code reads
import nova.objects  # noqa: E402
import os_vif.objects  # noqa: E402

nova.objects.register_all()
os_vif.objects.register_all()


class FakeNeutron:
    """The read calls ``_build_vif_model`` makes, answered from dicts."""

    def __init__(self, networks: list[dict[str, Any]], subnets: list[dict[str, Any]],
                 ports: list[dict[str, Any]]) -> None:
        self.networks = {n["id"]: n for n in networks}
        self.subnets = subnets
        self.ports = ports

    def list_extensions(self) -> dict[str, Any]:
        return {"extensions": []}

    def show_network(self, network_id: str, fields: Any = None) -> dict[str, Any]:
        return {"network": dict(self.networks[network_id])}

    def list_subnets(self, id: list[str] | None = None, **_: Any) -> dict[str, Any]:
        return {"subnets": [s for s in self.subnets if id is None or s["id"] in id]}

    def list_ports(self, **filters: Any) -> dict[str, Any]:
        return {"ports": [p for p in self.ports
                          if all(p.get(k) == v for k, v in filters.items())]}

    def list_floatingips(self, **_: Any) -> dict[str, Any]:
        return {"floatingips": []}
