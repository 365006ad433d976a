"""Nova, run for real, as the reference for the decision tests.

Everything Nova needs stays in this file: its configuration (options are
overridden per test through oslo.config's fixture and restored afterwards),
its object registry, and the fake (:mod:`tests.decisions.novaref`) of the one
thing Nova talks to here, the Neutron client (``nova.network.neutron.get_client``).
The host boundary Nova crosses in its PCI config parser (sysfs: is this
address a PF, which device owns this netdev) is answered from the same
inventory the library is given.

Importing Nova does not monkey patch eventlet (only ``nova.cmd`` entry points
call ``nova.monkey_patch.patch()``); the variable below keeps it that way should
anything in this process call it.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest

os.environ.setdefault("OS_NOVA_DISABLE_EVENTLET_PATCHING", "1")

import nova.conf  # noqa: E402
import nova.objects  # noqa: E402
import os_vif.objects  # noqa: E402
from nova import context as nova_context  # noqa: E402
from nova.network import neutron as nova_neutron  # noqa: E402
from nova.pci import request as nova_pci_request  # noqa: E402
from nova.pci import utils as nova_pci_utils  # noqa: E402
from oslo_config import fixture as config_fixture  # noqa: E402

from smartnic_vif.model.inventory import Inventory  # noqa: E402
from tests.decisions.novaref import FakeNeutronClient  # noqa: E402

nova.objects.register_all()
os_vif.objects.register_all()


@pytest.fixture
def nova_conf() -> Iterator[Any]:
    """Nova's CONF; overrides made through ``.config(...)`` end with the test."""
    fixture = config_fixture.Config(nova.conf.CONF)
    fixture.setUp()
    nova_pci_request.get_alias_from_config.cache_clear()
    try:
        yield fixture
    finally:
        fixture.cleanUp()
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
