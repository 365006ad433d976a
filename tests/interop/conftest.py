"""Real upstream Nova, imported for the interop tests (``tests/upstream_nova.py``).

``nova_neutron`` makes Nova's ``get_client`` return a small in-memory Neutron
(:class:`FakeNeutron`), so that Nova's own ``API._build_vif_model`` turns
Neutron-style port and network dicts into ``nova.network.model.VIF`` exactly as
nova-compute does.
"""

from __future__ import annotations

from typing import Any

import pytest
from nova.network import neutron as nova_neutron

from tests.upstream_nova import FakeNeutron


@pytest.fixture
def nova_neutron_api(monkeypatch: pytest.MonkeyPatch) -> Any:
    """``(api, install)``: Nova's Neutron API object, and a function that
    makes ``get_client`` answer from a FakeNeutron for this test."""
    api = nova_neutron.API()

    def install(fake: FakeNeutron) -> FakeNeutron:
        monkeypatch.setattr(nova_neutron, "get_client", lambda context, admin=False: fake)
        return fake

    return api, install
