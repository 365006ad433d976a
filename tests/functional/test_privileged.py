"""The privileged entrypoints through the real, forked privsep daemon.

Every call here crosses oslo.privsep's channel: arguments are validated inside
the daemon, and what the caller sees is what oslo.privsep re-raises,
``type(e)(*e.args)`` of the daemon's exception. Validation failures arrive as
:class:`InvalidValue` (precisely ``PortableInvalidValue``, which keeps field,
value and reason across the channel).

The simulated hosts here have no OVS, so they live in the root namespace
(representors there, each VF's netdev in its own namespace).
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from pyroute2 import NetNS, netns

from smartnic_vif.host import privileged
from smartnic_vif.host.discovery import discover
from smartnic_vif.host.kernel import SimulatedKernel
from smartnic_vif.host.netdev import get_link
from smartnic_vif.model.errors import HostOperationError, InvalidValue, NotFound
from smartnic_vif.model.inventory import VirtualFunction
from smartnic_vif.sim.host import SimulatedHost
from tests.fixtures.sim import create_host, destroy_host, helper_for

pytestmark = pytest.mark.root

SIM = "simulated"
DEFAULTS = {
    "mac": "00:00:00:00:00:00",
    "vlan": 0,
    "qos": 0,
    "trust": False,
    "spoofchk": True,
    "link_state": "auto",
}
SimFactory = Callable[..., SimulatedHost]


def vf_netdev_mac(host: SimulatedHost, vf: VirtualFunction) -> str:
    """The MAC of the VF's own netdev (veth end) as seen inside its namespace."""
    ns = host.vf_namespace(vf.address)
    with NetNS(ns, flags=0) as nsr:  # flags=0: never create a missing namespace
        found = nsr.link_lookup(ifname=host.vf_netdev(vf.address))
        assert found, f"{host.vf_netdev(vf.address)} missing in {ns}"
        return str(nsr.get_links(found[0])[0].get_attr("IFLA_ADDRESS"))


@pytest.fixture
def host(sim_host: SimFactory, privsep: Any) -> Iterator[SimulatedHost]:
    """A host of its own, and the helper configured for it."""
    host = sim_host(pfs=2, vfs_per_pf=4)
    with helper_for(host):
        yield host


@pytest.fixture(scope="module")
def unchanged_host(privsep: Any) -> Iterator[SimulatedHost]:
    """One host shared by the tests that must leave it as they found it."""
    host = create_host(pfs=2, vfs_per_pf=4)
    try:
        with helper_for(host):
            yield host
    finally:
        destroy_host(host)


def get_vf(root: str, pf_address: str, vf_index: int) -> dict[str, Any]:
    """Reads need no privilege: straight from the simulated kernel's state."""
    return SimulatedKernel(root).get_vf(pf_address, vf_index)


def test_calls_go_through_a_forked_daemon(privsep: Any) -> None:
    assert privileged.context.client_mode is True
    assert privileged.context.channel is not None and privileged.context.channel.running
    # The daemon answers, with the error the daemon raised.
    with pytest.raises(NotFound, match="snv-absent0"):
        privileged.set_link("snv-absent0", up=True)


# -- VF settings -------------------------------------------------------------------


def test_set_vf_get_vf_round_trip_and_vf_netdev_takes_the_mac(host: SimulatedHost) -> None:
    root = host.dir
    inv = discover(root)
    vf = inv.pfs[1].vfs[2]
    neighbour = inv.pfs[1].vfs[1]
    own_mac = host.kernel_state(vf.address)["netdev_mac"]
    assert get_vf(root, vf.pf_address, vf.index) == DEFAULTS
    assert vf_netdev_mac(host, vf) == own_mac

    wanted = {
        "mac": "fa:16:3e:12:34:56",
        "vlan": 100,
        "qos": 3,
        "trust": True,
        "spoofchk": False,
        "link_state": "disable",
    }
    assert privileged.set_vf(vf.pf_address, vf.index, wanted) is None
    assert get_vf(root, vf.pf_address, vf.index) == wanted
    assert {k: host.kernel_state(vf.address)[k] for k in wanted} == wanted
    # Like a real VF netdev, the veth end in the VF's namespace took the MAC.
    assert vf_netdev_mac(host, vf) == "fa:16:3e:12:34:56"
    # Nothing else changed.
    assert get_vf(root, neighbour.pf_address, neighbour.index) == DEFAULTS
    assert vf_netdev_mac(host, neighbour) == host.kernel_state(neighbour.address)["netdev_mac"]

    # Uppercase MAC and PF address are normalised inside the daemon.
    privileged.set_vf(vf.pf_address.upper(), vf.index, {"mac": "FA:16:3E:AB:CD:EF"})
    assert get_vf(root, vf.pf_address, vf.index)["mac"] == "fa:16:3e:ab:cd:ef"
    assert vf_netdev_mac(host, vf) == "fa:16:3e:ab:cd:ef"

    # Clearing the VF MAC gives the netdev back its own address.
    privileged.set_vf(vf.pf_address, vf.index, dict(DEFAULTS))
    assert get_vf(root, vf.pf_address, vf.index) == DEFAULTS
    assert vf_netdev_mac(host, vf) == own_mac


