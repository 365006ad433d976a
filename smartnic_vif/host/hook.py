"""The user-replaceable vendor hook: an executable run with argv only.

Arguments, in order: phase (pre-plug, post-plug, post-unplug), mode
(passthrough, forwarder), VF PCI address, representor name, port MAC, vhost-user
socket path or ``-``. A non-zero exit or a timeout is an error (and fails a
plug, which is then undone).
"""

from __future__ import annotations

import os
import subprocess

from smartnic_vif.model import types
from smartnic_vif.model.errors import HostOperationError, InvalidValue

PHASES = ("pre-plug", "post-plug", "post-unplug")


def run_hook(
    executable: str,
    timeout: float,
    phase: str,
    mode: str,
    vf_address: str,
    representor: str,
    mac: str,
    vhost_path: str,
) -> None:
    if phase not in PHASES:
        raise InvalidValue("phase", phase, f"expected one of {PHASES}")
    if mode not in ("passthrough", "forwarder"):
        raise InvalidValue("mode", mode, "expected passthrough or forwarder")
    argv = [
        executable,
        phase,
        mode,
        types.pci_address(vf_address, "vf_address"),
        types.ifname(representor, "representor"),
        types.mac_address(mac),
        vhost_path if vhost_path == "-" else types.vhost_socket_path(vhost_path),
    ]
    if not os.path.isabs(executable) or not os.access(executable, os.X_OK):
        raise HostOperationError(f"vendor hook {executable} is not an executable absolute path")
    try:
        proc = subprocess.run(  # noqa: S603 - argv only, never a shell
            argv, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL
        )
    except subprocess.TimeoutExpired:
        raise HostOperationError(
            f"vendor hook {executable} {phase} did not finish within {timeout:g}s"
        ) from None
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        raise HostOperationError(
            f"vendor hook {executable} {phase} exited {proc.returncode}: " + " | ".join(tail)
        )
