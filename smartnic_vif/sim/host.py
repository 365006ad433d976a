"""The simulated SmartNIC host.

One directory holds everything: a generated sysfs tree (PFs, VFs, drivers,
``phys_switch_id``/``phys_port_name``), per-VF kernel state for the simulated
kernel backend, a private OVS (userspace datapath), a virtio-forwarder
simulator, the claim database and an oslo.config file that points every part
of the project at this host. Representors, PF uplinks and VF netdevs are real
veth pairs: the representor in the root namespace, the VF end in a namespace
of its own, so packets really cross OVS.

A manifest (``sim.json``) listing every name is written *before* anything is
created, so :meth:`SimulatedHost.destroy` can clean up after a failure
halfway, from another process.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from pyroute2 import IPRoute, netns

from smartnic_vif.host.kernel import SIM_STATE_DIR, SimulatedKernel
from smartnic_vif.host.offload import SIM_OFFLOAD_FILE, sim_offload_state
from smartnic_vif.sim.forwarder import DEFAULT_MAX_RELAYS, MAX_RELAYS_LIMIT
from smartnic_vif.sim.forwarder import read_state as forwarder_state
from smartnic_vif.sim.sysfs_tree import (
    PORT_NAME_FORMS,
    VENDORS,
    NetdevSpec,
    PfSpec,
    SysfsTree,
    VfSpec,
    port_name,
)

MANIFEST = "sim.json"
CONFIG = "smartnic-vif.conf"
# What create makes in its directory (the manifest last: destroy removes it
# only once the rest is gone). Destroy removes these and nothing else.
MADE_ENTRIES = ("sys", SIM_STATE_DIR, "ovs", "forwarder", "state", "vhost", CONFIG, MANIFEST)
# What ``set_offload`` turns on or off.
OFFLOAD_PARTS = ("ovs", "representors", "eswitch")
IP = shutil.which("ip") or "/usr/sbin/ip"
NSENTER = shutil.which("nsenter") or "/usr/bin/nsenter"


class SimulatorError(RuntimeError):
    pass


class SimulatorValueError(SimulatorError):
    """A value given to :meth:`SimulatedHost.create` that it refuses, before
    anything is made. ``parameter`` is the argument's name (the CLI names the
    option instead)."""

    def __init__(self, parameter: str, value: object, reason: str) -> None:
        self.parameter, self.value, self.reason = parameter, value, reason
        super().__init__(f"invalid {parameter} {value!r}: {reason}")


def _mac(prefix: int, a: int, b: int, c: int) -> str:
    return f"02:{prefix:02x}:{a:02x}:{b:02x}:{c >> 8:02x}:{c & 0xFF:02x}"


NETNS_DIRS = ("/run/netns", "/var/run/netns")


def _netns_dir_propagation(pid: str) -> dict[str, str] | None:
    """The propagation tags (``shared``, ``master``: peer group ids) of the
    netns directory's mount as process ``pid`` sees it; None if it is not a
    mount there or cannot be read."""
    try:
        with open(f"/proc/{pid}/mountinfo") as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    found = None
    for line in lines:
        fields = line.split()
        if len(fields) > 6 and fields[4] in NETNS_DIRS and "-" in fields:
            tags = fields[6:fields.index("-")]
            found = dict(t.split(":", 1) for t in tags if ":" in t)  # the topmost one wins
    return found


def _candidate_pids() -> Iterator[str]:
    """Our ancestors first (the mount namespace we were started from is
    usually our parent's), then every process."""
    pid = os.getppid()
    while pid > 0:
        yield str(pid)
        try:
            with open(f"/proc/{pid}/stat") as f:
                pid = int(f.read().rpartition(")")[2].split()[1])
        except (OSError, ValueError, IndexError):
            break
    yield from (entry for entry in os.listdir("/proc") if entry.isdigit())


def _netns_mount_namespace() -> list[str]:
    """The argv prefix that runs a command in the mount namespace our netns
    directory receives its mounts from, if ours is only a slave of it (as
    under ``ip netns exec``); else nothing.

    ``ip netns add`` pins a namespace with a bind mount on /run/netns/NAME.
    Made in a slave mount namespace, that mount never reaches the master: the
    namespace would be invisible to every later command and die with the last
    process of ours. Made in the master's (the namespace that holds the
    directory's peer group, shared and a slave of nothing), it propagates to
    every mount namespace that follows it, ours included. Only the mount
    namespace changes: links are still made in our network namespace.
    """
    tags = _netns_dir_propagation("self")
    owner = None
    seen: set[str] = set()
    while tags and "master" in tags and tags["master"] not in seen:
        group = tags["master"]
        seen.add(group)
        owner = next((pid for pid in _candidate_pids()
                      if (_netns_dir_propagation(pid) or {}).get("shared") == group), None)
        if owner is None:
            return []  # no process shows the master: do as ip netns would
        tags = _netns_dir_propagation(owner)
    return [NSENTER, f"--mount=/proc/{owner}/ns/mnt", "--"] if owner else []


def _ip_batch(commands: list[str], force: bool = False) -> None:
    """Run ``ip -batch`` (where namespaces outlive us: see
    :func:`_netns_mount_namespace`); it stops at the first failing line
    unless ``force``."""
    if not commands:
        return
    proc = subprocess.run(  # noqa: S603 - fixed argv, batch text on stdin, no shell
        [*_netns_mount_namespace(), IP, *(["-force"] if force else []), "-batch", "-"],
        input="\n".join(commands) + "\n",
        text=True,
        capture_output=True,
    )
    if proc.returncode != 0:
        raise SimulatorError(f"ip -batch failed: {proc.stderr.strip()}")


def _link_exists(name: str) -> bool:
    with IPRoute() as ipr:
        return bool(ipr.link_lookup(ifname=name))


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def stop_pid(pidfile: str, timeout: float = 5.0) -> None:
    """Stop the process named in ``pidfile`` (TERM, then KILL)."""
    try:
        with open(pidfile) as f:
            pid = int(f.read().strip())
    except (OSError, ValueError):
        return
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while _pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.02)
    if _pid_alive(pid):
        os.kill(pid, signal.SIGKILL)