def test_set_vf_mac_with_the_vf_namespace_gone_creates_no_namespace(
    host: SimulatedHost,
) -> None:
    # Regression: pyroute2 creates a missing namespace by default, so setting
    # the MAC once made an empty namespace of the VF's name appear.
    root = host.dir
    vf = discover(root).pfs[0].vfs[3]
    ns = host.vf_namespace(vf.address)
    subprocess.run(["ip", "netns", "del", ns], check=True)  # noqa: S603, S607
    assert ns not in netns.listnetns()

    privileged.set_vf(vf.pf_address, vf.index, {"mac": "fa:16:3e:00:00:33"})
    assert get_vf(root, vf.pf_address, vf.index)["mac"] == "fa:16:3e:00:00:33"
    assert ns not in netns.listnetns()


def test_set_vf_on_absent_vf_is_not_found(host: SimulatedHost) -> None:
    with pytest.raises(NotFound, match="has no VF 9"):
        privileged.set_vf("0000:05:00.0", 9, {"vlan": 1})
    with pytest.raises(NotFound, match="0000:05:00.7 is not present"):
        privileged.set_vf("0000:05:00.7", 0, {"vlan": 1})


# -- driver binding ----------------------------------------------------------------


def test_bind_vfio_removes_the_vf_netdev_and_nfp_brings_it_back(host: SimulatedHost) -> None:
    root = host.dir
    vf = discover(root).pfs[0].vfs[1]
    netdev = host.vf_netdev(vf.address)
    class_net = os.path.join(root, "sys", "class", "net", netdev)
    assert vf.driver == "nfp" and vf.netdev == netdev and os.path.exists(class_net)
    representor = vf.representor

    assert privileged.bind_driver(vf.address, "vfio-pci") == "nfp"
    now = discover(root).vf(vf.address)
    assert (now.driver, now.netdev) == ("vfio-pci", None)
    assert not os.path.lexists(class_net)
    assert now.representor == representor  # the representor stays
    # Binding the driver it already has is a no-op that reports it.
    assert privileged.bind_driver(vf.address.upper(), "vfio-pci") == "vfio-pci"

    assert privileged.bind_driver(vf.address, "nfp") == "vfio-pci"
    back = discover(root).vf(vf.address)
    assert (back.driver, back.netdev, back.representor) == ("nfp", netdev, representor)
    assert os.path.exists(class_net)
    assert discover(root) == discover(root)  # and the tree is stable

    # No driver at all, and back.
    assert privileged.bind_driver(vf.address, None) == "nfp"
    assert (discover(root).vf(vf.address).driver, discover(root).vf(vf.address).netdev) == (
        None,
        None,
    )
    assert privileged.bind_driver(vf.address, "nfp") is None
    assert discover(root).vf(vf.address).netdev == netdev


