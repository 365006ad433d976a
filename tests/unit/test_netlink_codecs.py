"""The netlink codecs no real kernel here can exercise.

Reading a real PF's VF settings out of its RTM_NEWLINK: the message is built
with pyroute2's own encoder (this machine has no SR-IOV), sent through its
decoder, and read by the code LinuxKernel.get_vf uses. And the one request
rtnl frames by hand, checked byte for byte against pyroute2's encoder."""

from __future__ import annotations

from typing import Any

from pyroute2.netlink.rtnl.ifinfmsg import ifinfmsg

from smartnic_vif.host.kernel import vf_settings_from_link


def vf_info(vf: int, mac: str, vlan: int, qos: int, trust: int, spoofchk: int,
            link_state: int) -> dict[str, Any]:
    return {"attrs": [
        ("IFLA_VF_MAC", {"vf": vf, "mac": mac}),
        ("IFLA_VF_VLAN", {"vf": vf, "vlan": vlan, "qos": qos}),
        ("IFLA_VF_SPOOFCHK", {"vf": vf, "spoofchk": spoofchk}),
        ("IFLA_VF_LINK_STATE", {"vf": vf, "link_state": link_state}),
        ("IFLA_VF_TRUST", {"vf": vf, "trust": trust}),
    ]}


def pf_message(*infos: dict[str, Any]) -> Any:
    msg = ifinfmsg()
    msg["index"] = 7
    msg["attrs"] = [
        ("IFLA_IFNAME", "enp5s0np0"),
        ("IFLA_VFINFO_LIST", {"attrs": [("IFLA_VF_INFO", info) for info in infos]}),
    ]
    msg.encode()
    decoded = ifinfmsg(msg.data)
    decoded.decode()
    return decoded


def test_each_vf_is_read_from_its_own_entry() -> None:
    msg = pf_message(
        vf_info(0, "fa:16:3e:00:00:01", 0, 0, 0, 1, 0),
        vf_info(1, "fa:16:3e:00:00:02", 100, 3, 1, 0, 2),
    )
    assert vf_settings_from_link(msg, 0) == {
        "mac": "fa:16:3e:00:00:01", "vlan": 0, "qos": 0, "trust": False, "spoofchk": True,
        "link_state": "auto",
    }
    assert vf_settings_from_link(msg, 1) == {
        "mac": "fa:16:3e:00:00:02", "vlan": 100, "qos": 3, "trust": True, "spoofchk": False,
        "link_state": "disable",
    }


def test_a_vf_the_pf_does_not_report_is_none() -> None:
    assert vf_settings_from_link(pf_message(vf_info(0, "fa:16:3e:00:00:01", 0, 0, 0, 1, 1)),
                                 5) is None
    plain = ifinfmsg()
    plain["attrs"] = [("IFLA_IFNAME", "eth0")]
    plain.encode()
    decoded = ifinfmsg(plain.data)
    decoded.decode()
    assert vf_settings_from_link(decoded, 0) is None


def test_the_hand_framed_getlink_request_is_what_pyroute2_encodes() -> None:
    from pyroute2.netlink import NLM_F_REQUEST
    from pyroute2.netlink.rtnl import RTM_GETLINK

    from smartnic_vif.host import rtnl

    for name, mask in (("lo", 0), ("enp5s0np0", rtnl.RTEXT_FILTER_VF), ("a" * 15, 0)):
        msg = ifinfmsg()
        msg["attrs"] = [("IFLA_IFNAME", name)] + ([("IFLA_EXT_MASK", mask)] if mask else [])
        msg["header"]["type"] = RTM_GETLINK
        msg["header"]["flags"] = NLM_F_REQUEST
        msg["header"]["sequence_number"] = 0
        msg.encode()
        assert rtnl._getlink_request(name, mask) == bytes(msg.data), name
