"""Host.vf_lock: one VF at a time across threads and processes, different
VFs side by side. Each waiter proves the exclusion with an event, not a
timing."""

from __future__ import annotations

import multiprocessing
import threading
from pathlib import Path
from types import SimpleNamespace

import pytest

from smartnic_vif.host.backend import Host, pci_lock_offset
from smartnic_vif.model.errors import InvalidValue

VF_A, VF_B = "0000:05:08.0", "0000:05:08.1"


def host(state: Path) -> Host:
    return Host(SimpleNamespace(state_path=str(state), sysfs_root="/", kernel_backend="linux"))


def test_offsets_are_unique_per_address() -> None:
    addresses = [f"{d:04x}:{b:02x}:{s:02x}.{f}" for d in (0, 1, 0xFFFF) for b in (0, 5, 0xFF)
                 for s in (0, 1, 0x1F) for f in range(8)]
    assert len({pci_lock_offset(a) for a in addresses}) == len(addresses)


def test_the_same_vf_waits_and_another_vf_does_not(tmp_path: Path) -> None:
    h = host(tmp_path)
    holding = threading.Event()
    release = threading.Event()
    entered: list[str] = []

    def hold() -> None:
        with h.vf_lock(VF_A):
            holding.set()
            release.wait(10)

    holder = threading.Thread(target=hold)
    holder.start()
    assert holding.wait(10)
    # Another VF: no waiting, even while VF_A is held.
    with h.vf_lock(VF_B):
        entered.append(VF_B)
    waiter = threading.Thread(target=lambda: h.vf_lock(VF_A).__enter__() or entered.append(VF_A))
    waiter.start()
    waiter.join(0.3)
    assert entered == [VF_B] and waiter.is_alive()  # still waiting for the holder
    release.set()
    holder.join(10)
    waiter.join(10)
    assert entered == [VF_B, VF_A]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["vfs.lock"]


def _try_lock(state: str, vf: str, out: multiprocessing.Queue) -> None:  # type: ignore[type-arg]
    import fcntl
    import os
    import struct

    fd = os.open(os.path.join(state, "vfs.lock"), os.O_RDWR)
    try:
        fcntl.fcntl(fd, fcntl.F_OFD_SETLK,
                    struct.pack("@hhqqi4x", fcntl.F_WRLCK, os.SEEK_SET, pci_lock_offset(vf), 1, 0))
        out.put("got")
    except OSError:
        out.put("busy")
    finally:
        os.close(fd)


def test_another_process_sees_the_lock(tmp_path: Path) -> None:
    h = host(tmp_path)
    ctx = multiprocessing.get_context("spawn")
    out = ctx.Queue()
    with h.vf_lock(VF_A):
        for vf, expected in ((VF_A, "busy"), (VF_B, "got")):
            p = ctx.Process(target=_try_lock, args=(str(tmp_path), vf, out))
            p.start()
            p.join(30)
            assert out.get(timeout=10) == expected, vf
    p = ctx.Process(target=_try_lock, args=(str(tmp_path), VF_A, out))
    p.start()
    p.join(30)
    assert out.get(timeout=10) == "got"  # released on leaving the block


def test_a_bad_address_is_refused_before_any_file_is_made(tmp_path: Path) -> None:
    with pytest.raises(InvalidValue), host(tmp_path / "state").vf_lock("../05:08.0"):
        pass
    assert not (tmp_path / "state").exists()
