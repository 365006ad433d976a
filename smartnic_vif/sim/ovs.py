"""A private, real Open vSwitch for the simulated SmartNIC host.

:class:`PrivateOVS` runs its own ``ovsdb-server`` and ``ovs-vswitchd`` with
every file (database, unix sockets, pidfiles, logs) inside one directory, so it
never touches the system's ``/var/run/openvswitch``. Both daemons are started
with ``--detach`` (OVS's own readiness handshake: the launching process exits
only once the daemon is up) and stopped by the pids in their pidfiles, so a
fresh process that only knows the directory can stop them.

The machine this runs on may have no OVS kernel module: bridges that should
pass traffic must use ``datapath_type=netdev`` (the userspace datapath). By
default ``ovs-vswitchd`` runs with ``--disable-system`` so it does not even
probe the kernel datapath.

Beware: the userspace datapath creates tap devices in the network namespace it
runs in (one named ``ovs-netdev`` plus one per bridge), so two private OVS
instances in the same namespace conflict; give each its own ``netns``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Sequence

from smartnic_vif.model.errors import HostOperationError

# sun_path is 108 bytes including the terminating NUL.
UNIX_PATH_MAX = 107
DEFAULT_SCHEMA = "/usr/share/openvswitch/vswitch.ovsschema"
_SEARCH_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

OVSDB_SERVER = "ovsdb-server"
OVS_VSWITCHD = "ovs-vswitchd"


class PrivateOVSError(HostOperationError):
    """The private Open vSwitch could not be started or stopped."""


def _binary(name: str) -> str:
    path = shutil.which(name) or shutil.which(name, path=_SEARCH_PATH)
    if path is None:
        raise PrivateOVSError(f"{name} not found (is openvswitch-switch installed?)")
    return path


def _proc_state(pid: int) -> str | None:
    """The one-letter state of ``pid`` from /proc, None if there is no such process."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read().decode(errors="replace")
    except (FileNotFoundError, ProcessLookupError):
        return None
    # "pid (comm) S ..." -- comm may contain spaces and parentheses.
    rest = stat[stat.rfind(")") + 2 :]
    return rest[:1] or None


def process_running(pid: int) -> bool:
    """True if ``pid`` exists and is not a zombie (exited, not yet reaped)."""
    return _proc_state(pid) not in (None, "Z", "X")


def _cmdline(pid: int) -> list[str]:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            raw = f.read()
    except OSError:
        return []
    return [a.decode(errors="replace") for a in raw.split(b"\0") if a]


