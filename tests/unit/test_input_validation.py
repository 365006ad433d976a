"""Input that must be refused before anything on the host changes (issue 15,
items 2, 3, 8, 13): vhost-user socket paths, datapath types, port MACs, and
the state store's own errors. Each refusal names the field and the value."""

from __future__ import annotations

import os
import shutil
import socket
import sqlite3
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

import pytest
from os_vif import objects as osv
from vif_plug_ovs import constants as ovs_constants

from smartnic_vif.decisions import plug
from smartnic_vif.host.forwarder import client as forwarder_client
from smartnic_vif.host.state import StateError, StateStore
from smartnic_vif.model import types
from smartnic_vif.model.errors import InvalidValue
from smartnic_vif.osvif.objects import VIFPortProfileForwarder, VIFPortProfilePassthrough

osv.register_all()

UNSHARE = shutil.which("unshare") or "/usr/bin/unshare"

PORT_ID = "0b4e4c7e-0c5b-4a4b-9f6e-1d2f3a4b5c61"
VM = "6c1f8a0e-2d9b-4a57-8f0c-9e1b2c3d4e51"
VF = "0000:05:00.2"
SOCKET_DIR = "/var/lib/vhost_sockets"
CHECKED = plug.PlugOptions(vhost_socket_dirs=(SOCKET_DIR,))


def forwarder_vif(path: str, mac: str = "fa:16:3e:00:00:01") -> Any:
    profile = VIFPortProfileForwarder(interface_id=PORT_ID, representor_address=VF)
    return osv.vif.VIFVHostUser(
        id=PORT_ID, address=mac, plugin="smartnic", vif_name="tap0b4e4c7e-0c",
        mode="server", path=path, port_profile=profile,
        network=osv.network.Network(id=PORT_ID, bridge="br-int", mtu=1500),
    )


def passthrough_vif(mac: str = "fa:16:3e:00:00:01", datapath_type: str | None = None) -> Any:
    profile: Any = VIFPortProfilePassthrough(interface_id=PORT_ID, representor_address=VF)
    if datapath_type is not None:
        # Upstream Nova's profile, the one that carries a datapath_type.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", PendingDeprecationWarning)
            profile = osv.vif.VIFPortProfileOVSRepresentor(
                interface_id=PORT_ID, representor_address=VF, datapath_type=datapath_type)
    return osv.vif.VIFHostDevice(
        id=PORT_ID, address=mac, plugin="smartnic", dev_type="ethernet", dev_address=VF,
        port_profile=profile,
        network=osv.network.Network(id=PORT_ID, bridge="br-int", mtu=1500),
    )


# -- item 2: vhost-user socket paths ---------------------------------------------------------
BAD_PATHS = {
    "a directory, /": "/",
    "trailing slash": f"{SOCKET_DIR}/vhu1/",
    "dot-dot": f"{SOCKET_DIR}/../../../etc/x",
    "dot": f"{SOCKET_DIR}/./vhu1",
    "double slash": f"{SOCKET_DIR}//vhu1",
    "leading double slash": f"/{SOCKET_DIR}/vhu1",
    "newline": f"{SOCKET_DIR}/vhu\n1",
    "escape": f"{SOCKET_DIR}/vhu\x1b[31m1",
    "nul": f"{SOCKET_DIR}/vhu\x001",
    "relative": "vhost_sockets/vhu1",
    "too long": SOCKET_DIR + "/" + "v" * (107 - len(SOCKET_DIR)),
}


@pytest.mark.parametrize("case", sorted(BAD_PATHS))
def test_a_malformed_socket_path_is_refused(case: str) -> None:
    path = BAD_PATHS[case]
    with pytest.raises(InvalidValue) as info:
        types.vhost_socket_path(path, "--vhost-path")
    assert info.value.field == "--vhost-path" and info.value.value == path
    assert "\n" not in str(info.value)
    # The same rules hold for a VIF handed to os_vif.plug, even with the
    # directory check turned off.
    with pytest.raises(InvalidValue) as info:
        plug.port_from_vif(forwarder_vif(path), VM, plug.PlugOptions())
    assert info.value.field == "vif.path"


def test_socket_paths_must_be_inside_the_socket_directories() -> None:
    inside = f"{SOCKET_DIR}/vhu0b4e4c7e-0c"
    longest = SOCKET_DIR + "/" + "v" * (106 - len(SOCKET_DIR))
    for good in (inside, longest, f"{SOCKET_DIR}/sub/vhu1"):
        assert types.vhost_socket_path(good, "p", (SOCKET_DIR,)) == good
    for outside in ("/etc/passwd", "/tmp", f"{SOCKET_DIR}-evil/vhu1", SOCKET_DIR):
        with pytest.raises(InvalidValue, match="vhostuser_socket_dir"):
            types.vhost_socket_path(outside, "p", (SOCKET_DIR,))
        with pytest.raises(InvalidValue, match="vhostuser_socket_dir"):
            plug.port_from_vif(forwarder_vif(outside), VM, CHECKED)
        # With the check off (no directories), only the form is checked.
        assert types.vhost_socket_path(outside, "p", ()) == outside
    assert plug.port_from_vif(forwarder_vif(inside), VM, CHECKED).vhost_path == inside


def test_the_forwarder_client_uses_the_same_rules() -> None:
    for path in BAD_PATHS.values():
        with pytest.raises(InvalidValue):
            forwarder_client.vhost_socket_path(path)


