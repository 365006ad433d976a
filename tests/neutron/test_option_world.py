"""The option world of tests/neutron/conftest.py keeps what other projects set
with ``cfg.CONF.set_default`` before the test.

``cfg.CONF.reset()`` (the world's, and Neutron's base at every cleanup) drops
every ``set_default``. oslo.privsep sets a context's ``capabilities`` that way,
so without the world putting them back, every privileged helper forked after a
Neutron test (the interop tests' plugin, in the same pytest process) came up
with no capability at all and failed with EPERM.
"""

from __future__ import annotations

import os_vif.objects
from oslo_config import cfg
from vif_plug_ovs import privsep as ovs_privsep

from smartnic_vif.host import privileged

CAP_NET_ADMIN, CAP_SYS_ADMIN = 12, 21
os_vif.objects.register_all()
# As imported, before any test (and any option world) ran.
OVS_CAPABILITIES = list(ovs_privsep.vif_plug.conf.capabilities)


def assert_privsep_defaults() -> None:
    assert privileged.context.conf.capabilities == [CAP_NET_ADMIN, CAP_SYS_ADMIN]
    assert ovs_privsep.vif_plug.conf.capabilities == OVS_CAPABILITIES
    assert CAP_NET_ADMIN in OVS_CAPABILITIES


def test_privsep_capability_defaults_are_there_in_a_neutron_test() -> None:
    assert_privsep_defaults()


def test_a_reset_inside_a_test_drops_them() -> None:
    # What Neutron's base does at every cleanup.
    cfg.CONF.reset()
    assert privileged.context.conf.capabilities == []


def test_the_next_test_has_them_again() -> None:
    # Runs after the one above (pytest keeps the file's order).
    assert_privsep_defaults()