class PrivateOVS:
    """ovsdb-server + ovs-vswitchd confined to ``run_dir``.

    ``start()`` creates ``conf.db`` if missing (an existing one is kept, as on a
    host reboot), starts both daemons and waits until both answer, bounded by
    ``timeout`` seconds. ``stop()`` is idempotent, works after a half-failed
    start and from a new object that only knows ``run_dir``.
    """

    def __init__(
        self,
        run_dir: str,
        *,
        schema: str = DEFAULT_SCHEMA,
        timeout: float = 10.0,
        netns: str | None = None,
        disable_system: bool = True,
    ) -> None:
        self.run_dir = os.path.abspath(run_dir)
        self.schema = schema
        self.timeout = timeout
        self.netns = netns
        self.disable_system = disable_system

    # Paths -----------------------------------------------------------------

    def _path(self, name: str) -> str:
        return os.path.join(self.run_dir, name)

    @property
    def db_path(self) -> str:
        return self._path("conf.db")

    @property
    def db_socket(self) -> str:
        return self._path("db.sock")

    @property
    def connection(self) -> str:
        """OVSDB connection string of this instance (``unix:<run_dir>/db.sock``)."""
        return f"unix:{self.db_socket}"

    def pidfile(self, daemon: str) -> str:
        return self._path(f"{daemon}.pid")

    def logfile(self, daemon: str) -> str:
        return self._path(f"{daemon}.log")

    def ctl_socket(self, daemon: str) -> str:
        return self._path(f"{daemon}.ctl")

    def pid(self, daemon: str) -> int | None:
        """The pid recorded in ``daemon``'s pidfile if that process still runs."""
        pid = self._read_pid(daemon)
        return pid if pid is not None and self._is_ours(daemon, pid) else None

    def is_running(self) -> bool:
        return any(self.pid(d) is not None for d in (OVSDB_SERVER, OVS_VSWITCHD))

    def _check_socket_paths(self) -> None:
        for path in (self.db_socket, self.ctl_socket(OVSDB_SERVER), self.ctl_socket(OVS_VSWITCHD)):
            if len(os.fsencode(path)) > UNIX_PATH_MAX:
                raise PrivateOVSError(
                    f"unix socket path {path!r} is {len(os.fsencode(path))} bytes, longer than "
                    f"the {UNIX_PATH_MAX} bytes a unix socket address can hold; "
                    "use a shorter run_dir"
                )

    def _env(self) -> dict[str, str]:
        env = dict(os.environ)
        for var in ("OVS_RUNDIR", "OVS_DBDIR", "OVS_LOGDIR", "OVS_SYSCONFDIR"):
            env[var] = self.run_dir
        return env

    def _argv(self, argv: Sequence[str]) -> list[str]:
        if self.netns:
            return [_binary("ip"), "netns", "exec", self.netns, *argv]
        return list(argv)

    def _run(self, argv: Sequence[str], what: str, timeout: float | None = None) -> str:
        full = self._argv(argv)
        try:
            res = subprocess.run(  # noqa: S603 - argv list, no shell
                full,
                env=self._env(),
                cwd=self.run_dir,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=timeout if timeout is not None else self.timeout,
                check=False,
            )
        except subprocess.TimeoutExpired as e:
            raise PrivateOVSError(f"{what}: {full[0]} did not finish in {e.timeout}s") from e
        if res.returncode != 0:
            raise PrivateOVSError(
                f"{what} failed (exit {res.returncode}): {(res.stderr or res.stdout).strip()}"
            )
        return res.stdout

    # Start -----------------------------------------------------------------

    def start(self) -> None:
        """Start both daemons; on any failure stop what was started and raise."""
        self._check_socket_paths()
        if self.is_running():
            raise PrivateOVSError(f"a private OVS already runs in {self.run_dir}; stop() it first")
        os.makedirs(self.run_dir, mode=0o700, exist_ok=True)
        deadline = time.monotonic() + self.timeout
        try:
            if not os.path.exists(self.db_path):
                self._run(
                    [_binary("ovsdb-tool"), "create", self.db_path, self.schema],
                    "ovsdb-tool create",
                )
            self._run(
                [
                    _binary(OVSDB_SERVER),
                    self.db_path,
                    f"--remote=punix:{self.db_socket}",
                    "--remote=db:Open_vSwitch,Open_vSwitch,manager_options",
                    f"--pidfile={self.pidfile(OVSDB_SERVER)}",
                    f"--log-file={self.logfile(OVSDB_SERVER)}",
                    f"--unixctl={self.ctl_socket(OVSDB_SERVER)}",
                    "--detach",
                    "--no-chdir",
                    "-vconsole:off",
                ],
                "starting ovsdb-server",
                timeout=_remaining(deadline),
            )
            self._run(
                [_binary("ovs-vsctl"), f"--db={self.connection}", "--no-wait", "init"],
                "ovs-vsctl init",
                timeout=_remaining(deadline),
            )
            argv = [
                _binary(OVS_VSWITCHD),
                self.connection,
                f"--pidfile={self.pidfile(OVS_VSWITCHD)}",
                f"--log-file={self.logfile(OVS_VSWITCHD)}",
                f"--unixctl={self.ctl_socket(OVS_VSWITCHD)}",
                "--detach",
                "--no-chdir",
                "-vconsole:off",
            ]
            if self.disable_system:
                argv.append("--disable-system")
            self._run(argv, "starting ovs-vswitchd", timeout=_remaining(deadline))
            self._wait_until_ready(deadline)
        except BaseException:
            with contextlib.suppress(Exception):
                self.stop()
            raise

    def _wait_until_ready(self, deadline: float) -> None:
        appctl = _binary("ovs-appctl")
        last: Exception | None = None
        for daemon in (OVSDB_SERVER, OVS_VSWITCHD):
            while True:
                try:
                    self._run(
                        [appctl, "-t", self.ctl_socket(daemon), "--timeout=2", "version"],
                        f"{daemon} version",
                        timeout=max(0.1, min(3.0, _remaining(deadline))),
                    )
                    break
                except PrivateOVSError as e:
                    last = e
                if time.monotonic() >= deadline:
                    raise PrivateOVSError(
                        f"{daemon} in {self.run_dir} did not answer within {self.timeout}s: "
                        f"{last}; see {self.logfile(daemon)}"
                    )
                time.sleep(0.05)
        # "init" without --no-wait bumps next_cfg and returns once ovs-vswitchd
        # has applied the database (cur_cfg caught up).
        self._run(
            [
                _binary("ovs-vsctl"),
                f"--db={self.connection}",
                f"--timeout={max(1, int(_remaining(deadline)))}",
                "init",
            ],
            "waiting for ovs-vswitchd to apply the database",
            timeout=max(0.5, _remaining(deadline)),
        )

    # Stop ------------------------------------------------------------------

    def _read_pid(self, daemon: str) -> int | None:
        try:
            with open(self.pidfile(daemon)) as f:
                text = f.read().strip()
        except FileNotFoundError:
            return None
        return int(text) if text.isdigit() and int(text) > 1 else None

    def _is_ours(self, daemon: str, pid: int) -> bool:
        """Guard against pid reuse: the process must be ``daemon`` with our pidfile."""
        if not process_running(pid):
            return False
        argv = _cmdline(pid)
        return (
            bool(argv)
            and os.path.basename(argv[0]) == daemon
            and f"--pidfile={self.pidfile(daemon)}" in argv
        )

    def stop(self, term_timeout: float = 5.0, kill_timeout: float = 5.0) -> None:
        """Stop ovs-vswitchd, then ovsdb-server. Idempotent.

        ovs-vswitchd is first asked to ``exit --cleanup``: the userspace datapath
        makes its tap devices (``ovs-netdev``, bridges, internal ports)
        persistent, and only that cleanup removes them. Then each daemon still
        alive gets SIGTERM, a bounded wait, and SIGKILL.
        """
        errors: list[str] = []
        vswitchd = self._read_pid(OVS_VSWITCHD)
        if vswitchd is not None and self._is_ours(OVS_VSWITCHD, vswitchd):
            self._appctl_exit_cleanup(vswitchd, min(term_timeout, 3.0))
        for daemon in (OVS_VSWITCHD, OVSDB_SERVER):
            pid = self._read_pid(daemon)
            if pid is not None and self._is_ours(daemon, pid):
                if not self._terminate(pid, term_timeout, kill_timeout):
                    errors.append(f"{daemon} (pid {pid}) survived SIGKILL")
                    continue
            for leftover in (self.pidfile(daemon), self.ctl_socket(daemon)):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(leftover)
        if not errors:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.db_socket)
        if errors:
            raise PrivateOVSError(
                f"could not stop the private OVS in {self.run_dir}: " + "; ".join(errors)
            )

    def _appctl_exit_cleanup(self, pid: int, timeout: float) -> None:
        argv = [_binary("ovs-appctl"), "-t", self.ctl_socket(OVS_VSWITCHD), "exit", "--cleanup"]
        try:
            subprocess.run(  # noqa: S603 - argv list, no shell
                argv,
                env=self._env(),
                stdin=subprocess.DEVNULL,
                capture_output=True,
                timeout=timeout,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired):
            return
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and process_running(pid):
            time.sleep(0.01)

    @staticmethod
    def _terminate(pid: int, term_timeout: float, kill_timeout: float) -> bool:
        for sig, wait in ((signal.SIGTERM, term_timeout), (signal.SIGKILL, kill_timeout)):
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                return True
            deadline = time.monotonic() + wait
            while time.monotonic() < deadline:
                if not process_running(pid):
                    return True
                time.sleep(0.01)
        return not process_running(pid)

    # Helpers ---------------------------------------------------------------

    def vsctl(self, *args: str) -> str:
        """Run ``ovs-vsctl`` against this instance (for tests and debugging)."""
        return self._run(
            [
                _binary("ovs-vsctl"),
                f"--db={self.connection}",
                f"--timeout={int(self.timeout)}",
                *args,
            ],
            "ovs-vsctl " + " ".join(args),
        )

    def __enter__(self) -> PrivateOVS:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _remaining(deadline: float) -> float:
    return max(0.1, deadline - time.monotonic())
