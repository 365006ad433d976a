"""The privileged helper started as nova-compute starts it.

nova-compute never forks the helper (the CLI, the demo and the other tests
do): oslo.privsep runs a command, ``[smartnic_vif_privileged] helper_command``
or the root helper Nova hands it (``sudo nova-rootwrap /etc/nova/rootwrap.conf``)
followed by ``privsep-helper --config-file ...``, and appends the context and
socket arguments itself. Here a process that does what ``nova/cmd/compute.py``
does (``tests.fixtures.nova_compute``) plugs and then unplugs a passthrough
port on a simulated SmartNIC host, its helper started through the real
``nova-rootwrap`` with the shipped filter file (``etc/rootwrap.d``) and, in
one case, the shipped ``helper_command`` (``etc/nova-smartnic-vif.conf.sample``).

``sudo`` is left out of the commands: the test runs as root already, and
sudo would drop PYTHONPATH, which points the helper at this checkout.
(oslo.rootwrap also always lets privsep-helper through by a filter of its
own; ``tests/unit/test_rootwrap_filter.py`` checks the shipped lines.)
"""

from __future__ import annotations

import configparser
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from smartnic_vif.host.discovery import discover
from smartnic_vif.sim.host import SimulatedHost
from tests.fixtures.probes import wait_for

pytestmark = pytest.mark.root

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
CONTEXT = "smartnic_vif.host.privileged.context"
SAMPLE = REPO / "etc" / "nova-smartnic-vif.conf.sample"
CAP_NET_ADMIN, CAP_SYS_ADMIN = 12, 21
NET_MTU = 1450


