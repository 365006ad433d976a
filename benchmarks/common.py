"""What the benchmarks share: a network namespace of their own, and tearing
down the ports and simulated host they made."""

from __future__ import annotations

import ctypes
import shutil
import subprocess
from typing import Any

import os_vif

from smartnic_vif.host import privileged
from smartnic_vif.host.ovsdb import close_all
from smartnic_vif.sim.host import SimulatedHost

CLONE_NEWNET = 0x40000000


def private_netns() -> None:
    """This process and everything it starts from now on in a fresh network
    namespace: a userspace OVS elsewhere on the machine cannot collide."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.unshare(CLONE_NEWNET) != 0:
        raise OSError(ctypes.get_errno(), "unshare(CLONE_NEWNET)")
    subprocess.run([shutil.which("ip") or "/usr/sbin/ip", "link", "set", "lo", "up"],  # noqa: S603
                   check=True)


def tear_down(vifs: list[Any], inst: Any, host: SimulatedHost) -> None:
    """Unplug ``vifs`` (going on past failures), close the OVSDB connections,
    stop the privileged helper and destroy the simulated host."""
    for vif in vifs:
        try:
            os_vif.unplug(vif, inst)
        except Exception as e:  # keep tearing down
            print(f"unplug {vif.id}: {e}")
    close_all()
    privileged.stop()
    host.destroy()
