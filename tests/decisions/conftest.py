"""Nova, run for real, as the reference for the decision tests.

Everything Nova needs stays in this file: its configuration (options are
overridden per test and the overrides cleared afterwards, nothing else touched),
its object registry, and the fake (:mod:`tests.decisions.novaref`) of the one
thing Nova talks to here, the Neutron client (``nova.network.neutron.get_client``).
The host boundary Nova crosses in its PCI config parser (sysfs: is this
address a PF, which device owns this netdev) is answered from the same
inventory the library is given.

Importing Nova does not monkey patch eventlet (only ``nova.cmd`` entry points
call ``nova.monkey_patch.patch()``); the variable below keeps it that way should
anything in this process call it. Importing Nova's Neutron API or os-vif's
objects does, however, pull in ``oslo_service.service``, which picks
oslo.service's *eventlet* backend for the whole process when none is chosen yet;
Neutron's test package (``tests/neutron``) later insists on the threading
backend and fails to import. Nova itself runs its services on threading when
eventlet patching is disabled, so threading is made the default here, before any
of those imports, through oslo.service's public hook (a no-op if something
already chose a backend).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest

os.environ.setdefault("OS_NOVA_DISABLE_EVENTLET_PATCHING", "1")

import oslo_service.backend as oslo_service_backend  # noqa: E402

oslo_service_backend.register_backend_default_hook(
    lambda: oslo_service_backend.BackendType.THREADING
)

import nova.conf  # noqa: E402
import nova.objects  # noqa: E402
import os_vif.objects  # noqa: E402
from nova import context as nova_context  # noqa: E402
from nova.network import neutron as nova_neutron  # noqa: E402
from nova.pci import request as nova_pci_request  # noqa: E402
from nova.pci import utils as nova_pci_utils  # noqa: E402

from smartnic_vif.model.inventory import Inventory  # noqa: E402
from tests.decisions.novaref import FakeNeutronClient  # noqa: E402

nova.objects.register_all()
os_vif.objects.register_all()


class NovaConf:
    """Per-test option overrides on Nova's CONF (which is oslo.config's global
    ``cfg.CONF``), undone one by one.

    Not oslo.config's ``Config`` fixture: its clean-up calls ``CONF.reset()``,
    which also wipes every ``set_default`` made by anyone in the process, e.g.
    the capabilities oslo.privsep contexts set as defaults at import; a
    privileged helper forked later then starts with no capabilities.
    """

    def __init__(self) -> None:
        self.conf = nova.conf.CONF
        self._overridden: list[tuple[str, str | None]] = []

    def config(self, group: str | None = None, **overrides: Any) -> None:
        for name, value in overrides.items():
            self.conf.set_override(name, value, group)
            self._overridden.append((name, group))

    def restore(self) -> None:
        while self._overridden:
            name, group = self._overridden.pop()
            self.conf.clear_override(name, group)


@pytest.fixture
def nova_conf() -> Iterator[NovaConf]:
    """Nova's CONF; overrides made through ``.config(...)`` end with the test."""
    overrides = NovaConf()
    nova_pci_request.get_alias_from_config.cache_clear()
    try:
        yield overrides
    finally:
        overrides.restore()
        nova_pci_request.get_alias_from_config.cache_clear()


@pytest.fixture
def fake_neutron(monkeypatch: pytest.MonkeyPatch, nova_conf: Any) -> FakeNeutronClient:
    """A FakeNeutronClient that Nova's ``get_client`` returns for this test."""
    client = FakeNeutronClient()
    monkeypatch.setattr(nova_neutron, "get_client", lambda context, admin=False: client)
    return client


@pytest.fixture
def nova_ctx() -> Any:
    return nova_context.RequestContext(user_id="user", project_id="project", is_admin=True)


@pytest.fixture
def nova_sysfs(monkeypatch: pytest.MonkeyPatch) -> Any:
    """Point Nova's two sysfs look-ups in its device_spec parser at an inventory.

    Call the returned function with the inventory. As on a real host, a PF's
    uplink and its representors' ``device`` link is the PF (which has
    sriov_totalvfs), a VF's own netdev's is the VF.
    """

    def install(inventory: Inventory) -> None:
        pfs = {pf.address for pf in inventory.pfs}
        netdevs: dict[str, tuple[str, bool]] = {}
        for pf in inventory.pfs:
            if pf.netdev:
                netdevs[pf.netdev] = (pf.address, True)
            for vf in pf.vfs:
                if vf.representor is not None:
                    netdevs[vf.representor.name] = (pf.address, True)
                if vf.netdev:
                    netdevs[vf.netdev] = (vf.address, False)

        def is_physical_function(domain: str, bus: str, slot: str, function: str) -> bool:
            return f"{domain}:{bus}:{slot}.{function}" in pfs

        def get_function_by_ifname(name: str) -> tuple[str | None, bool]:
            return netdevs.get(name, (None, False))

        monkeypatch.setattr(nova_pci_utils, "is_physical_function", is_physical_function)
        monkeypatch.setattr(nova_pci_utils, "get_function_by_ifname", get_function_by_ifname)

    return install