def test_a_vf_under_vfio_keeps_its_mac_for_the_driver_that_comes_back(
    host: SimulatedHost,
) -> None:
    # Under vfio-pci a real VF has no netdev: the MAC the PF sets meanwhile
    # waits in the VF's config until a network driver probes the VF again.
    root = host.dir
    vf = discover(root).pfs[0].vfs[2]
    own_mac = host.kernel_state(vf.address)["netdev_mac"]
    assert privileged.bind_driver(vf.address, "vfio-pci") == "nfp"
    privileged.set_vf(vf.pf_address, vf.index, {"mac": "fa:16:3e:00:0a:0b"})
    assert get_vf(root, vf.pf_address, vf.index)["mac"] == "fa:16:3e:00:0a:0b"
    assert vf_netdev_mac(host, vf) == own_mac  # nothing took it while parked

    assert privileged.bind_driver(vf.address, "nfp") == "vfio-pci"
    assert vf_netdev_mac(host, vf) == "fa:16:3e:00:0a:0b"

    # Cleared while parked: the returning driver uses the netdev's own address.
    privileged.bind_driver(vf.address, "vfio-pci")
    privileged.set_vf(vf.pf_address, vf.index, {"mac": "00:00:00:00:00:00"})
    privileged.bind_driver(vf.address, "nfp")
    assert vf_netdev_mac(host, vf) == own_mac


def test_bind_to_a_driver_the_host_lacks_fails_and_leaves_the_vf_as_it_was(
    host: SimulatedHost,
) -> None:
    root = host.dir
    vf = discover(root).pfs[1].vfs[0]
    before = discover(root).vf(vf.address)
    with pytest.raises(HostOperationError, match="no driver e1000e.*previous driver nfp"):
        privileged.bind_driver(vf.address, "e1000e")
    assert discover(root).vf(vf.address) == before  # driver nfp, its netdev there
    # From vfio-pci: the failed bind leaves it on vfio-pci, still without a netdev.
    privileged.bind_driver(vf.address, "vfio-pci")
    on_vfio = discover(root).vf(vf.address)
    with pytest.raises(HostOperationError, match="previous driver vfio-pci"):
        privileged.bind_driver(vf.address, "nosuchdrv")
    assert discover(root).vf(vf.address) == on_vfio
    assert privileged.bind_driver(vf.address, "nfp") == "vfio-pci"
    assert discover(root).vf(vf.address) == before


# -- validation inside the daemon ----------------------------------------------------

PF = "0000:05:00.0"


def _calls(root: str, rep: str) -> list[tuple[str, Callable[[], Any], str, object]]:
    """(id, call, field, value as the caller sees it)."""
    return [
        ("ifname-space", lambda: privileged.set_link("a b", up=True), "ifname", "a b"),
        ("ifname-path", lambda: privileged.set_link("../x", mtu=1500), "ifname", "../x"),
        ("ifname-long", lambda: privileged.set_link("x" * 16, up=True), "ifname", "x" * 16),
        ("new-name", lambda: privileged.set_link(rep, new_name="a/b"), "new_name", "a/b"),
        ("link-mac", lambda: privileged.set_link(rep, mac="zz:zz"), "mac", "zz:zz"),
        (
            "link-multicast",
            lambda: privileged.set_link(rep, mac="01:00:5e:00:00:01"),
            "mac",
            "01:00:5e:00:00:01",
        ),
        ("link-mtu", lambda: privileged.set_link(rep, mtu=10), "mtu", 10),
        ("link-up", lambda: privileged.set_link(rep, up="yes"), "up", "yes"),
        ("link-promisc", lambda: privileged.set_link(rep, promisc=1), "promisc", 1),
        (
            "vf-mac",
            lambda: privileged.set_vf(PF, 0, {"mac": "fa:16:3e:00:00"}),
            "vf_settings.mac",
            "fa:16:3e:00:00",
        ),
        (
            "vf-vlan",
            lambda: privileged.set_vf(PF, 0, {"vlan": 4095}),
            "vf_settings.vlan",
            4095,
        ),
        ("vf-qos", lambda: privileged.set_vf(PF, 0, {"qos": 8}), "vf_settings.qos", 8),
        (
            "vf-trust",
            lambda: privileged.set_vf(PF, 0, {"trust": 1}),
            "vf_settings.trust",
            1,
        ),
        (
            "vf-link-state",
            lambda: privileged.set_vf(PF, 0, {"link_state": "up"}),
            "vf_settings.link_state",
            "up",
        ),
        (
            "vf-unknown-key",
            lambda: privileged.set_vf(PF, 0, {"mac": "fa:16:3e:00:00:01", "mtu": 9000}),
            "vf_settings",
            "mtu",
        ),
        (
            "vf-settings-not-a-mapping",
            lambda: privileged.set_vf(PF, 0, ("mac",)),
            "vf_settings",
            "('mac',)",  # not a plain scalar: travels back as its repr
        ),
        (
            "pf-address",
            lambda: privileged.set_vf("0000:05:00.8", 0, {"vlan": 1}),
            "pf_address",
            "0000:05:00.8",
        ),
        (
            "vf-index",
            lambda: privileged.set_vf(PF, -1, {"vlan": 1}),
            "vf_index",
            -1,
        ),
        (
            "bind-address",
            lambda: privileged.bind_driver("05:08", "nfp"),
            "pci_address",
            "05:08",
        ),
        (
            "bind-driver",
            lambda: privileged.bind_driver("0000:05:08.0", "../nfp"),
            "driver",
            "../nfp",
        ),
    ]


