"""The kept rtnetlink sockets (host/rtnl.py) and the link operations on them
(host/netdev.py), in this process, against real veths and namespaces."""

from __future__ import annotations

import os
import secrets
import subprocess
import time
from collections.abc import Iterator

import pytest
from pyroute2 import netns

from smartnic_vif.host import netdev, rtnl
from smartnic_vif.model.errors import HostOperationError, NotFound

pytestmark = pytest.mark.root


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True)  # noqa: S603, S607


@pytest.fixture
def names() -> Iterator[tuple[str, str, str]]:
    """(namespace, root-side veth, namespace-side veth), removed afterwards."""
    tag = secrets.token_hex(3)
    ns, outer, inner = f"snvt-{tag}", f"snvo{tag}", f"snvi{tag}"
    ip("netns", "add", ns)
    ip("link", "add", outer, "type", "veth", "peer", "name", inner, "netns", ns)
    yield ns, outer, inner
    subprocess.run(["ip", "link", "del", outer], capture_output=True)  # noqa: S603, S607
    subprocess.run(["ip", "netns", "del", ns], capture_output=True)  # noqa: S603, S607
    rtnl.close_all()


def test_a_namespace_made_anew_under_the_same_name_gets_a_new_socket(
    names: tuple[str, str, str],
) -> None:
    ns, outer, inner = names
    netdev.set_link(inner, netns=ns, mac="02:00:00:00:00:01")
    assert netdev.get_link(inner, netns=ns)["mac"] == "02:00:00:00:00:01"  # type: ignore[index]
    first = rtnl.netns_socket(ns)
    assert rtnl.netns_socket(ns) is first  # kept

    # Delete the namespace and make it again, with a link of the same name in
    # it: the kept socket would still reach the old one, which it keeps alive
    # (with the old veth pair) until it is closed.
    ip("netns", "del", ns)
    assert netdev.get_link(outer) is not None
    ip("netns", "add", ns)
    ip("link", "add", outer + "2", "type", "veth", "peer", "name", inner, "netns", ns)
    try:
        netdev.set_link(inner, netns=ns, mac="02:00:00:00:00:02")
        assert rtnl.netns_socket(ns) is not first
        assert netdev.get_link(inner, netns=ns)["mac"] == "02:00:00:00:00:02"  # type: ignore[index]
        # The old socket was closed, so the old namespace and its veth pair go.
        deadline = time.monotonic() + 10
        while netdev.get_link(outer) is not None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert netdev.get_link(outer) is None
    finally:
        subprocess.run(["ip", "link", "del", outer + "2"], capture_output=True)  # noqa: S603, S607


def test_a_missing_namespace_is_not_found_and_never_created(
    names: tuple[str, str, str],
) -> None:
    ns, _, inner = names
    rtnl.netns_socket(ns)
    ip("netns", "del", ns)
    with pytest.raises(NotFound, match=f"network namespace {ns} does not exist"):
        netdev.set_link(inner, netns=ns, mac="02:00:00:00:00:03")
    with pytest.raises(NotFound):
        netdev.get_link(inner, netns=ns)
    assert ns not in netns.listnetns()


def test_rename_of_an_up_link_keeps_it_up_and_a_taken_name_changes_nothing(
    names: tuple[str, str, str],
) -> None:
    _, outer, _ = names
    netdev.set_link(outer, up=True, mtu=1400)
    renamed = outer[:-1] + "r"
    try:
        netdev.set_link(outer, new_name=renamed, mtu=1500)
        after = netdev.get_link(renamed)
        assert after is not None and (after["up"], after["mtu"]) == (True, 1500)
        assert netdev.get_link(outer) is None

        # Renaming onto a name in use fails and leaves the link as it was (up).
        with pytest.raises(HostOperationError, match=f"cannot change network device {renamed}"):
            netdev.set_link(renamed, new_name="lo")
        still = netdev.get_link(renamed)
        assert still is not None and still["up"] is True

        # The undo of a rename that already happened: found by its new name.
        netdev.set_link(outer, new_name=renamed, or_name=renamed, mtu=1450)
        again = netdev.get_link(renamed)
        assert again is not None and again["mtu"] == 1450
    finally:
        if netdev.get_link(renamed) is not None:
            netdev.set_link(renamed, new_name=outer)


def test_changing_an_absent_link_is_not_found() -> None:
    with pytest.raises(NotFound, match="network device snv-nosuch0 .*does not exist"):
        netdev.set_link("snv-nosuch0", mtu=1500)
    with pytest.raises(NotFound, match=r"snv-nosuch0 \(nor snv-nosuch1\)"):
        netdev.set_link("snv-nosuch0", new_name="snv-nosuch1", or_name="snv-nosuch1", mtu=1500)
    assert netdev.get_link("snv-nosuch0") is None


def test_this_threads_socket_follows_it_into_another_namespace(
    names: tuple[str, str, str],
) -> None:
    # Reads run in the caller, whose thread may have switched namespace
    # since its socket was opened (the tests' simulated hosts do): a socket
    # left in the old namespace would read the wrong links.
    from tests.fixtures.sim import isolated_netns

    _, outer, _ = names
    assert netdev.get_link(outer) is not None
    before = rtnl.root_socket()
    with isolated_netns():
        assert netdev.get_link(outer) is None
        assert netdev.get_link("lo") is not None
        inside = rtnl.root_socket()
        assert inside is not before
    assert netdev.get_link(outer) is not None
    assert rtnl.root_socket() is not inside


def test_opening_a_namespace_socket_leaves_this_thread_where_it_was(
    names: tuple[str, str, str],
) -> None:
    ns, outer, inner = names

    def here() -> tuple[int, int]:
        st = os.stat("/proc/thread-self/ns/net")
        return st.st_dev, st.st_ino

    before = here()
    rtnl.close_all()
    assert netdev.get_link(inner, netns=ns) is not None  # opens the socket
    assert here() == before
    assert netdev.get_link(outer) is not None and netdev.get_link(inner) is None
    with pytest.raises(NotFound):
        netdev.get_link(inner, netns=ns + "-absent")
    assert here() == before


def test_link_fields_read_what_pyroute2_decodes(names: tuple[str, str, str]) -> None:
    ns, outer, inner = names
    netdev.set_link(outer, mtu=9000, mac="02:00:00:00:aa:01", up=True)
    for sock, name in ((rtnl.root_socket(), outer), (rtnl.root_socket(), "lo"),
                       (rtnl.netns_socket(ns), inner)):
        raw = sock.get_link(name)
        assert raw is not None
        fields = rtnl.link_fields(raw)
        full = rtnl.decode_link(raw)
        assert fields.ifname == full.get_attr("IFLA_IFNAME") == name
        assert fields.mac == full.get_attr("IFLA_ADDRESS")
        assert fields.mtu == full.get_attr("IFLA_MTU")
        assert (fields.index, fields.flags) == (full["index"], full["flags"])
    assert rtnl.link_fields(rtnl.root_socket().get_link(outer)).mtu == 9000  # type: ignore[arg-type]
    assert rtnl.root_socket().get_link("snv-absent0") is None
