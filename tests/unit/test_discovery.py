"""Discovery on generated sysfs trees (no netdevs, no root needed).

Trees are laid out by the simulator's own :class:`SysfsTree` (the same code
that builds the simulated host), either from hand-made specs or from
:meth:`SimLayout.pf_specs`, so every case here is one a real host can show:
representors found by ``phys_switch_id`` + ``phys_port_name`` in every port
name form, two PFs on one eswitch, renamed representors, VFs without driver,
legacy (non-switchdev) PFs, and the errors a caller sees.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from smartnic_vif.host.discovery import (
    VfPortName,
    discover,
    find_representor,
    parse_vf_port_name,
)
from smartnic_vif.model import types
from smartnic_vif.model.errors import (
    DiscoveryError,
    InvalidValue,
    NotAVirtualFunction,
    NotFound,
    RepresentorNotFound,
)
from smartnic_vif.sim.host import SimLayout
from smartnic_vif.sim.sysfs_tree import (
    PORT_NAME_FORMS,
    NetdevSpec,
    PfSpec,
    SysfsTree,
    VfSpec,
    port_name,
)

SWITCH = "00154d0a0b0c0d0e"
OTHER_SWITCH = "00154d1111111111"


def pf_addr(function: int, bus: int = 0x05) -> str:
    return f"0000:{bus:02x}:00.{function}"


def vf_addr(function: int, index: int, bus: int = 0x05) -> str:
    return f"0000:{bus:02x}:{0x08 + function:02x}.{index}"


def rep_name(function: int, index: int, bus: int = 0x05) -> str:
    return f"rep{bus:x}f{function}v{index}"


def make_pf(
    function: int,
    vfs: int = 4,
    form: str = "pfXvfY",
    switch_id: str | None = SWITCH,
    bus: int = 0x05,
    driver: str = "nfp",
) -> PfSpec:
    switchdev = switch_id is not None
    pf = PfSpec(
        address=pf_addr(function, bus),
        function=function,
        driver=driver,
        numa_node=function % 2,
        netdev=NetdevSpec(
            name=f"up{bus:x}f{function}",
            mac=f"02:00:00:{bus:02x}:{function:02x}:ff",
            switch_id=switch_id,
            port_name=f"p{function}" if switchdev else None,
        ),
        switchdev=switchdev,
    )
    for i in range(vfs):
        pf.vfs.append(
            VfSpec(
                address=vf_addr(function, i, bus),
                index=i,
                netdev=NetdevSpec(
                    name=f"vf{bus:x}f{function}n{i}",
                    mac=f"02:01:00:{bus:02x}:{function:02x}:{i:02x}",
                ),
                representor=NetdevSpec(
                    name=rep_name(function, i, bus),
                    mac=f"02:02:00:{bus:02x}:{function:02x}:{i:02x}",
                    switch_id=switch_id,
                    port_name=port_name(form, function, i),
                )
                if switchdev
                else None,
            )
        )
    return pf


def build(root: Path, *pfs: PfSpec, total_vfs: int = 64) -> str:
    tree = SysfsTree(str(root))
    tree.skeleton(sorted({pf.driver for pf in pfs} | {"vfio-pci"}))
    for pf in pfs:
        tree.add_pf(pf, total_vfs=total_vfs)
    return str(root)


def netdev_dir(root: str, name: str) -> str:
    return os.path.realpath(os.path.join(root, "sys", "class", "net", name))


def remove_netdev(root: str, name: str) -> None:
    path = netdev_dir(root, name)
    os.unlink(os.path.join(root, "sys", "class", "net", name))
    shutil.rmtree(path)


def rename_netdev(root: str, old: str, new: str) -> None:
    """What a udev rename does to sysfs: the entry under the device and the
    /sys/class/net link both change name; the attributes stay."""
    path = netdev_dir(root, old)
    new_path = os.path.join(os.path.dirname(path), new)
    os.rename(path, new_path)
    class_net = os.path.join(root, "sys", "class", "net")
    os.unlink(os.path.join(class_net, old))
    os.symlink(os.path.relpath(new_path, class_net), os.path.join(class_net, new))


# -- representors in every port name form ----------------------------------------


@pytest.mark.parametrize("form", PORT_NAME_FORMS)
def test_every_port_name_form_finds_the_right_representor(tmp_path: Path, form: str) -> None:
    root = build(tmp_path, make_pf(0, form=form), make_pf(1, form=form))
    inv = discover(root)

    assert [pf.address for pf in inv.pfs] == [pf_addr(0), pf_addr(1)]
    for pf in inv.pfs:
        assert pf.switch_id == SWITCH
        assert pf.netdev == f"up5f{pf.function}"
        assert pf.uplink_port_name == f"p{pf.function}"
        assert [vf.index for vf in pf.vfs] == [0, 1, 2, 3]
        for vf in pf.vfs:
            rep = inv.representor_of(vf.address)
            assert rep.name == rep_name(pf.function, vf.index)
            assert rep.port_name == port_name(form, pf.function, vf.index)
            assert rep.vf_index == vf.index
            assert rep.switch_id == SWITCH
            assert rep.pf_function == (pf.function if "pf" in form else None)
            assert vf.switchdev and vf.capabilities == ("switchdev",)
            assert vf.netdev == f"vf5f{pf.function}n{vf.index}"
            assert vf.driver == "nfp"
            assert inv.vf_by_representor(rep.name) == vf
            assert find_representor(root, pf.address, vf.index) == rep


@pytest.mark.parametrize("form", PORT_NAME_FORMS)
def test_simulated_host_layout_discovers_like_the_simulator_promises(
    tmp_path: Path, form: str
) -> None:
    layout = SimLayout(
        dir=str(tmp_path),
        sim_id="ab12",
        pfs=2,
        vfs_per_pf=5,
        legacy_pfs=1,
        port_name_form=form,
        driver="mlx5_core",
    )
    specs = layout.pf_specs()
    root = build(tmp_path, *specs)
    inv = discover(root)

    assert len(inv.pfs) == 3
    for spec, pf in zip(sorted(specs, key=lambda s: s.address), inv.pfs, strict=True):
        assert pf.address == spec.address
        assert (pf.vendor_id, pf.driver, pf.total_vfs, pf.num_vfs) == ("15b3", "mlx5_core", 64, 5)
        assert pf.switchdev is spec.switchdev
        for vspec, vf in zip(spec.vfs, pf.vfs, strict=True):
            assert (vf.address, vf.index, vf.product_id) == (vspec.address, vspec.index, "101e")
            expected = vspec.representor.name if vspec.representor else None
            assert (vf.representor.name if vf.representor else None) == expected


@pytest.mark.parametrize("form", ["vfY", "Y"])
def test_two_pfs_on_one_switch_never_take_each_others_representors(
    tmp_path: Path, form: str
) -> None:
    # No PF number in the port name: only the representor's `device` link says
    # which PF it belongs to. Both PFs have representors named alike ("0",
    # "vf0", ...) on the same switch.
    root = build(tmp_path, make_pf(0, form=form), make_pf(1, form=form))
    inv = discover(root)
    pf0, pf1 = inv.pfs
    reps0 = {vf.representor.name for vf in pf0.vfs if vf.representor}
    reps1 = {vf.representor.name for vf in pf1.vfs if vf.representor}
    assert reps0 == {rep_name(0, i) for i in range(4)}
    assert reps1 == {rep_name(1, i) for i in range(4)}

    # A representor that lost its device link cannot be placed on one of two
    # PFs: its VF gets none, and the other PF's VF 0 still gets its own.
    os.unlink(os.path.join(netdev_dir(root, rep_name(0, 0)), "device"))
    inv = discover(root)
    assert inv.vf(vf_addr(0, 0)).representor is None
    assert inv.representor_of(vf_addr(1, 0)).name == rep_name(1, 0)
    with pytest.raises(RepresentorNotFound):
        inv.representor_of(vf_addr(0, 0))


def test_without_device_link_a_single_pf_on_the_switch_still_finds_it(tmp_path: Path) -> None:
    root = build(tmp_path, make_pf(0, form="Y"))
    os.unlink(os.path.join(netdev_dir(root, rep_name(0, 2)), "device"))
    assert discover(root).representor_of(vf_addr(0, 2)).name == rep_name(0, 2)


def test_same_port_names_on_two_switches_are_told_apart_by_switch_id(tmp_path: Path) -> None:
    # Two NICs, each PF function 0 with representors pf0vf0..: same port names,
    # different phys_switch_id.
    root = build(
        tmp_path,
        make_pf(0, bus=0x05, switch_id=SWITCH),
        make_pf(0, bus=0x06, switch_id=OTHER_SWITCH),
    )
    inv = discover(root)
    for bus, switch in ((0x05, SWITCH), (0x06, OTHER_SWITCH)):
        for i in range(4):
            rep = inv.representor_of(vf_addr(0, i, bus))
            assert (rep.name, rep.switch_id) == (rep_name(0, i, bus), switch)


def test_renamed_representor_is_found_by_switch_id_and_port_name(tmp_path: Path) -> None:
    root = build(tmp_path, make_pf(0), make_pf(1))
    rename_netdev(root, rep_name(1, 2), "eth_weird-9")
    rename_netdev(root, rep_name(0, 3), "ens1f0npf0vf3")
    inv = discover(root)
    rep = inv.representor_of(vf_addr(1, 2))
    assert (rep.name, rep.port_name, rep.pf_function, rep.vf_index) == (
        "eth_weird-9",
        "pf1vf2",
        1,
        2,
    )
    assert inv.representor_of(vf_addr(0, 3)).name == "ens1f0npf0vf3"
    assert inv.vf_by_representor(rep_name(1, 2)) is None


def test_pf_representor_and_uplink_are_not_vf_representors(tmp_path: Path) -> None:
    pf = make_pf(0, vfs=2)
    root = build(tmp_path, pf)
    # A PF representor (port name pf0) next to the uplink and VF representors.
    tree = SysfsTree(root)
    tree._netdev(
        os.path.join(tree.devices, pf.address),
        NetdevSpec(name="pfrep0", mac="02:03:00:00:00:00", switch_id=SWITCH, port_name="pf0"),
    )
    inv = discover(root)
    assert inv.pfs[0].netdev == "up5f0"
    assert {vf.representor.name for vf in inv.vfs() if vf.representor} == {
        rep_name(0, 0),
        rep_name(0, 1),
    }
    assert inv.vf_by_representor("pfrep0") is None
    assert inv.vf_by_representor("up5f0") is None


# -- VF and PF facts -------------------------------------------------------------


def test_vf_without_driver_has_driver_none(tmp_path: Path) -> None:
    root = build(tmp_path, make_pf(0))
    os.unlink(os.path.join(root, "sys", "bus", "pci", "devices", vf_addr(0, 1), "driver"))
    inv = discover(root)
    assert inv.vf(vf_addr(0, 1)).driver is None
    assert [vf.driver for vf in inv.pfs[0].vfs] == ["nfp", None, "nfp", "nfp"]
    # Still an SR-IOV VF with its representor.
    assert inv.representor_of(vf_addr(0, 1)).name == rep_name(0, 1)


def test_numa_node_minus_one_is_unknown(tmp_path: Path) -> None:
    root = build(tmp_path, make_pf(1))
    with open(
        os.path.join(root, "sys", "bus", "pci", "devices", vf_addr(1, 0), "numa_node"), "w"
    ) as f:
        f.write("-1\n")
    inv = discover(root)
    assert inv.vf(vf_addr(1, 0)).numa_node is None
    assert inv.vf(vf_addr(1, 1)).numa_node == 1


def test_missing_representor_names_vf_and_pf(tmp_path: Path) -> None:
    root = build(tmp_path, make_pf(0), make_pf(1))
    remove_netdev(root, rep_name(1, 2))
    inv = discover(root)
    assert inv.vf(vf_addr(1, 2)).representor is None
    with pytest.raises(RepresentorNotFound) as exc:
        inv.representor_of(vf_addr(1, 2))
    msg = str(exc.value)
    assert f"VF 2 of PF {pf_addr(1)}" in msg
    assert SWITCH in msg and "pf1 vf2" in msg
    with pytest.raises(RepresentorNotFound):
        find_representor(root, pf_addr(1), 2)
    # The neighbours are unaffected.
    assert inv.representor_of(vf_addr(1, 1)).name == rep_name(1, 1)


def test_pf_not_in_switchdev_says_so(tmp_path: Path) -> None:
    root = build(tmp_path, make_pf(0), make_pf(0, bus=0x81, switch_id=None))
    inv = discover(root)
    legacy = inv.pf(pf_addr(0, 0x81))
    assert not legacy.switchdev and legacy.switch_id is None
    assert legacy.netdev == "up81f0"
    vf = inv.vf(vf_addr(0, 0, 0x81))
    assert not vf.switchdev and vf.capabilities == () and vf.representor is None
    with pytest.raises(RepresentorNotFound, match="not in switchdev mode") as exc:
        inv.representor_of(vf.address)
    assert f"VF 0 of PF {pf_addr(0, 0x81)}" in str(exc.value)
    # The switchdev PF next to it is unaffected.
    assert inv.representor_of(vf_addr(0, 0)).name == rep_name(0, 0)


def test_find_representor_of_absent_vf_index(tmp_path: Path) -> None:
    root = build(tmp_path, make_pf(0, vfs=2))
    with pytest.raises(DiscoveryError, match=f"PF {pf_addr(0)} has no VF 7"):
        find_representor(root, pf_addr(0), 7)


# -- addresses given by callers --------------------------------------------------


def test_uppercase_and_short_pci_addresses_are_accepted(tmp_path: Path) -> None:
    root = build(tmp_path, make_pf(2, bus=0xAF))
    inv = discover(root)
    wanted = vf_addr(2, 1, 0xAF)  # 0000:af:0a.1
    assert wanted == "0000:af:0a.1"
    for given in (wanted.upper(), "AF:0A.1", " 0000:af:0a.1 ", "af:0a.1"):
        assert inv.vf(given).address == wanted
    assert inv.pf("0000:AF:00.2").address == pf_addr(2, 0xAF)
    assert find_representor(root, "0000:AF:00.2", 1).name == rep_name(2, 1, 0xAF)


@pytest.mark.parametrize(
    "bad", ["0000:05:08.8", "0000:05:20.1", "05:08", "0000:05:08.1x", "", "0000-05-08.1", "g0:00.0"]
)
def test_malformed_pci_address_names_field_and_value(tmp_path: Path, bad: str) -> None:
    inv = discover(build(tmp_path, make_pf(0)))
    with pytest.raises(InvalidValue) as exc:
        inv.vf(bad)
    assert exc.value.field == "pci_address"
    assert exc.value.value == bad
    assert "pci_address" in str(exc.value) and repr(bad) in str(exc.value)
    with pytest.raises(InvalidValue) as exc:
        find_representor(str(tmp_path), bad, 0)
    assert exc.value.field == "pf_address"


def test_absent_pci_address_is_not_found(tmp_path: Path) -> None:
    inv = discover(build(tmp_path, make_pf(0)))
    with pytest.raises(NotFound, match="0000:05:1f.7 is not a virtual function"):
        inv.vf("0000:05:1F.7")
    with pytest.raises(NotFound, match="not an SR-IOV physical function"):
        inv.pf(vf_addr(0, 0))


def test_pf_given_as_vf(tmp_path: Path) -> None:
    inv = discover(build(tmp_path, make_pf(0)))
    with pytest.raises(NotAVirtualFunction, match="0000:05:00.0 is a physical function"):
        inv.vf(pf_addr(0))
    with pytest.raises(NotAVirtualFunction):
        inv.representor_of(pf_addr(0))


def test_root_that_is_not_a_sysfs_tree(tmp_path: Path) -> None:
    (tmp_path / "sys" / "class").mkdir(parents=True)
    a_file = tmp_path / "file"
    a_file.write_text("x")
    for root in (tmp_path, tmp_path / "absent", a_file):
        with pytest.raises(DiscoveryError, match="is not a sysfs tree"):
            discover(str(root))


def test_empty_sysfs_tree_has_no_pfs(tmp_path: Path) -> None:
    root = build(tmp_path)
    inv = discover(root)
    assert inv.pfs == () and list(inv.vfs()) == []
    with pytest.raises(NotFound, match=r"0 VFs found"):
        inv.vf("0000:05:08.0")


# -- pure parsers ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("pf0vf3", VfPortName(None, 0, 3)),
        ("pf1vf15", VfPortName(None, 1, 15)),
        ("vf3", VfPortName(None, None, 3)),
        ("3", VfPortName(None, None, 3)),
        ("0", VfPortName(None, None, 0)),
        ("127", VfPortName(None, None, 127)),
        ("c1pf0vf3", VfPortName(1, 0, 3)),
        ("c12pf2vf40", VfPortName(12, 2, 40)),
        ("p0", None),
        ("p1", None),
        ("pf0", None),
        ("c1pf0", None),
        ("pf0vf", None),
        ("vf", None),
        ("", None),
        ("vf-1", None),
        ("pf0vf3 ", None),
        ("PF0VF3", None),
        ("pf0sf3", None),
        ("c1", None),
    ],
)
def test_parse_vf_port_name(text: str, expected: VfPortName | None) -> None:
    assert parse_vf_port_name(text) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("0000:05:08.1", "0000:05:08.1"),
        ("0000:AF:1F.7", "0000:af:1f.7"),
        ("05:08.1", "0000:05:08.1"),
        ("1:2:3.4", "0001:02:03.4"),
        ("ffff:ff:1f.7", "ffff:ff:1f.7"),
    ],
)
def test_pci_address_normalises(value: str, expected: str) -> None:
    assert types.pci_address(value) == expected
    assert str(types.PciAddress.parse(value)) == expected


@pytest.mark.parametrize(
    "value",
    [
        "0000:05:20.0",
        "0000:05:08.8",
        "00000:05:08.1",
        "0000:005:08.1",
        "05.08.1",
        "x",
        None,
        5,
        "0000:05:08.1.2",
    ],
)
def test_pci_address_rejects(value: object) -> None:
    with pytest.raises(InvalidValue) as exc:
        types.pci_address(value, "pf_address")
    assert exc.value.field == "pf_address" and exc.value.value == value


def test_pci_address_daemon_form() -> None:
    assert types.PciAddress.parse("0000:af:0b.1").daemon_form() == "0000:AF:0B.1"


@pytest.mark.parametrize(
    ("value", "expected"),
    [("fa:16:3e:00:00:01", "fa:16:3e:00:00:01"), ("FA:16:3E:AB:CD:EF", "fa:16:3e:ab:cd:ef")],
)
def test_mac_normalises(value: str, expected: str) -> None:
    assert types.mac_address(value) == expected
    assert types.unicast_mac(value) == expected


@pytest.mark.parametrize(
    "value",
    [
        "fa:16:3e:00:00",
        "fa:16:3e:00:00:01:02",
        "fa-16-3e-00-00-01",
        "fa16.3e00.0001",
        "zz:16:3e:00:00:01",
        "",
        None,
        0xFA163E000001,
    ],
)
def test_mac_rejects(value: object) -> None:
    with pytest.raises(InvalidValue) as exc:
        types.mac_address(value, "vf_settings.mac")
    assert exc.value.field == "vf_settings.mac" and exc.value.value == value


def test_multicast_mac_is_not_a_port_mac() -> None:
    assert types.mac_address("01:00:5e:00:00:01") == "01:00:5e:00:00:01"
    with pytest.raises(InvalidValue, match="multicast"):
        types.unicast_mac("01:00:5e:00:00:01")
    with pytest.raises(InvalidValue, match="multicast"):
        types.unicast_mac("ff:ff:ff:ff:ff:ff")


@pytest.mark.parametrize(
    "value", ["eth0", "snab12p0r7", "a", "x" * 15, "br-int", "vlan.10", "a_b@c+d"]
)
def test_ifname_accepts(value: str) -> None:
    assert types.ifname(value) == value


@pytest.mark.parametrize(
    "value",
    [
        "../x",
        "a/b",
        "a b",
        "x" * 16,
        "",
        ".",
        "..",
        "eth0:1",
        "tab\t",
        "ü",
        None,
        7,
        "a\0b",
        "\neth0",
    ],
)
def test_ifname_rejects(value: object) -> None:
    with pytest.raises(InvalidValue) as exc:
        types.ifname(value, "new_name")
    assert exc.value.field == "new_name" and exc.value.value == value
    assert "new_name" in str(exc.value)


@pytest.mark.parametrize(
    ("check", "value"), [(types.ifname, "eth0\n"), (types.driver_name, "nfp\n")]
)
def test_trailing_newline_is_rejected(check: object, value: str) -> None:
    with pytest.raises(InvalidValue):
        check(value)  # type: ignore[operator]


@pytest.mark.parametrize(
    ("value", "ok"),
    [
        (68, True),
        (1500, True),
        (9000, True),
        (65535, True),
        (67, False),
        (65536, False),
        (0, False),
        (-1, False),
        ("1500", False),
        (1500.0, False),
        (True, False),
        (None, False),
    ],
)
def test_mtu(value: object, ok: bool) -> None:
    if ok:
        assert types.mtu(value) == value
    else:
        with pytest.raises(InvalidValue) as exc:
            types.mtu(value)
        assert exc.value.field == "mtu"


@pytest.mark.parametrize(
    ("value", "ok"),
    [
        (0, True),
        (1, True),
        (4094, True),
        (4095, False),
        (-1, False),
        ("10", False),
        (True, False),
        (False, False),
        (10.0, False),
    ],
)
def test_vlan(value: object, ok: bool) -> None:
    if ok:
        assert types.vlan_id(value) == value
    else:
        with pytest.raises(InvalidValue) as exc:
            types.vlan_id(value, "vf_settings.vlan")
        assert exc.value.field == "vf_settings.vlan"


@pytest.mark.parametrize(
    ("value", "ok"),
    [
        ("vfio-pci", True),
        ("nfp", True),
        ("mlx5_core", True),
        ("../nfp", False),
        ("a b", False),
        ("", False),
        ("x" * 65, False),
        (None, False),
    ],
)
def test_driver_name(value: object, ok: bool) -> None:
    if ok:
        assert types.driver_name(value) == value
    else:
        with pytest.raises(InvalidValue):
            types.driver_name(value)


@pytest.mark.parametrize(
    ("value", "ok"),
    [
        (0, True),
        (4095, True),
        (4096, False),
        (-1, False),
        (True, False),
        ("1", False),
    ],
)
def test_vf_index(value: object, ok: bool) -> None:
    if ok:
        assert types.vf_index(value) == value
    else:
        with pytest.raises(InvalidValue):
            types.vf_index(value)


@pytest.mark.parametrize(
    ("value", "ok"),
    [
        ("auto", True),
        ("enable", True),
        ("disable", True),
        ("up", False),
        ("", False),
        (1, False),
    ],
)
def test_link_state(value: object, ok: bool) -> None:
    if ok:
        assert types.link_state(value) == value
    else:
        with pytest.raises(InvalidValue):
            types.link_state(value)


def test_refresh_vf_rereads_one_vf_after_a_rebind(tmp_path: Path) -> None:
    """After a driver change only that VF's driver and netdev are read again;
    the result equals a full rediscovery."""
    from smartnic_vif.host.discovery import refresh_vf
    from smartnic_vif.host.kernel import SimulatedKernel
    from smartnic_vif.sim.host import SimulatedHost

    host = SimulatedHost.create(str(tmp_path / "h"), pfs=1, vfs_per_pf=2,
                                with_ovs=False, with_forwarder=False)
    try:
        before = discover(host.dir)
        vf = before.pfs[0].vfs[1]
        SimulatedKernel(host.dir).bind_driver(vf.address, "vfio-pci")
        refreshed = refresh_vf(before, vf.address)
        assert refreshed.vf(vf.address).driver == "vfio-pci"
        assert refreshed.vf(vf.address).netdev is None
        assert refreshed == discover(host.dir)
        assert before.vf(vf.address).driver == "nfp"  # the old one is untouched
    finally:
        host.destroy()


# -- the shortcuts of a big host's discovery read what the long way read --------------


def test_device_links_ending_in_dotdot_are_resolved_from_the_netdev(tmp_path: Path) -> None:
    """The kernel writes a netdev's ``device`` link as ``../../../<device>``;
    a tree whose links say ``../..`` (the same place) is read the same."""
    root = build(tmp_path, make_pf(0, form="vfY"), make_pf(1, form="vfY"))
    before = discover(root)
    class_net = os.path.join(root, "sys", "class", "net")
    for name in os.listdir(class_net):
        link = os.path.join(netdev_dir(root, name), "device")
        if os.path.islink(link):
            os.unlink(link)
            os.symlink("../..", link)
    after = discover(root)
    # Without a PF number in the port name, only the device link places a
    # representor on one of two PFs of a switch.
    assert after == before
    assert after.vf(vf_addr(1, 2)).representor.name == rep_name(1, 2)  # type: ignore[union-attr]


def test_vf_ids_are_read_per_vf_without_sriov_vf_device(tmp_path: Path) -> None:
    root = build(tmp_path, make_pf(0), make_pf(1))
    before = discover(root)
    assert {(vf.vendor_id, vf.product_id) for vf in before.vfs()} == {("19ee", "6003")}
    for function in (0, 1):
        os.unlink(os.path.join(root, "sys", "bus", "pci", "devices", pf_addr(function),
                               "sriov_vf_device"))
    vf_device = os.path.join(root, "sys", "bus", "pci", "devices", vf_addr(1, 3), "device")
    with open(vf_device, "w") as f:
        f.write("0x6004\n")
    after = discover(root)
    assert after.vf(vf_addr(1, 3)).product_id == "6004"
    assert [vf for vf in after.vfs() if vf.address != vf_addr(1, 3)] == [
        vf for vf in before.vfs() if vf.address != vf_addr(1, 3)]


def test_a_vf_netdev_is_found_by_its_device_link(tmp_path: Path) -> None:
    root = build(tmp_path, make_pf(0))
    inv = discover(root)
    assert [vf.netdev for vf in inv.vfs()] == [f"vf5f0n{i}" for i in range(4)]


def test_rename_representor_changes_only_that_representor(tmp_path: Path) -> None:
    from smartnic_vif.host.discovery import rename_representor

    root = build(tmp_path, make_pf(0), make_pf(1))
    found = discover(root)
    old = rep_name(1, 2)
    renamed = rename_representor(found, old, "tapport0")
    assert renamed.representor_of(vf_addr(1, 2)).name == "tapport0"
    assert renamed.vf_by_representor(old) is None
    changed = [(a.address, b.representor) for a, b in zip(found.vfs(), renamed.vfs(), strict=True)
               if a != b]
    assert [address for address, _ in changed] == [vf_addr(1, 2)]
    # What sysfs says after the same rename, read by discovery.
    rename_netdev(root, old, "tapport0")
    assert discover(root) == renamed
    # A name no representor has changes nothing.
    assert rename_representor(found, "tap-none", "x") is found


def test_a_host_remembers_the_name_before_its_own_renames(tmp_path: Path) -> None:
    from types import SimpleNamespace

    from smartnic_vif.host.backend import Host

    root = build(tmp_path, make_pf(0))
    host = Host(SimpleNamespace(sysfs_root=root, kernel_backend="linux"))
    rep = rep_name(0, 1)
    assert host.inventory().representor_of(vf_addr(0, 1)).name == rep  # kept from now on
    host._renamed(rep, "tapA")
    host._renamed("tapA", "tapB")  # renamed again: the first name is kept
    assert host.name_before_renames("tapB") == rep
    assert host.inventory().representor_of(vf_addr(0, 1)).name == "tapB"
    host._renamed("tapB", rep)  # back to its name: nothing to remember
    assert host.name_before_renames(rep) == rep
    assert host.name_before_renames("tapB") == "tapB"
    assert host.inventory().representor_of(vf_addr(0, 1)).name == rep


def test_a_host_discovers_again_for_a_representor_it_kept_no_good_name_for(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from types import SimpleNamespace

    from smartnic_vif.host import backend
    from smartnic_vif.host.backend import Host

    root = build(tmp_path, make_pf(0))
    # The links that exist are those sysfs lists (no real netdevs here).
    monkeypatch.setattr(backend.netdev, "exists", lambda name: os.path.lexists(
        os.path.join(root, "sys", "class", "net", name)))
    host = Host(SimpleNamespace(sysfs_root=root, kernel_backend="linux"))
    rep, vf = rep_name(0, 1), vf_addr(0, 1)
    # Kept while another process had renamed the representor...
    rename_netdev(root, rep, "tapother")
    assert host.inventory().representor_of(vf).name == "tapother"
    kept = host.inventory()
    assert host.representor(vf).name == "tapother" and host.inventory() is kept
    # ...which it has given back its name since: discovered again.
    rename_netdev(root, "tapother", rep)
    assert host.representor(vf).name == rep
    assert host.inventory() is not kept
    # Kept while the representor was missing from sysfs (read mid-rename).
    remove_netdev(root, rep_name(0, 2))
    host.inventory(refresh=True)
    shutil.rmtree(tmp_path / "sys")
    build(tmp_path, make_pf(0))
    assert host.representor(vf_addr(0, 2)).name == rep_name(0, 2)
