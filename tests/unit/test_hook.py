"""The vendor hook runner, with real executable hooks written to a temporary
directory: what happens to the processes a hook starts, and to what it prints.

No test asserts a duration; each asserts on processes (by pid) and on what the
call returned or kept.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Iterator

import pytest

from smartnic_vif.host import hook
from smartnic_vif.model.errors import HostOperationError

ARGS = ("0000:05:08.1", "tap3f2a9c1e-4b", "fa:16:3e:12:34:56", "-")
# The hook keeps a few KB of each stream; an error message never carries more.
MESSAGE_BOUND = 8192


@pytest.fixture
def hook_dir() -> Iterator[str]:
    path = tempfile.mkdtemp(prefix="hook-")
    yield path
    # Whatever a failing test left running is killed here, so the suite does
    # not leak processes; the tests themselves assert on these pids.
    for pid in recorded_pids(path):
        if alive(pid):
            os.kill(pid, signal.SIGKILL)
    shutil.rmtree(path, ignore_errors=True)


def write_hook(directory: str, body: str) -> str:
    path = os.path.join(directory, "hook.sh")
    with open(path, "w") as f:
        f.write("#!/bin/sh\n" + textwrap.dedent(body))
    os.chmod(path, stat.S_IRWXU)
    return path


def recorded_pids(directory: str) -> list[int]:
    path = os.path.join(directory, "pids")
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [int(line) for line in f.read().split()]


def alive(pid: int) -> bool:
    """Whether ``pid`` is a running process (a zombie waiting for its parent
    to reap it has already died)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat_line = f.read()
    except FileNotFoundError:
        return False
    return stat_line.rpartition(")")[2].split()[0] not in ("Z", "X")


def run(executable: str, timeout: float = 30.0, phase: str = "pre-plug") -> None:
    hook.run_hook(executable, timeout, phase, "forwarder", *ARGS)


def test_hook_that_hangs_is_killed_with_its_children(hook_dir: str) -> None:
    # The hook's child sleeps; the hook itself waits for it (so it hangs).
    executable = write_hook(hook_dir, f"""\
        sleep 300 &
        echo $! >> {hook_dir}/pids
        echo $$ >> {hook_dir}/pids
        wait
    """)

    with pytest.raises(HostOperationError) as err:
        run(executable, timeout=1)

    assert "did not finish within 1s" in str(err.value)
    assert "process group" in str(err.value)
    pids = recorded_pids(hook_dir)
    assert len(pids) == 2
    assert [pid for pid in pids if alive(pid)] == []


def test_hook_that_exits_leaves_no_process_behind(
    hook_dir: str, caplog: pytest.LogCaptureFixture
) -> None:
    # The hook succeeds at once but its background child keeps the hook's
    # stdout open and would mark, when it ends by itself, that it finished.
    executable = write_hook(hook_dir, f"""\
        (sleep 20; touch {hook_dir}/child-finished) &
        echo $! >> {hook_dir}/pids
        echo started
        exit 0
    """)

    with caplog.at_level(logging.WARNING, logger=hook.__name__):
        run(executable, timeout=60)

    # The call returned on the hook's exit, before the child ended by itself,
    # and the child did not survive it.
    assert not os.path.exists(os.path.join(hook_dir, "child-finished"))
    [child] = recorded_pids(hook_dir)
    assert not alive(child)
    assert any(
        "exited but left" in r.getMessage() and str(child) in r.getMessage()
        for r in caplog.records
    ), caplog.text


def test_a_daemon_the_hook_starts_in_a_session_of_its_own_is_left_running(
    hook_dir: str, caplog: pytest.LogCaptureFixture
) -> None:
    # What the warning and the user guide tell a hook that means to leave a
    # process running to do; the hook exits at once, before its child may
    # have reached setsid().
    executable = write_hook(hook_dir, f"""\
        setsid sleep 30 </dev/null >/dev/null 2>&1 &
        echo $! >> {hook_dir}/pids
        exit 0
    """)

    with caplog.at_level(logging.WARNING, logger=hook.__name__):
        run(executable, timeout=60)

    [daemon] = recorded_pids(hook_dir)
    assert alive(daemon)
    assert os.getsid(daemon) == daemon
    assert not any("exited but left" in r.getMessage() for r in caplog.records), caplog.text


def test_hook_exit_status_decides_even_with_a_child_holding_stderr(hook_dir: str) -> None:
    executable = write_hook(hook_dir, f"""\
        (sleep 20; touch {hook_dir}/child-finished) &
        echo $! >> {hook_dir}/pids
        echo "refused by the vendor" >&2
        exit 3
    """)

    with pytest.raises(HostOperationError) as err:
        run(executable, timeout=60)

    assert "exited 3: refused by the vendor" in str(err.value)
    assert not os.path.exists(os.path.join(hook_dir, "child-finished"))
    [child] = recorded_pids(hook_dir)
    assert not alive(child)


def test_large_output_is_cut_to_a_bounded_tail(
    hook_dir: str, caplog: pytest.LogCaptureFixture
) -> None:
    # One 2 MB line on stderr, then a last word; the hook then fails.
    executable = write_hook(hook_dir, """\
        head -c 2097152 /dev/zero | tr '\\0' x >&2
        echo " the last word" >&2
        exit 1
    """)

    with caplog.at_level(logging.WARNING, logger=hook.__name__), \
            pytest.raises(HostOperationError) as err:
        run(executable)

    message = str(err.value)
    assert message.endswith("the last word")
    assert len(message) < MESSAGE_BOUND
    assert any(
        "2097167 bytes to stderr" in r.getMessage() and "kept only the last" in r.getMessage()
        for r in caplog.records
    ), caplog.text


MEMORY_PROBE = """\
import json, resource, sys
from smartnic_vif.host import hook
from smartnic_vif.model.errors import HostOperationError
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
try:
    hook.run_hook(sys.argv[1], 60.0, "post-plug", "passthrough",
                  "0000:05:08.1", "tap3f2a9c1e-4b", "fa:16:3e:12:34:56", "-")
    message = ""
except HostOperationError as err:
    message = str(err)
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"grew_kib": after - before, "message_len": len(message)}))
"""


def test_large_output_does_not_grow_memory(hook_dir: str) -> None:
    # 50 MB on stdout in one line, then a failure: run in a fresh interpreter
    # so its peak resident size measures only this call.
    size = 50 * 1024 * 1024
    executable = write_hook(hook_dir, f"""\
        head -c {size} /dev/zero | tr '\\0' x
        exit 1
    """)

    out = subprocess.run(  # noqa: S603 - argv only
        [sys.executable, "-c", MEMORY_PROBE, executable],
        capture_output=True, text=True, check=True, env=dict(os.environ),
    )
    result = json.loads(out.stdout)
    assert result["message_len"] < MESSAGE_BOUND
    assert result["grew_kib"] < 8 * 1024, result


def test_quiet_successful_hook(hook_dir: str, caplog: pytest.LogCaptureFixture) -> None:
    executable = write_hook(hook_dir, 'echo "$@" > ' + hook_dir + "/args\n")

    with caplog.at_level(logging.WARNING, logger=hook.__name__):
        run(executable, phase="post-unplug")

    with open(os.path.join(hook_dir, "args")) as f:
        assert f.read().split() == ["post-unplug", "forwarder", *ARGS]
    assert caplog.records == []