@dataclass
class SimLayout:
    """Names and paths of one simulated host; derivable from the manifest."""

    dir: str
    sim_id: str
    pfs: int
    vfs_per_pf: int
    legacy_pfs: int
    port_name_form: str
    driver: str
    # The forwarder's relay slots (the daemon's MAX_RELAYS follows its DPDK
    # build: 32 with Debian's). A manifest from before it has the default.
    max_relays: int = DEFAULT_MAX_RELAYS
    # Whether the host has a network namespace of its own (``host_netns``)
    # for its representors, uplinks and OVS, instead of its creator's.
    own_netns: bool = False

    @property
    def host_netns(self) -> str | None:
        """The host's own network namespace (its "root namespace"), if it has one."""
        return f"sn{self.sim_id}-host" if self.own_netns else None

    @property
    def sysfs_root(self) -> str:
        return self.dir

    @property
    def ovs_dir(self) -> str:
        return os.path.join(self.dir, "ovs")

    @property
    def forwarder_dir(self) -> str:
        return os.path.join(self.dir, "forwarder")

    @property
    def state_path(self) -> str:
        return os.path.join(self.dir, "state")

    @property
    def vhost_dir(self) -> str:
        return os.path.join(self.dir, "vhost")

    @property
    def config_file(self) -> str:
        return os.path.join(self.dir, CONFIG)

    @property
    def ovsdb_connection(self) -> str:
        return "unix:" + os.path.join(self.ovs_dir, "db.sock")

    @property
    def port_control_endpoint(self) -> str:
        return "ipc://" + os.path.join(self.forwarder_dir, "port_control")

    @property
    def stats_endpoint(self) -> str:
        return "ipc://" + os.path.join(self.forwarder_dir, "stats")

    @property
    def wire_netns(self) -> str:
        return f"sn{self.sim_id}-wire"

    def pf_specs(self) -> list[PfSpec]:
        switch_id = "00154d" + self.sim_id + "a0b0c0"
        specs = []
        total = self.pfs + self.legacy_pfs
        for p in range(total):
            switchdev = p < self.pfs
            # Switchdev PFs are functions of one NIC sharing one eswitch; legacy
            # PFs are a second, classic SR-IOV NIC on the next bus.
            bus, function = (0x05, p) if switchdev else (0x81, p - self.pfs)
            address = f"0000:{bus:02x}:00.{function}"
            netdev = NetdevSpec(
                name=f"sn{self.sim_id}p{p}",
                mac=_mac(0x10, int(self.sim_id[:2], 16), p, 0xFFFF),
                switch_id=switch_id if switchdev else None,
                port_name=f"p{function}" if switchdev else None,
            )
            pf = PfSpec(
                address=address,
                function=function,
                driver=self.driver,
                numa_node=p % 2,
                netdev=netdev,
                switchdev=switchdev,
            )
            for i in range(self.vfs_per_pf):
                n = function * self.vfs_per_pf + i
                vf_bus = bus + n // 192
                slot, func = 0x08 + (n % 192) // 8, n % 8
                vf_netdev = NetdevSpec(
                    name=f"sn{self.sim_id}p{p}v{i}",
                    mac=_mac(0x20, int(self.sim_id[:2], 16), p, i),
                )
                rep = (
                    NetdevSpec(
                        name=f"sn{self.sim_id}p{p}r{i}",
                        mac=_mac(0x30, int(self.sim_id[:2], 16), p, i),
                        switch_id=switch_id,
                        port_name=port_name(self.port_name_form, function, i),
                    )
                    if switchdev
                    else None
                )
                pf.vfs.append(
                    VfSpec(
                        address=f"0000:{vf_bus:02x}:{slot:02x}.{func}",
                        index=i,
                        netdev=vf_netdev,
                        representor=rep,
                    )
                )
            specs.append(pf)
        return specs

    def vf_netns(self, pf: int, vf: int) -> str:
        return f"sn{self.sim_id}-vf{pf}-{vf}"

    def links(self) -> list[str]:
        """Root-namespace links this host makes (deleting one end of a veth
        deletes both)."""
        names = []
        for pf in self.pf_specs():
            if pf.switchdev:
                names.append(pf.netdev.name)
            names += [vf.representor.name for vf in pf.vfs if vf.representor]
        return names

    def namespaces(self) -> list[str]:
        names = [self.wire_netns]
        for p, pf in enumerate(self.pf_specs()):
            if pf.switchdev:
                names += [self.vf_netns(p, vf.index) for vf in pf.vfs]
        if self.host_netns:
            names.append(self.host_netns)  # last: destroy deletes it after the rest
        return names


