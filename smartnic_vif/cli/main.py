"""``smartnic-vif``: inventory, attach/detach, health checks and the simulated host.

Exit codes: 0 success, 1 the operation failed, 2 usage error (bad arguments or
bad input; nothing was changed).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import re
import sys
from collections.abc import Callable, Sequence
from typing import Any

from oslo_config import cfg

from smartnic_vif import conf
from smartnic_vif.model.errors import InvalidValue, SmartNICError

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


class UsageError(Exception):
    """Bad input at the command line; maps to exit code 2."""


def load_config(args: argparse.Namespace) -> Any:
    """Read the config files into oslo.config's global CONF (which os-vif's own
    ovs plugin and oslo.privsep read too) and return ``[os_vif_smartnic]``.

    Every option is read once here, so a bad value is reported as usage
    (naming the file and the option) before anything runs."""
    files = list(args.config_file or [])
    if not files and os.path.exists(conf.DEFAULT_CONFIG_FILE):
        files = [conf.DEFAULT_CONFIG_FILE]
    for f in files:
        if not os.path.isfile(f):
            raise UsageError(f"--config-file {f}: no such file")
    # No CONF.reset(): it would also wipe the capability defaults that
    # oslo.privsep set, and the forked helper would start with none.
    try:
        conf.register(cfg.CONF)
    except cfg.DuplicateOptError:
        pass
    try:
        cfg.CONF(args=[], project="smartnic-vif", default_config_files=files)
    except cfg.Error as e:  # a file that does not parse
        raise UsageError(f"--config-file: {e}") from None
    group = cfg.CONF[conf.GROUP]
    for opt in conf.OPTS:
        try:
            getattr(group, opt.name)
        except (cfg.ConfigFileValueError, ValueError) as e:
            raise UsageError(_bad_option(opt.name, e, files)) from None
    if getattr(args, "sysfs_root", None):
        from smartnic_vif.host.discovery import SysfsReader
        from smartnic_vif.model.errors import DiscoveryError

        try:
            SysfsReader(args.sysfs_root)
        except DiscoveryError:
            raise UsageError(f"--sysfs-root {args.sysfs_root!r}: not a sysfs tree "
                             "(no sys/bus/pci/devices under it)") from None
        cfg.CONF.set_override("sysfs_root", os.path.abspath(args.sysfs_root), group=conf.GROUP)
    return group


_LOCATION_RE = re.compile(r"detail='(?P<file>[^']*)'\) is not valid: (?P<reason>.*)$", re.S)


def _bad_option(name: str, error: Exception, files: Sequence[str]) -> str:
    """One line for an option whose value oslo.config refuses."""
    found = _LOCATION_RE.search(str(error))
    where = found["file"] if found else ", ".join(files) or "the config files"
    reason = found["reason"] if found else str(error)
    return f"{where}: [{conf.GROUP}] {name}: {reason.splitlines()[0] if reason else ''}"


def config_field(name: str) -> str:
    """How to name option ``name`` of ``[os_vif_smartnic]`` in an error: the
    option and the file it was read from (after :func:`load_config`)."""
    try:
        location = cfg.CONF.get_location(name, conf.GROUP)
    except (cfg.Error, ValueError):
        location = None
    source = getattr(location, "detail", None) if location is not None else None
    if source and os.path.isfile(source):
        return f"{name} in [{conf.GROUP}] of {source}"
    return f"{name} (default of [{conf.GROUP}])"


# Which module defines each subcommand (its ``register(sub)`` adds the
# parsers, its handlers do the work). Only the module of the command being
# run is imported (all of them for ``--help`` or a command not listed), and
# each module imports at its top only what all of its commands need: the
# rest (os-vif, OVSDB, ZeroMQ, pyroute2, the privileged helper) is imported
# inside the functions that use it. A read command then loads nothing it
# does not use; `tests/functional/test_cli.py` checks the reads' modules.
# A new command goes here and in its module's register(), and follows the
# same rule.
COMMAND_MODULES = {
    "inventory": "smartnic_vif.cli.commands",
    "sim": "smartnic_vif.cli.commands",
    "attach": "smartnic_vif.cli.ports",
    "detach": "smartnic_vif.cli.ports",
    "pci-spec": "smartnic_vif.cli.ports",
    "status": "smartnic_vif.cli.health",
    "reconcile": "smartnic_vif.cli.health",
    "doctor": "smartnic_vif.cli.health",
    "demo": "smartnic_vif.cli.demo",
}


def command_of(argv: Sequence[str]) -> str | None:
    """The subcommand named in ``argv`` (global options hoisted in front),
    None if there is none."""
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg.split("=", 1)[0] in GLOBAL_OPTIONS:
            i += 1 if "=" in arg else 2
        elif arg.startswith("-"):
            i += 1
        else:
            return arg
    return None


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser, with the subcommands of ``command``'s module only (every
    subcommand when ``command`` is None or unknown)."""
    parser = argparse.ArgumentParser(
        prog="smartnic-vif",
        description="Accelerated VM ports on SmartNIC compute hosts.",
    )
    parser.add_argument("--config-file", action="append", metavar="FILE",
                        help=f"oslo.config file (default {conf.DEFAULT_CONFIG_FILE} if present); "
                        "may be repeated")
    parser.add_argument("--sysfs-root", metavar="DIR",
                        help="read sysfs under DIR instead of the configured sysfs_root")
    parser.add_argument("-v", "--verbose", action="store_true", help="log what happens")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    if command in COMMAND_MODULES:
        modules = [COMMAND_MODULES[command]]
    else:
        modules = list(dict.fromkeys(COMMAND_MODULES.values()))
    for name in modules:
        importlib.import_module(name).register(sub)
    return parser