CALL_IDS = [c[0] for c in _calls("/x", "y")]


@pytest.mark.parametrize("case", CALL_IDS)
def test_daemon_rejects_bad_arguments_as_invalid_value(
    unchanged_host: SimulatedHost, case: str
) -> None:
    host = unchanged_host
    root = host.dir
    inv = discover(root)
    rep = inv.representor_of(inv.pfs[0].vfs[0].address).name
    before = host.kernel_state(inv.pfs[0].vfs[0].address)
    link_before = get_link(rep)
    _, call, field, value = next(c for c in _calls(root, rep) if c[0] == case)

    with pytest.raises(InvalidValue) as exc:
        call()
    assert exc.value.field == field
    assert exc.value.value == value
    assert str(exc.value).startswith(f"invalid {field} {value!r}: ")
    # Nothing was changed on the way.
    assert host.kernel_state(inv.pfs[0].vfs[0].address) == before
    assert get_link(rep) == link_before


# -- links -----------------------------------------------------------------------------


def test_set_link_rename_and_mtu_on_a_representor_and_back(host: SimulatedHost) -> None:
    inv = discover(host.dir)
    rep = inv.representor_of(inv.pfs[1].vfs[3].address).name
    other = inv.representor_of(inv.pfs[1].vfs[2].address).name
    original = get_link(rep)
    assert original is not None and original["ifname"] == rep
    assert (original["mtu"], original["up"]) == (1500, False)
    new = f"sn{host.layout.sim_id}ren"

    privileged.set_link(rep, up=True)
    privileged.set_link(rep, new_name=new, mtu=9000, mac="fa:16:3e:00:99:01")
    assert get_link(rep) is None
    renamed = get_link(new)
    assert renamed == {"ifname": new, "mac": "fa:16:3e:00:99:01", "mtu": 9000, "up": True,
                       "promisc": False}

    # Renaming onto an existing link fails in the kernel and leaves both alone.
    with pytest.raises(HostOperationError):
        privileged.set_link(new, new_name=other)
    assert get_link(new) == renamed
    assert get_link(other) is not None

    privileged.set_link(new, new_name=rep, mtu=1500, mac=original["mac"], up=False)
    assert get_link(new) is None
    assert get_link(rep) == original
    # Discovery never depended on the name and still finds it.
    assert discover(host.dir).representor_of(inv.pfs[1].vfs[3].address).name == rep


def test_set_link_sets_up_and_promiscuous_in_one_request_and_clears_them(
    host: SimulatedHost,
) -> None:
    inv = discover(host.dir)
    rep = inv.representor_of(inv.pfs[0].vfs[2].address).name
    original = get_link(rep)
    assert original is not None and (original["up"], original["promisc"]) == (False, False)

    privileged.set_link(rep, up=True, promisc=True)
    assert get_link(rep) == dict(original, up=True, promisc=True)
    # Leaving a flag out leaves it as it is.
    privileged.set_link(rep, up=False)
    assert get_link(rep) == dict(original, promisc=True)
    privileged.set_link(rep, promisc=False)
    assert get_link(rep) == original


def test_set_link_on_an_absent_link_is_not_found(privsep: Any) -> None:
    with pytest.raises(NotFound, match="snv-absent0"):
        privileged.set_link("snv-absent0", mtu=1500)


# -- several changes in one round trip -------------------------------------------------


