"""Discovery in a child process (:class:`BackgroundDiscovery`), as the read
commands run it beside their OVSDB connection: the same inventory as in
this process, the same errors, no child left behind whatever happens to it.

A test process has threads of earlier tests (OVSDB connections, the
privileged helper's reader), and a process with threads is not forked by
design: each case runs in a forked copy of the test process, which has one
thread, as the CLI has when it forks.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from pathlib import Path

import pytest

from smartnic_vif.host.discovery import BackgroundDiscovery, discover
from smartnic_vif.model.errors import DiscoveryError
from tests.fixtures.forked import in_one_thread
from tests.unit.test_discovery import build, make_pf


def _is_child_gone(pid: int) -> bool:
    """True when ``pid`` is neither running nor a zombie of this process."""
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return True
    return False


@pytest.fixture
def tree(tmp_path: Path) -> str:
    return build(tmp_path, make_pf(0, vfs=8), make_pf(1, vfs=8),
                 make_pf(2, vfs=3, switch_id=None))


def test_the_child_finds_what_discovery_in_this_process_finds(tree: str) -> None:
    in_one_thread(lambda: _finds_what_discovery_here_finds(tree))


def _finds_what_discovery_here_finds(tree: str) -> None:
    pending = BackgroundDiscovery(tree)
    pid = pending.pid
    assert pid is not None and pid != os.getpid()
    found = pending.result()
    assert found == discover(tree)
    assert [len(pf.vfs) for pf in found.pfs] == [8, 8, 3]
    assert any(vf.representor for vf in found.vfs())
    assert _is_child_gone(pid)


def test_the_childs_error_is_raised_with_its_message(tmp_path: Path) -> None:
    in_one_thread(lambda: _error_is_raised_with_its_message(tmp_path))


def _error_is_raised_with_its_message(tmp_path: Path) -> None:
    with pytest.raises(DiscoveryError) as in_process:
        discover(str(tmp_path))
    pending = BackgroundDiscovery(str(tmp_path))
    pid = pending.pid
    assert pid is not None
    with pytest.raises(DiscoveryError) as in_child:
        pending.result()
    assert str(in_child.value) == str(in_process.value)
    assert str(tmp_path) in str(in_child.value)
    assert _is_child_gone(pid)


def test_a_child_killed_before_answering_is_replaced_by_discovery_here(
        tree: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # The child stops itself before discovering; killed there, it never answers.
    monkeypatch.setattr("smartnic_vif.host.discovery._send_discovery",
                        lambda root, fd: os.kill(os.getpid(), signal.SIGKILL))
    in_one_thread(lambda: _killed_child_is_replaced(tree))


def _killed_child_is_replaced(tree: str) -> None:
    warnings: list[str] = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = lambda record: warnings.append(record.getMessage())  # type: ignore[method-assign]
    logging.getLogger("smartnic_vif.host.discovery").addHandler(handler)
    pending = BackgroundDiscovery(tree)
    pid = pending.pid
    assert pid is not None
    found = pending.result()
    assert found == discover(tree)
    assert len(warnings) == 1 and "ended without an answer" in warnings[0]
    assert f"wait status {signal.SIGKILL}" in warnings[0]
    assert _is_child_gone(pid)


def test_closing_without_taking_the_answer_leaves_no_child(tree: str) -> None:
    in_one_thread(lambda: _closing_leaves_no_child(tree))


def _closing_leaves_no_child(tree: str) -> None:
    pending = BackgroundDiscovery(tree)
    pid = pending.pid
    assert pid is not None
    pending.close()
    assert pending.pid is None
    assert _is_child_gone(pid)
    pending.close()  # twice is harmless


def test_a_process_with_threads_is_not_forked(tree: str) -> None:
    in_one_thread(lambda: _not_forked_with_threads(tree))


def _not_forked_with_threads(tree: str) -> None:
    # A lock another thread holds would stay held in a forked child.
    stop = threading.Event()
    other = threading.Thread(target=stop.wait)
    other.start()
    try:
        pending = BackgroundDiscovery(tree)
        assert pending.pid is None
        assert pending.result() == discover(tree)
    finally:
        stop.set()
        other.join()