def _quiet_runtime() -> None:
    """The CLI is its own process: pick oslo.service's threading backend before
    os-vif's imports pick eventlet (deprecated), and keep eventlet's
    deprecation banner off an operator's terminal."""
    import warnings

    import oslo_service.backend as oslo_service_backend

    oslo_service_backend.register_backend_default_hook(
        lambda: oslo_service_backend.BackendType.THREADING
    )
    warnings.filterwarnings("ignore", message=r"\s*Eventlet is deprecated")


def _root_cause(error: BaseException) -> BaseException:
    """os-vif wraps our error (twice, with the whole VIF in each message):
    show the first error of ours in the chain, which names the step and cause."""
    seen = error
    while seen is not None:
        if isinstance(seen, SmartNICError):
            return seen
        seen = seen.__cause__ or seen.__context__  # type: ignore[assignment]
    return error


GLOBAL_OPTIONS = ("--config-file", "--sysfs-root")


def hoist_global_options(argv: Sequence[str]) -> list[str]:
    """Accept the global options after the subcommand too
    (``smartnic-vif inventory --config-file F``) by moving them in front."""
    front: list[str] = []
    rest: list[str] = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        name = arg.split("=", 1)[0]
        if name in GLOBAL_OPTIONS:
            if "=" in arg:
                front.append(arg)
            else:
                front.extend(argv[i:i + 2])
                i += 1
        else:
            rest.append(arg)
        i += 1
    return front + rest


def main(argv: Sequence[str] | None = None) -> int:
    _quiet_runtime()
    argv = hoist_global_options(sys.argv[1:] if argv is None else list(argv))
    args = build_parser(command_of(argv)).parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    if not args.verbose:
        # os-vif logs a failed plug with its traceback; the CLI prints the
        # cause itself, once.
        for name in ("os_vif", "smartnic_vif.host.executor"):
            logging.getLogger(name).setLevel(logging.CRITICAL)
    handler: Callable[[argparse.Namespace], int] = args.handler
    try:
        return handler(args)
    except (UsageError, InvalidValue) as e:
        print(f"smartnic-vif {args.command}: {e}", file=sys.stderr)
        return EXIT_USAGE
    except BrokenPipeError:
        # The reader stopped reading (``| head``): not this command's
        # failure. Output goes nowhere from now on, so that the interpreter's
        # last flush does not fail again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK
    except (SmartNICError, OSError, RuntimeError) as e:
        print(f"smartnic-vif {args.command}: {_root_cause(e)}", file=sys.stderr)
        return EXIT_FAILED
    except Exception as e:
        # os-vif's errors, when a command loaded os-vif (reads do not).
        os_vif_exception = sys.modules.get("os_vif.exception")
        if os_vif_exception is None or not isinstance(e, os_vif_exception.ExceptionBase):
            raise
        print(f"smartnic-vif {args.command}: {_root_cause(e)}", file=sys.stderr)
        return EXIT_FAILED


# Commands that only read the host: they run for a fraction of a second.
READ_COMMANDS = frozenset({"inventory", "status", "doctor", "pci-spec"})


def run() -> None:
    """The ``smartnic-vif`` program: :func:`main` in a process of its own.

    Python's cyclic garbage collector is tuned for long-lived processes.
    A read command imports ~400 modules (~47,000 objects the collector
    tracks) in a quarter of a second and exits: the collector's passes over
    them while it runs, and the last pass at exit, cost it 20-25 ms (of
    ~270 on a big host, measured by ``benchmarks/read.py``) and free
    nothing that exiting does not. So a read runs without the collector,
    and any command, once done, freezes its objects (``gc.freeze``) so that
    the exit's pass skips them. Exit handlers and finalizers still run;
    only objects in reference cycles are left to the process's end. Not
    done by :func:`main`, which tests call inside a long-lived process.
    """
    import gc

    if command_of(hoist_global_options(sys.argv[1:])) in READ_COMMANDS:
        gc.disable()
    try:
        status = main()
    finally:
        gc.freeze()
    sys.exit(status)


if __name__ == "__main__":
    # ``python -m smartnic_vif.cli.main``: run the module the subcommands
    # import (this file runs as __main__, a second copy whose UsageError
    # they would not raise).
    from smartnic_vif.cli.main import run as _run

    _run()