def test_apply_runs_changes_in_order_and_stops_at_the_first_error(host: SimulatedHost) -> None:
    root = host.dir
    inv = discover(root)
    vf = inv.pfs[0].vfs[1]
    rep = inv.representor_of(vf.address).name
    link_before = get_link(rep)
    assert link_before is not None
    outcomes = privileged.apply([
        ["set_vf", {"pf_address": vf.pf_address,
                    "vf_index": vf.index, "settings": {"mac": "fa:16:3e:00:01:01"}}],
        ["set_link", {"ifname": rep, "mtu": 9000, "up": True}],
        ["bind_driver", {"address": vf.address,
                         "driver": "vfio-pci"}],
        ["set_link", {"ifname": "snv-absent0", "up": True}],
        ["set_vf", {"pf_address": vf.pf_address,
                    "vf_index": vf.index, "settings": {"mac": "fa:16:3e:00:01:02"}}],
    ])
    # (privsep hands lists back as tuples)
    assert [list(o) for o in outcomes[:3]] == [["ok", None], ["ok", None], ["ok", "nfp"]]
    assert list(outcomes[3][:2]) == ["error", "NotFound"]
    error = privileged.error_from_data(outcomes[3][1], outcomes[3][2])
    assert isinstance(error, NotFound) and "snv-absent0" in str(error)
    assert len(outcomes) == 4  # the last change never ran
    assert get_vf(root, vf.pf_address, vf.index)["mac"] == "fa:16:3e:00:01:01"
    assert get_link(rep) == dict(link_before, mtu=9000, up=True)
    assert discover(root).vf(vf.address).driver == "vfio-pci"

    # keep_going (undo): every change runs, each with its own outcome.
    outcomes = privileged.apply([
        ["bind_driver", {"address": vf.address,
                         "driver": "nfp"}],
        ["set_vf", {"pf_address": vf.pf_address,
                    "vf_index": vf.index, "settings": {"vlan": 4095}}],
        ["set_link", {"ifname": rep, "mtu": 1500, "up": False}],
        ["set_vf", {"pf_address": vf.pf_address,
                    "vf_index": vf.index, "settings": {"mac": "00:00:00:00:00:00"}}],
    ], keep_going=True)
    assert [o[0] for o in outcomes] == ["ok", "error", "ok", "ok"]
    invalid = privileged.error_from_data(outcomes[1][1], outcomes[1][2])
    assert isinstance(invalid, InvalidValue)
    assert (invalid.field, invalid.value) == ("vf_settings.vlan", 4095)
    assert get_vf(root, vf.pf_address, vf.index) == DEFAULTS
    assert get_link(rep) == link_before
    assert discover(root).vf(vf.address).driver == "nfp"


@pytest.mark.parametrize("change", [
    ["get_link", {"ifname": "lo"}],          # not a change this daemon runs
    ["set_link"],                            # no kwargs
    ["set_link", {"ifname": "lo", "bogus": 1}],  # unknown argument
    "set_link",
])
def test_apply_refuses_what_is_not_a_known_change(unchanged_host: SimulatedHost,
                                                  change: Any) -> None:
    [outcome] = privileged.apply([change])
    assert outcome[0] == "error"
    error = privileged.error_from_data(outcome[1], outcome[2])
    assert isinstance(error, InvalidValue | HostOperationError)
    assert get_link("lo") is not None and get_link("lo")["up"] is True  # type: ignore[index]


def test_a_host_whose_tree_is_not_the_helpers_is_refused_before_any_change(
    host: SimulatedHost,
) -> None:
    # The helper's tree is host.dir (its own configuration); a Host that
    # reads another tree must not have the helper change VFs it never read.
    from types import SimpleNamespace

    from smartnic_vif.host.backend import Host

    vf = discover(host.dir).pfs[0].vfs[0]
    before = host.kernel_state(vf.address)
    other = Host(SimpleNamespace(sysfs_root="/", kernel_backend="linux"))
    with pytest.raises(HostOperationError, match=f"sysfs_root {host.dir} .*reads "
                       "kernel_backend linux under /"):
        other.bind_driver(vf.address, "vfio-pci")
    assert host.kernel_state(vf.address) == before
    # The Host of the helper's own tree goes ahead.
    mine = Host(SimpleNamespace(sysfs_root=host.dir, kernel_backend="simulated"))
    mine.bind_driver(vf.address, "vfio-pci")
    mine.bind_driver(vf.address, "nfp")
    assert discover(host.dir).vf(vf.address).driver == "nfp"
