"""The user-replaceable vendor hook: an executable run with argv only.

Arguments, in order: phase (pre-plug, post-plug, post-unplug), mode
(passthrough, forwarder), VF PCI address, representor name, port MAC, vhost-user
socket path or ``-``. A non-zero exit or a timeout is an error (and fails a
plug, which is then undone).

The hook runs in a session and process group of its own. Its exit decides:
once it has exited, what is already in its pipes is read and every process
still in its group ``LEAVE_GRACE`` seconds later is killed (with a warning
naming them), so a background child holding the hook's output can neither
delay the plug by more than that nor outlive it, while a daemon the hook
starts with ``setsid`` has time to leave the group.
On a timeout the whole group is killed. Of each stream only the last
``KEPT_OUTPUT_BYTES`` are kept; a warning says when output was cut.
"""

from __future__ import annotations

import logging
import os
import selectors
import signal
import subprocess
import time
from typing import IO

from smartnic_vif.model import types
from smartnic_vif.model.errors import HostOperationError, InvalidValue

LOG = logging.getLogger(__name__)

PHASES = ("pre-plug", "post-plug", "post-unplug")
KEPT_OUTPUT_BYTES = 4096
_READ_CHUNK = 65536
# How long to wait for killed processes to die (one stuck in the kernel may not).
_KILL_WAIT = 5.0
# How long processes a hook left in its group get to leave it before they are
# killed: a daemon started with ``setsid cmd &`` may not have called setsid()
# yet when the hook exits.
LEAVE_GRACE = 1.0


class _Tail:
    """The last ``KEPT_OUTPUT_BYTES`` of one output stream, and its total size."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.kept = bytearray()
        self.total = 0

    def add(self, chunk: bytes) -> None:
        self.total += len(chunk)
        self.kept += chunk
        if len(self.kept) > KEPT_OUTPUT_BYTES:
            del self.kept[:-KEPT_OUTPUT_BYTES]

    def text(self) -> str:
        return self.kept.decode("utf-8", errors="replace")


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
    what = f"vendor hook {executable} {phase}"
    out, err = _Tail("stdout"), _Tail("stderr")
    proc = subprocess.Popen(  # noqa: S603 - argv only, never a shell
        argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        finished = _read_until_exit(proc, timeout, out, err)
        # The group's id is the hook's pid; it cannot be reused while the
        # hook is an unreaped zombie, so the group is killed before reaping.
        others = (_members_after_grace(proc.pid) if finished
                  else _group_members(proc.pid, exclude=proc.pid))
        if not finished or others:
            _kill_group(proc.pid, others)
        returncode = proc.wait()
        for stream, tail in ((proc.stdout, out), (proc.stderr, err)):
            assert stream is not None
            _drain(stream, tail)
    finally:
        if proc.poll() is None:
            _kill_group(proc.pid, [])
            proc.wait()
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()
    for tail in (out, err):
        if tail.total > KEPT_OUTPUT_BYTES:
            LOG.warning("%s wrote %d bytes to %s; kept only the last %d",
                        what, tail.total, tail.name, KEPT_OUTPUT_BYTES)
    if not finished:
        raise HostOperationError(
            f"{what} did not finish within {timeout:g}s: killed its process group "
            f"(the hook and {len(others)} other process(es))" + _last_lines(err, out, "; ")
        )
    if others:
        LOG.warning("%s exited but left %d process(es) in its process group (pids %s); "
                    "killed them (a hook that means to leave a process running must "
                    "start it in a session of its own, e.g. with setsid)",
                    what, len(others), ", ".join(map(str, others)))
    if returncode != 0:
        raise HostOperationError(f"{what} exited {returncode}" + _last_lines(err, out, ": "))


def _read_until_exit(proc: subprocess.Popen[bytes], timeout: float, *tails: _Tail) -> bool:
    """Keep the tails of the hook's output until the hook itself exits (not
    until its pipes close: a child may hold them). False on timeout."""
    deadline = time.monotonic() + timeout
    pidfd = os.pidfd_open(proc.pid)
    try:
        with selectors.DefaultSelector() as selector:
            selector.register(pidfd, selectors.EVENT_READ, None)
            for stream, tail in zip((proc.stdout, proc.stderr), tails, strict=True):
                assert stream is not None
                selector.register(stream, selectors.EVENT_READ, tail)
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                for key, _ in selector.select(remaining):
                    if key.data is None:
                        return True
                    chunk = os.read(key.fd, _READ_CHUNK)
                    if chunk:
                        key.data.add(chunk)
                    else:
                        selector.unregister(key.fileobj)
    finally:
        os.close(pidfd)


def _drain(stream: IO[bytes], tail: _Tail) -> None:
    """Read what is already in a pipe, without waiting for more."""
    fd = stream.fileno()
    os.set_blocking(fd, False)
    while True:
        try:
            chunk = os.read(fd, _READ_CHUNK)
        except BlockingIOError:
            return
        if not chunk:
            return
        tail.add(chunk)


def _group_members(pgid: int, exclude: int) -> list[int]:
    """Live processes (not zombies) in process group ``pgid``, except ``exclude``."""
    members = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == exclude:
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rpartition(")")[2].split()
        except OSError:
            continue  # it ended while we looked
        # fields: state, ppid, pgrp, ...
        if len(fields) > 2 and fields[0] not in ("Z", "X") and int(fields[2]) == pgid:
            members.append(int(entry))
    return sorted(members)


def _members_after_grace(pgid: int) -> list[int]:
    """Live members of the exited hook's group ``pgid`` (its own pid, the
    unreaped zombie, excluded) once they have ended or left it, or after
    ``LEAVE_GRACE`` seconds."""
    deadline = time.monotonic() + LEAVE_GRACE
    while (members := _group_members(pgid, exclude=pgid)) and time.monotonic() < deadline:
        time.sleep(0.02)
    return members


def _kill_group(pgid: int, members: list[int]) -> None:
    """SIGKILL process group ``pgid`` and wait (a bounded time) until
    ``members`` have died: a signal is delivered, not acted on, at once."""
    pidfds = []
    for pid in members:
        try:
            pidfds.append(os.pidfd_open(pid))
        except ProcessLookupError:
            continue  # already gone
    try:
        try:
            os.killpg(pgid, signal.SIGKILL)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + _KILL_WAIT
        with selectors.DefaultSelector() as selector:
            for fd in pidfds:
                selector.register(fd, selectors.EVENT_READ)
            while selector.get_map() and (remaining := deadline - time.monotonic()) > 0:
                for key, _ in selector.select(remaining):
                    selector.unregister(key.fd)
    finally:
        for fd in pidfds:
            os.close(fd)


def _last_lines(first: _Tail, second: _Tail, prefix: str) -> str:
    text = (first.text() if first.kept.strip() else second.text()).strip()
    if not text:
        return ""
    return prefix + " | ".join(text.splitlines()[-3:])