def test_an_existing_file_that_is_not_a_socket_is_refused(tmp_path: Path) -> None:
    dirs = (str(tmp_path),)
    check = forwarder_client.check_vhost_socket
    check(str(tmp_path / "absent"), dirs, "--vhost-path")  # QEMU will make it
    sock = socket.socket(socket.AF_UNIX)
    try:
        sock.bind(str(tmp_path / "sock"))
        check(str(tmp_path / "sock"), dirs, "--vhost-path")  # a stale socket: QEMU replaces it
    finally:
        sock.close()
    (tmp_path / "file").write_text("precious")
    (tmp_path / "dir").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "sock")
    for name in ("file", "dir", "link"):
        with pytest.raises(InvalidValue, match="not a socket") as info:
            check(str(tmp_path / name), dirs, "--vhost-path")
        assert info.value.field == "--vhost-path"
    assert (tmp_path / "file").read_text() == "precious"


def test_a_symlinked_directory_cannot_lead_out_of_the_socket_directories(
    tmp_path: Path,
) -> None:
    sockets, elsewhere = tmp_path / "sockets", tmp_path / "elsewhere"
    sockets.mkdir()
    elsewhere.mkdir()
    (sockets / "out").symlink_to(elsewhere)
    path = str(sockets / "out" / "vhu1")
    assert types.vhost_socket_path(path, "p", (str(sockets),)) == path  # the form is fine
    with pytest.raises(InvalidValue, match="outside"):
        forwarder_client.check_vhost_socket(path, (str(sockets),), "vif.path")
    forwarder_client.check_vhost_socket(path, (), "vif.path")  # check turned off


# -- item 3: datapath_type -------------------------------------------------------------------
def test_only_the_datapath_types_ovs_knows_are_accepted() -> None:
    known = (ovs_constants.OVS_DATAPATH_SYSTEM, ovs_constants.OVS_DATAPATH_NETDEV)
    for good in known:
        assert types.datapath_type(good) == good
        assert plug.port_from_vif(passthrough_vif(datapath_type=good), VM,
                                  plug.PlugOptions()).datapath_type == good
    for bad in ("bogus;dp", "bogus", "dummy", "NETDEV", " system", None, 1):
        with pytest.raises(InvalidValue):
            types.datapath_type(bad, "default_datapath_type")
    with pytest.raises(InvalidValue) as info:
        plug.port_from_vif(passthrough_vif(datapath_type="bogus;dp"), VM, plug.PlugOptions())
    assert info.value.field == "vif.port_profile.datapath_type"
    with pytest.raises(InvalidValue):
        plug.port_from_vif(passthrough_vif(datapath_type="bogus"), VM, plug.PlugOptions())


# -- item 8: port MACs -----------------------------------------------------------------------
@pytest.mark.parametrize("mac", ["00:00:00:00:00:00", "01:00:5e:00:00:01", "ff:ff:ff:ff:ff:ff"])
def test_the_unset_and_multicast_macs_are_not_port_macs(mac: str) -> None:
    with pytest.raises(InvalidValue) as info:
        types.unicast_mac(mac, "--mac")
    assert info.value.field == "--mac"
    with pytest.raises(InvalidValue) as info:
        plug.port_from_vif(passthrough_vif(mac=mac), VM, plug.PlugOptions())
    assert info.value.field == "vif.address"
    # A VF's settings may still hold (and be restored to) the unset MAC.
    assert types.mac_address(mac) == mac


# -- item 13: the state store's errors ---------------------------------------------------------
def test_a_corrupt_state_database_is_named_with_what_to_do(tmp_path: Path) -> None:
    db = tmp_path / "state.db"
    db.write_bytes(b"this is not a database, it was overwritten" * 100)
    with pytest.raises(StateError) as info:
        StateStore(str(tmp_path)).all()
    message = str(info.value)
    assert str(db) in message and "corrupt" in message and "\n" not in message
    assert isinstance(info.value.__cause__, sqlite3.DatabaseError)


def test_a_state_path_that_is_a_file_is_named(tmp_path: Path) -> None:
    path = tmp_path / "state"
    path.write_text("")
    with pytest.raises(StateError) as info:
        StateStore(str(path))
    assert str(path) in str(info.value) and "state_path" in str(info.value)
    assert "not a directory" in str(info.value)


@pytest.mark.root
def test_a_read_only_state_directory_is_named(tmp_path: Path) -> None:
    """The state directory on a read-only mount (root may write anywhere
    else), made in a mount namespace of the child's own that dies with it."""
    state = tmp_path / "state"
    state.mkdir()
    code = (
        "import subprocess, sys\n"
        "from smartnic_vif.host.state import StateError, StateStore\n"
        f"subprocess.run(['mount', '-t', 'tmpfs', '-o', 'ro', 'snv-ro', {str(state)!r}],"
        " check=True)\n"
        "try:\n"
        f"    StateStore({str(state)!r}).all()\n"
        "except StateError as e:\n"
        "    print(e)\n"
        "    sys.exit(3)\n"
    )
    proc = subprocess.run(  # noqa: S603 - fixed argv
        [UNSHARE, "--mount", "--propagation", "private", sys.executable, "-c", code],
        capture_output=True, text=True, timeout=60,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    assert proc.returncode == 3, proc.stderr
    assert str(state) in proc.stdout and "not writable" in proc.stdout, proc.stdout
    assert proc.stdout.count("\n") == 1
