"""What the benchmarks share: a network namespace of their own."""

from __future__ import annotations

import ctypes
import shutil
import subprocess

CLONE_NEWNET = 0x40000000


def private_netns() -> None:
    """This process and everything it starts from now on in a fresh network
    namespace: a userspace OVS elsewhere on the machine cannot collide."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.unshare(CLONE_NEWNET) != 0:
        raise OSError(ctypes.get_errno(), "unshare(CLONE_NEWNET)")
    subprocess.run([shutil.which("ip") or "/usr/sbin/ip", "link", "set", "lo", "up"],  # noqa: S603
                   check=True)