class SimulatedHost:
    """Create, inspect and destroy a simulated SmartNIC host in ``dir``."""

    def __init__(self, layout: SimLayout) -> None:
        self.layout = layout

    # -- construction -----------------------------------------------------
    @classmethod
    def create(
        cls,
        dir: str,
        pfs: int = 2,
        vfs_per_pf: int = 8,
        port_name_form: str = "pfXvfY",
        driver: str = "nfp",
        legacy_pfs: int = 0,
        with_ovs: bool = True,
        with_forwarder: bool = True,
        max_relays: int = DEFAULT_MAX_RELAYS,
        hw_offload: bool = True,
        own_netns: bool = False,
    ) -> SimulatedHost:
        """Build a host in ``dir``. With ``own_netns`` the host gets a network
        namespace of its own, ``sn<id>-host``, made first and deleted by
        :meth:`destroy`: its representors, uplinks and OVS live there instead
        of in the caller's namespace, so several hosts with OVS can run side by
        side (see :meth:`inside`)."""
        if port_name_form not in PORT_NAME_FORMS:
            raise SimulatorValueError("port_name_form", port_name_form,
                                      f"expected one of {PORT_NAME_FORMS}")
        if driver not in VENDORS:
            raise SimulatorValueError("driver", driver, f"expected one of {list(VENDORS)}")
        for parameter, value, low, high in (
            ("pfs", pfs, 1, 8), ("legacy_pfs", legacy_pfs, 0, 8),
            ("vfs_per_pf", vfs_per_pf, 1, 256), ("max_relays", max_relays, 1, MAX_RELAYS_LIMIT),
        ):
            if not low <= value <= high:
                raise SimulatorValueError(parameter, value, f"expected {low}-{high}")
        dir = os.path.abspath(dir)
        if with_ovs and not own_netns and _link_exists("ovs-netdev"):
            # The userspace datapath's tap has a fixed name: a second
            # userspace OVS in this namespace cannot open its datapath.
            raise SimulatorError(
                "another userspace-datapath OVS is running in this network namespace "
                "(link ovs-netdev exists); destroy that simulated host first"
            )
        if os.path.exists(os.path.join(dir, MANIFEST)):
            raise SimulatorValueError("dir", dir, "it already holds a simulated host; "
                                      "destroy it first")
        if os.path.lexists(dir) and not os.path.isdir(dir):
            raise SimulatorValueError("dir", dir, "not a directory")
        if os.path.isdir(dir) and (present := sorted(os.listdir(dir))):
            # destroy removes only what create made, so create never mixes
            # its files with somebody else's.
            shown = ", ".join(present[:5]) + (", ..." if len(present) > 5 else "")
            raise SimulatorValueError(
                "dir", dir, f"not empty ({shown}) and holds no simulated host: "
                "give sim create a new or empty directory")
        os.makedirs(dir, exist_ok=True)
        layout = SimLayout(
            dir=dir,
            sim_id=secrets.token_hex(2),
            pfs=pfs,
            vfs_per_pf=vfs_per_pf,
            legacy_pfs=legacy_pfs,
            port_name_form=port_name_form,
            driver=driver,
            max_relays=max_relays,
            own_netns=own_netns,
        )
        with open(os.path.join(dir, MANIFEST), "w") as f:
            json.dump(asdict(layout), f, indent=1)
        host = cls(layout)
        try:
            if layout.host_netns:
                _ip_batch([f"netns add {layout.host_netns}"])
            with host.inside():
                if layout.host_netns:
                    _ip_batch(["link set lo up"])
                host._build(with_ovs, with_forwarder, hw_offload)
        except BaseException:
            host.destroy()
            raise
        return host

    @classmethod
    def load(cls, dir: str) -> SimulatedHost:
        path = os.path.join(os.path.abspath(dir), MANIFEST)
        try:
            with open(path) as f:
                data = json.load(f)
        except FileNotFoundError:
            raise SimulatorError(f"no simulated host in {dir} ({path} missing)") from None
        return cls(SimLayout(**data))

    def _build(self, with_ovs: bool, with_forwarder: bool, hw_offload: bool = True) -> None:
        lay = self.layout
        specs = lay.pf_specs()
        tree = SysfsTree(lay.dir)
        tree.skeleton([lay.driver, "vfio-pci"])
        for pf in specs:
            tree.add_pf(pf, total_vfs=max(lay.vfs_per_pf, 64))
        for d in (lay.state_path, lay.vhost_dir, lay.forwarder_dir):
            os.makedirs(d, exist_ok=True)
        self._write_kernel_state(specs)
        self._write_offload_state(specs)
        self._make_netdevs(specs)
        if with_ovs:
            from smartnic_vif.sim.ovs import PrivateOVS

            ovs = PrivateOVS(lay.ovs_dir)
            ovs.start()
            if hw_offload:
                # A SmartNIC host is set up to offload (tc-policy stays
                # "none"). ovs-vswitchd then gives each port a tc ingress
                # qdisc, which makes unplugs slower.
                ovs.vsctl("set", "Open_vSwitch", ".", "other_config:hw-offload=true")
        if with_forwarder:
            self._start_forwarder()
        self._write_config()

    def _write_kernel_state(self, specs: list[PfSpec]) -> None:
        state_dir = os.path.join(self.layout.dir, SIM_STATE_DIR, "vfs")
        os.makedirs(state_dir, exist_ok=True)
        for p, pf in enumerate(specs):
            for vf in pf.vfs:
                with open(os.path.join(state_dir, vf.address + ".json"), "w") as f:
                    json.dump(self._initial_vf_state(p, pf, vf), f, sort_keys=True)

    def _write_offload_state(self, specs: list[PfSpec]) -> None:
        """What a SmartNIC host set up for offload reports: devlink puts its
        switchdev PFs in switchdev mode (legacy ones in legacy) and every
        representor has hw-tc-offload on (``offload.json``, read by
        :class:`~smartnic_vif.host.offload.SimulatedOffload`)."""
        self._save_offload_state({
            "eswitch_mode": {pf.address: "switchdev" if pf.switchdev else "legacy"
                             for pf in specs},
            "hw_tc_offload": {vf.address: True for pf in specs if pf.switchdev
                              for vf in pf.vfs},
        })

    def _save_offload_state(self, state: dict[str, Any]) -> None:
        path = os.path.join(self.layout.dir, SIM_OFFLOAD_FILE)
        with open(path + ".tmp", "w") as f:
            json.dump(state, f, sort_keys=True)
        os.replace(path + ".tmp", path)

    def offload_state(self) -> dict[str, Any]:
        """The simulated offload state: ``eswitch_mode`` per PF,
        ``hw_tc_offload`` per VF's representor."""
        return sim_offload_state(self.layout.dir)

    def set_offload(self, on: bool, parts: Sequence[str] = OFFLOAD_PARTS,
                    vfs: Sequence[str] | None = None, pfs: Sequence[str] | None = None) -> None:
        """Turn offload on or off, as an operator could on a real host:
        ``ovs`` sets (or removes) OVS's other_config:hw-offload, ``representors``
        the representors' hw-tc-offload (of ``vfs``, or all), ``eswitch`` the
        eswitch mode of PFs ``pfs`` (or all switchdev PFs) to switchdev or
        legacy. The representors stay, so doctor can see the mismatch."""
        for part in parts:
            if part not in OFFLOAD_PARTS:
                raise SimulatorValueError("parts", part, f"expected one of {OFFLOAD_PARTS}")
        specs = self.layout.pf_specs()
        known_vfs = [vf.address for pf in specs if pf.switchdev for vf in pf.vfs]
        known_pfs = [pf.address for pf in specs if pf.switchdev]
        for parameter, given, known in (("vf", vfs, known_vfs), ("pf", pfs, known_pfs)):
            for address in given or []:
                if address not in known:
                    raise SimulatorValueError(parameter, address,
                                              f"not a switchdev {parameter.upper()} of the "
                                              f"simulated host in {self.dir}")
        if "ovs" in parts:
            from smartnic_vif.sim.ovs import PrivateOVS

            ovs = PrivateOVS(self.layout.ovs_dir)
            if not ovs.is_running():
                raise SimulatorError(f"the simulated host in {self.dir} has no running OVS")
            if on:
                ovs.vsctl("set", "Open_vSwitch", ".", "other_config:hw-offload=true")
            else:
                ovs.vsctl("remove", "Open_vSwitch", ".", "other_config", "hw-offload")
        state = self.offload_state()
        if "representors" in parts:
            for address in vfs if vfs is not None else known_vfs:
                state["hw_tc_offload"][address] = on
        if "eswitch" in parts:
            for address in pfs if pfs is not None else known_pfs:
                state["eswitch_mode"][address] = "switchdev" if on else "legacy"
        self._save_offload_state(state)

    def _initial_vf_state(self, p: int, pf: PfSpec, vf: VfSpec) -> dict[str, Any]:
        """A VF's simulated kernel state as the driver's probe leaves it (at
        create and after a reboot)."""
        return {
            "mac": "00:00:00:00:00:00",
            "vlan": 0,
            "qos": 0,
            "trust": False,
            "spoofchk": True,
            "link_state": "auto",
            "netdev": vf.netdev.name if vf.netdev and pf.switchdev else None,
            "netdev_mac": vf.netdev.mac if vf.netdev else None,
            "netns": self.layout.vf_netns(p, vf.index) if pf.switchdev else None,
            "net_drivers": [self.layout.driver],
        }

    def _make_netdevs(self, specs: list[PfSpec]) -> None:
        lay = self.layout
        cmds = [f"netns add {lay.wire_netns}"]
        for p, pf in enumerate(specs):
            if not pf.switchdev:
                continue
            cmds.append(
                f"link add name {pf.netdev.name} address {pf.netdev.mac} type veth "
                f"peer name sn{lay.sim_id}w{p} netns {lay.wire_netns}"
            )
            for vf in pf.vfs:
                cmds.append(f"netns add {lay.vf_netns(p, vf.index)}")
                cmds.append(self._representor_pair(p, vf))
        _ip_batch(cmds)

    def _representor_pair(self, p: int, vf: VfSpec) -> str:
        """The ``ip -batch`` line making a VF's representor and its netdev."""
        assert vf.representor and vf.netdev
        ns = self.layout.vf_netns(p, vf.index)
        return (
            f"link add name {vf.representor.name} address {vf.representor.mac} type veth "
            f"peer name {vf.netdev.name} address {vf.netdev.mac} netns {ns}"
        )

    def _start_forwarder(self) -> None:
        lay = self.layout
        pidfile = os.path.join(lay.forwarder_dir, "forwarder.pid")
        log = open(os.path.join(lay.forwarder_dir, "forwarder.log"), "ab")  # noqa: SIM115
        with log:
            subprocess.Popen(  # noqa: S603 - our own module, argv only
                [
                    sys.executable,
                    "-m",
                    "smartnic_vif.sim.forwarder",
                    "--port-control",
                    lay.port_control_endpoint,
                    "--stats",
                    lay.stats_endpoint,
                    "--pidfile",
                    pidfile,
                    "--state-file",
                    os.path.join(lay.forwarder_dir, "relays.json"),
                    # ADD_SOCK refuses a VF that is not in this host's sysfs
                    # or not bound to a driver DPDK can use, as the daemon does.
                    "--sysfs-root",
                    lay.sysfs_root,
                    "--max-relays",
                    str(lay.max_relays),
                ],
                stdout=log,
                stderr=log,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                close_fds=True,
            )
        sock = lay.port_control_endpoint.removeprefix("ipc://")
        deadline = time.monotonic() + 15
        while not (os.path.exists(pidfile) and os.path.exists(sock)):
            if time.monotonic() > deadline:
                raise SimulatorError(
                    "virtio-forwarder simulator did not start; see "
                    f"{lay.forwarder_dir}/forwarder.log"
                )
            time.sleep(0.02)

    def restart_forwarder(self) -> None:
        """Stop the simulated virtio-forwarder and start it again on the same
        endpoints. Like the real daemon, the new process knows no relay: every
        ADD_SOCK pair is gone until someone adds it again."""
        pidfile = os.path.join(self.layout.forwarder_dir, "forwarder.pid")
        stop_pid(pidfile)
        # A process that had to be killed left its pidfile, which would make
        # the new one look ready before it is.
        with contextlib.suppress(FileNotFoundError):
            os.unlink(pidfile)
        self._start_forwarder()

    def _write_config(self) -> None:
        lay = self.layout
        ours = {
            "sysfs_root": lay.sysfs_root,
            "kernel_backend": "simulated",
            "ovsdb_connection": lay.ovsdb_connection,
            "default_datapath_type": "netdev",
            "forwarder_port_control_endpoint": lay.port_control_endpoint,
            "forwarder_stats_endpoint": lay.stats_endpoint,
            "state_path": lay.state_path,
            "vhostuser_socket_dir": lay.vhost_dir,
        }
        sections: dict[str, dict[str, Any]] = {
            "os_vif_smartnic": ours,
            "os_vif_agilio_ovs": ours,
            # os-vif's stock ovs plugin, for normal ports and comparisons.
            "os_vif_ovs": {
                "ovsdb_connection": lay.ovsdb_connection,
                "default_qos_type": "linux-noop",
            },
        }
        lines = [
            "# Written by 'smartnic-vif sim create': points every part of smartnic-vif",
            f"# at the simulated SmartNIC host in {lay.dir}.",
        ]
        for name, opts in sections.items():
            lines.append(f"\n[{name}]")
            lines += [f"{k} = {v}" for k, v in opts.items()]
        with open(lay.config_file, "w") as f:
            f.write("\n".join(lines) + "\n")

    # -- reboot -------------------------------------------------------------
    def reboot(self) -> None:
        """Do to this host what a reboot does to a real one.

        Its services stop; every VF comes back with the PF's driver and its
        default settings; representors and VF netdevs are made anew, so they
        have their kernel names, are down, have the default MTU and are not
        promiscuous; then OVS starts again on the same database (ports stay
        in OVSDB, their interfaces must be found again) and the forwarder
        starts with no relay. What is on disk (the claims, OVSDB) survives.
        Services start again only if the host has them (``with_ovs``,
        ``with_forwarder`` at create). Run it in the network namespace the
        host was created in (a host with its own namespace is rebooted
        there)."""
        lay = self.layout
        missing = sorted(set(lay.namespaces()) - set(self.existing_namespaces()))
        if missing:
            raise SimulatorError(
                f"cannot reboot the simulated host in {lay.dir}: namespace "
                f"{', '.join(missing)} is missing (destroy the host and create it again)"
            )
        with self.inside():
            self._reboot(lay.pf_specs())

    def _reboot(self, specs: list[PfSpec]) -> None:
        from smartnic_vif.sim.ovs import PrivateOVS

        lay = self.layout
        ovs = PrivateOVS(lay.ovs_dir)
        has_ovs = os.path.exists(ovs.db_path)
        # The forwarder writes its relay table as soon as it listens.
        has_forwarder = os.path.exists(os.path.join(lay.forwarder_dir, "relays.json"))
        stop_pid(os.path.join(lay.forwarder_dir, "forwarder.pid"))
        ovs.stop()
        self._reset_vfs(specs)
        self._remake_representors(specs)
        self.kernel_names_in_sysfs()
        if has_ovs:
            ovs.start()
        if has_forwarder:
            self.restart_forwarder()  # stopped already: cleans up and starts it

    def _reset_vfs(self, specs: list[PfSpec]) -> None:
        """Each VF bound to the PF's driver again (its netdev is back in the
        sysfs tree), with the state the driver's probe leaves."""
        kern = SimulatedKernel(self.layout.dir)
        for p, pf in enumerate(specs):
            for vf in pf.vfs:
                initial = self._initial_vf_state(p, pf, vf)
                kern.bind_driver(vf.address, kern.read_state(vf.address)["net_drivers"][0])
                with kern.state(vf.address) as state:
                    state.clear()
                    state.update(initial)

    def _remake_representors(self, specs: list[PfSpec]) -> None:
        """Delete each VF's veth pair (found by the namespace its VF end is
        in, whatever the representor is called now) and make it again."""
        lay = self.layout
        pairs = [(p, vf) for p, pf in enumerate(specs) if pf.switchdev for vf in pf.vfs]
        nsids = set()
        with IPRoute() as ipr:
            for p, vf in pairs:
                fd = os.open(os.path.join("/var/run/netns", lay.vf_netns(p, vf.index)),
                             os.O_RDONLY)
                try:
                    nsids.add(ipr.get_netnsid(fd=fd)["nsid"])
                finally:
                    os.close(fd)
            current = [
                msg.get_attr("IFLA_IFNAME")
                for msg in ipr.get_links()
                if msg.get_attr("IFLA_LINK_NETNSID") in nsids
            ]
        _ip_batch([f"link del {name}" for name in current]
                  + [self._representor_pair(p, vf) for p, vf in pairs])

    def remake_representor(self, vf_address: str) -> None:
        """Make a VF's representor (and its VF netdev) again, as ``create``
        made them, after something deleted the pair; sysfs names the new
        representor by its kernel name. Run it where the host lives (its
        own namespace: inside :meth:`inside`)."""
        for p, pf in enumerate(self.layout.pf_specs()):
            for vf in pf.vfs:
                if vf.address == vf_address and vf.representor is not None:
                    _ip_batch([self._representor_pair(p, vf)])
                    self.kernel_names_in_sysfs()
                    return
        raise SimulatorError(f"no switchdev VF {vf_address} on this simulated host")

    def kernel_names_in_sysfs(self) -> None:
        """The sysfs tree, which follows renames, names every representor by
        its kernel name again (found by its port name), as representors made
        anew are named (after a reboot, or a test that remade one)."""
        kern = SimulatedKernel(self.layout.dir)
        devices = os.path.join(self.layout.dir, "sys", "bus", "pci", "devices")
        for pf in self.layout.pf_specs():
            wanted = {vf.representor.port_name: vf.representor.name
                      for vf in pf.vfs if vf.representor is not None}
            net = os.path.join(devices, pf.address, "net")
            for name in sorted(os.listdir(net)):
                try:
                    with open(os.path.join(net, name, "phys_port_name")) as f:
                        port_name = f.read().strip()
                except OSError:
                    continue
                kernel_name = wanted.get(port_name)
                if kernel_name is not None and kernel_name != name:
                    kern.netdev_renamed(name, kernel_name)

    # -- inspection -------------------------------------------------------
    @property
    def dir(self) -> str:
        return self.layout.dir

    @property
    def config_file(self) -> str:
        return self.layout.config_file

    def vf_namespace(self, vf_address: str) -> str:
        for p, pf in enumerate(self.layout.pf_specs()):
            for vf in pf.vfs:
                if vf.address == vf_address and pf.switchdev:
                    return self.layout.vf_netns(p, vf.index)
        raise SimulatorError(f"no switchdev VF {vf_address} on this simulated host")

    def vf_netdev(self, vf_address: str) -> str:
        for pf in self.layout.pf_specs():
            for vf in pf.vfs:
                if vf.address == vf_address and vf.netdev:
                    return vf.netdev.name
        raise SimulatorError(f"no VF {vf_address} on this simulated host")

    def kernel_state(self, vf_address: str) -> dict[str, Any]:
        return SimulatedKernel(self.dir).read_state(vf_address)

    def relays(self) -> list[dict[str, Any]]:
        try:
            data = forwarder_state(os.path.join(self.layout.forwarder_dir, "relays.json"))
        except (OSError, ValueError):
            return []
        return list(data.get("relays", data) if isinstance(data, dict) else data)

    @contextlib.contextmanager
    def inside(self) -> Iterator[None]:
        """Run the calling thread (and the processes it starts) in the host's
        own network namespace, if it has one, and back afterwards; for a host
        without one, nothing changes. Other threads stay where they are: a
        privileged helper forked meanwhile acts in the host's namespace."""
        name = self.layout.host_netns
        if name is None:
            yield
            return
        try:
            target = os.open(os.path.join(NETNS_DIRS[1], name), os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            raise SimulatorError(
                f"the network namespace {name} of the simulated host in {self.dir} "
                "is missing (destroy the host and create it again)") from None
        own = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        try:
            netns.setns(target, flags=0)
            try:
                yield
            finally:
                netns.setns(own, flags=0)
        finally:
            os.close(own)
            os.close(target)

    def _has_own_netns_gone(self) -> bool:
        name = self.layout.host_netns
        return name is not None and not os.path.exists(os.path.join(NETNS_DIRS[1], name))

    def existing_links(self) -> list[str]:
        """This host's links still present (in its own namespace, if it has
        one: none once that is gone)."""
        if self._has_own_netns_gone():
            return []
        wanted = set(self.layout.links())
        with self.inside(), IPRoute() as ipr:
            return sorted(
                name
                for msg in ipr.get_links()
                if (name := msg.get_attr("IFLA_IFNAME")) in wanted
            )

    def existing_namespaces(self) -> list[str]:
        present = set(netns.listnetns())
        return sorted(ns for ns in self.layout.namespaces() if ns in present)

    def processes(self) -> dict[str, int]:
        """Live processes of this host, by name."""
        found = {}
        for name, pidfile in (
            ("ovsdb-server", os.path.join(self.layout.ovs_dir, "ovsdb-server.pid")),
            ("ovs-vswitchd", os.path.join(self.layout.ovs_dir, "ovs-vswitchd.pid")),
            ("virtio-forwarder-sim", os.path.join(self.layout.forwarder_dir, "forwarder.pid")),
        ):
            try:
                with open(pidfile) as f:
                    pid = int(f.read().strip())
            except (OSError, ValueError):
                continue
            if _pid_alive(pid):
                found[name] = pid
        return found

    # -- teardown -----------------------------------------------------------
    def destroy(self) -> None:
        """Stop this host's processes and remove its netdevs, namespaces and
        what create made in its directory (the directory too, if nothing
        else is left in it). Safe after a partial create and safe to repeat."""
        lay = self.layout
        errors = []
        stop_pid(os.path.join(lay.forwarder_dir, "forwarder.pid"))
        try:
            from smartnic_vif.sim.ovs import PrivateOVS

            PrivateOVS(lay.ovs_dir).stop()
        except Exception as e:  # keep tearing down the rest
            errors.append(f"stopping OVS: {e}")
        cmds = [f"link del {name}" for name in self.existing_links()]
        cmds += [f"netns del {ns}" for ns in self.existing_namespaces()]
        left: list[str] = []
        try:
            # -force: one failing line must not skip the rest. The links are
            # in the host's own namespace, if it has one (deleted last).
            with contextlib.nullcontext() if self._has_own_netns_gone() else self.inside():
                _ip_batch(cmds, force=True)
        except SimulatorError as e:
            # A link may go by itself meanwhile (a deleted namespace takes
            # its veth peers along, asynchronously): only what is still
            # there after a moment is an error, and then the directory (with
            # the manifest) stays so destroy can be run again.
            deadline = time.monotonic() + 2
            while (left := self.existing_links() + self.existing_namespaces()) and (
                time.monotonic() < deadline
            ):
                time.sleep(0.05)
            if left:
                errors.append(f"{e} (still present: {', '.join(left)})")
        if os.path.exists(os.path.join(lay.dir, MANIFEST)) and not left:
            errors += _remove_made(lay.dir)
        if errors:
            raise SimulatorError("; ".join(errors))

    def kept_entries(self) -> list[str]:
        """What is left in the directory after :meth:`destroy`: files that
        create did not make (the directory then stays)."""
        try:
            return sorted(os.listdir(self.dir))
        except OSError:
            return []

    def __enter__(self) -> SimulatedHost:
        return self

    def __exit__(self, *exc: object) -> None:
        self.destroy()


def _remove_made(dir: str) -> list[str]:
    """Remove what create made in ``dir`` (the manifest last, and only if the
    rest went), then ``dir`` itself if nothing else is in it. Errors, if any."""
    errors: list[str] = []
    for name in MADE_ENTRIES:
        path = os.path.join(dir, name)
        if name == MANIFEST and errors:
            break  # keep it: destroy can be run again
        try:
            if os.path.isdir(path) and not os.path.islink(path):
                shutil.rmtree(path)
            else:
                os.remove(path)
        except FileNotFoundError:
            continue
        except OSError as e:
            errors.append(f"removing {path}: {e}")
    with contextlib.suppress(OSError):
        os.rmdir(dir)  # only if empty: whatever else is there is not ours
    return errors