@pytest.fixture
def etc_dir() -> Iterator[Path]:
    """A directory under /etc: the shipped filter takes config files there only."""
    path = Path(tempfile.mkdtemp(prefix="snv-helpercmd-", dir="/etc"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def rootwrap_conf(etc: Path) -> Path:
    """nova's rootwrap.conf, reading the filters this project ships."""
    path = etc / "rootwrap.conf"
    path.write_text(
        "[DEFAULT]\n"
        f"filters_path = {REPO / 'etc' / 'rootwrap.d'}\n"
        f"exec_dirs = {BIN}\n"
        "use_syslog = False\n"
    )
    return path


def shipped_helper_command(rootwrap: Path, nova_conf: Path, smartnic_conf: Path) -> str:
    """The sample's helper_command for files in this test's /etc directory."""
    parser = configparser.ConfigParser(interpolation=None)
    parser.read(SAMPLE)
    argv = shlex.split(parser["smartnic_vif_privileged"]["helper_command"])
    assert argv[:4] == ["sudo", "nova-rootwrap", "/etc/nova/rootwrap.conf", "privsep-helper"]
    own = {
        "/etc/nova/nova.conf": str(nova_conf),
        "/etc/smartnic-vif/smartnic-vif.conf": str(smartnic_conf),
    }
    rest = [own.get(a, a) for a in argv[4:]]
    assert set(own.values()) <= set(rest), rest
    return shlex.join([str(BIN / "nova-rootwrap"), str(rootwrap), "privsep-helper", *rest])


def neutron_port(host: SimulatedHost, port_id: str, mac: str) -> dict[str, Any]:
    """A direct port bound with agilio_ovs, as Nova reads it (VF in pci_slot)."""
    vf = discover(host.dir).pfs[0].vfs[2]
    return {
        "id": port_id, "mac_address": mac,
        "network_id": "5d8a1f57-3c3e-4a51-9b2a-6f7e8d9c0b1a",
        "binding:vnic_type": "direct",
        "binding:vif_type": "agilio_ovs",
        "binding:vif_details": {"bridge_name": "br-int", "datapath_type": "netdev",
                                "port_filter": False},
        "binding:profile": {"capabilities": ["switchdev"], "pci_slot": vf.address},
        "status": "ACTIVE",
    }


def nova_compute(spec: dict[str, Any]) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, TMPDIR="/tmp")  # oslo.privsep's socket: the filter says /tmp
    return subprocess.run(  # noqa: S603
        [sys.executable, "-m", "tests.fixtures.nova_compute", json.dumps(spec)],
        cwd=REPO, capture_output=True, text=True, timeout=120, check=False, env=env,
    )


def run_nova_compute(spec: dict[str, Any]) -> dict[str, Any]:
    done = nova_compute(spec)
    assert done.returncode == 0, done.stderr[-3000:]
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def ovs_interfaces(host: SimulatedHost, port_id: str) -> list[str]:
    out = subprocess.run(  # noqa: S603
        ["ovs-vsctl", f"--db={host.layout.ovsdb_connection}", "--bare", "--columns=name",  # noqa: S607
         "find", "Interface", f"external_ids:iface-id={port_id}"],
        capture_output=True, text=True, check=True,
    ).stdout
    return out.split()


def assert_started_through(result: dict[str, Any], expected_prefix: list[str]) -> None:
    """The helper runs the command oslo.privsep was configured with (plus
    the two arguments oslo.privsep appends), exec'd, not forked by the
    nova-compute process, as root with only the context's capabilities."""
    command, helper = result["command"], result["helper"]
    sock = command[-1]
    assert command == [*expected_prefix, "--privsep_context", CONTEXT,
                       "--privsep_sock_path", sock]
    assert sock.startswith("/tmp/")
    # privsep-helper is a script: the kernel runs its interpreter with its path.
    argv = helper["argv"]
    names = [os.path.basename(a) for a in argv]
    assert "privsep-helper" in names, argv
    helper_args = argv[names.index("privsep-helper") + 1:]
    assert helper_args == command[command.index("privsep-helper") + 1:]
    assert helper["ppid"] != result["pid"]  # a fork would be nova-compute's child
    assert helper["uid"] == 0
    assert helper["cap_eff"] == (1 << CAP_NET_ADMIN) | (1 << CAP_SYS_ADMIN)


def vif_spec(host: SimulatedHost, port_id: str, mac: str, config_files: list[str],
             root_helper: list[str]) -> dict[str, Any]:
    return {
        "config_files": config_files, "root_helper": root_helper,
        "port": neutron_port(host, port_id, mac),
        "network": {"id": "5d8a1f57-3c3e-4a51-9b2a-6f7e8d9c0b1a", "mtu": NET_MTU},
        "instance": "3b2f6a1e-5c4d-4e7f-8a9b-0c1d2e3f4a5b",
    }


@pytest.mark.parametrize("how", ["helper_command", "root_helper"])
def test_nova_compute_plugs_and_unplugs_through_a_helper_started_by_nova_rootwrap(
    sim_host: Callable[..., SimulatedHost], etc_dir: Path, how: str
) -> None:
    host = sim_host(pfs=1, vfs_per_pf=4, with_ovs=True)
    rootwrap = rootwrap_conf(etc_dir)
    plugin_conf = Path(host.config_file).read_text()
    nova_conf = etc_dir / "nova.conf"
    if how == "helper_command":
        # The operator's layout from the user guide: nova.conf plus
        # smartnic-vif.conf, and the shipped helper_command naming both.
        smartnic_conf = etc_dir / "smartnic-vif.conf"
        smartnic_conf.write_text(plugin_conf)
        command = shipped_helper_command(rootwrap, nova_conf, smartnic_conf)
        nova_conf.write_text(f"[smartnic_vif_privileged]\nhelper_command = {command}\n")
        config_files = [str(nova_conf), str(smartnic_conf)]
        root_helper: list[str] = []
        expected_prefix = shlex.split(command)
    else:
        # No helper_command: oslo.privsep builds the command from Nova's
        # root helper and nova-compute's one config file.
        nova_conf.write_text(plugin_conf)
        config_files = [str(nova_conf)]
        root_helper = [str(BIN / "nova-rootwrap"), str(rootwrap)]
        expected_prefix = [*root_helper, "privsep-helper", "--config-file", str(nova_conf)]

    vf = discover(host.dir).pfs[0].vfs[2]
    before = host.kernel_state(vf.address)
    port_id = str(uuid.uuid4())
    mac = "fa:16:3e:5b:11:02"
    spec = vif_spec(host, port_id, mac, config_files, root_helper)

    plugged = run_nova_compute({**spec, "action": "plug"})

    assert_started_through(plugged, expected_prefix)
    # The helper read its tree from the config files on its command line.
    assert plugged["helper_configuration"] == ["simulated", os.path.realpath(host.dir)]
    assert host.kernel_state(vf.address)["mac"] == mac
    tap = ("tap" + port_id)[:14]
    assert ovs_interfaces(host, port_id) == [tap]
    assert wait_for(lambda: gone(plugged["helper"]["pid"])), "the helper outlived nova-compute"

    unplugged = run_nova_compute({**spec, "action": "unplug"})

    assert_started_through(unplugged, expected_prefix)
    assert host.kernel_state(vf.address) == before
    assert ovs_interfaces(host, port_id) == []
    assert wait_for(lambda: gone(unplugged["helper"]["pid"])), "the helper outlived nova-compute"


def test_a_helper_not_given_the_plugins_config_file_is_refused_before_any_change(
    sim_host: Callable[..., SimulatedHost], etc_dir: Path
) -> None:
    # nova-compute reads smartnic-vif.conf, but helper_command names only
    # nova.conf: the helper knows no simulated tree (its default is the real
    # host, /), and the plug stops before the first VF change.
    host = sim_host(pfs=1, vfs_per_pf=4, with_ovs=True)
    rootwrap = rootwrap_conf(etc_dir)
    nova_conf, smartnic_conf = etc_dir / "nova.conf", etc_dir / "smartnic-vif.conf"
    smartnic_conf.write_text(Path(host.config_file).read_text())
    command = shlex.join([str(BIN / "nova-rootwrap"), str(rootwrap), "privsep-helper",
                          "--config-file", str(nova_conf)])
    nova_conf.write_text(f"[smartnic_vif_privileged]\nhelper_command = {command}\n")
    vf = discover(host.dir).pfs[0].vfs[2]
    before = host.kernel_state(vf.address)
    port_id = str(uuid.uuid4())

    done = nova_compute({**vif_spec(host, port_id, "fa:16:3e:5b:11:03",
                                    [str(nova_conf), str(smartnic_conf)], []),
                         "action": "plug"})

    assert done.returncode != 0
    assert (f"the privileged helper changes VFs with kernel_backend linux under sysfs_root / "
            f"(its own configuration), but this process reads kernel_backend simulated under "
            f"{os.path.realpath(host.dir)}") in done.stderr
    assert host.kernel_state(vf.address) == before
    assert ovs_interfaces(host, port_id) == []
