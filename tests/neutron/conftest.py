"""Keep Neutron's test base from leaking into the rest of the pytest process.

These tests reuse Neutron's own ML2 test classes, whose base
(``neutron.tests.base.DietTestCase``) registers Neutron's common options on the
process-wide ``oslo_config.cfg.CONF`` at the first ``setUp`` and lowers some
loggers to ERROR. Two problems follow when other test folders run in the same
process:

- Nova (imported by the interop tests, and by ``test_neutron_nova_interop``
  here) registers its own ``[DEFAULT] host``, ``my_ip`` and ``state_path`` on
  the same ``cfg.CONF``. oslo.config refuses a second, different option of the
  same name, so whichever of Nova and Neutron registers second fails with
  ``DuplicateOptError``.
- Logger levels set by one test stay for every later test.
- Neutron's base registers CLI options, so it fails if an earlier test left
  ``cfg.CONF`` parsed.
- ``cfg.CONF.reset()`` (Neutron's base resets at every cleanup) drops every
  ``set_default``, among them oslo.privsep's capabilities of each privileged
  context: a helper forked afterwards would have none.

So each test in this folder runs in its own option "world": the registry of
``cfg.CONF`` is saved before the test, an option Neutron registers over a
different one of the same name replaces it for the duration of the test, and
the saved registry, its set_default values (and the logger levels) come back
afterwards. Neutron's
common options are registered again by the next test (the one-shot guard in
``neutron.common.config`` is put back as well), exactly as the first time.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from neutron.common import config as neutron_config
from oslo_config import cfg

# The loggers neutron.tests.base.DietTestCase.setUp sets to ERROR.
_NEUTRON_TEST_LOGGERS = (
    "neutron",
    "neutron_lib",
    "stevedore",
    "oslo_policy",
    "oslo_concurrency",
    "oslo_db",
    "alembic",
)


@dataclass
class _Registry:
    """A shallow copy of what options a ConfigOpts has registered."""

    opts: dict[str, Any]
    groups: dict[str, Any]
    group_opts: dict[str, dict[str, Any]]
    cli_opts: list[Any]
    deprecated_opts: dict[str, dict[str, Any]]
    # set_default() values, which every cfg.CONF.reset() drops.
    defaults: dict[tuple[str | None, str], Any]

    @classmethod
    def save(cls, conf: cfg.ConfigOpts) -> _Registry:
        return cls(
            opts=dict(conf._opts),
            groups=dict(conf._groups),
            group_opts={name: dict(group._opts) for name, group in conf._groups.items()},
            cli_opts=list(conf._cli_opts),
            deprecated_opts={g: dict(e) for g, e in conf._deprecated_opts.items()},
            defaults={
                (group, name): info["default"]
                for group, opts in _opt_tables(conf)
                for name, info in opts.items()
                if "default" in info
            },
        )

    def restore_defaults(self, conf: cfg.ConfigOpts) -> None:
        """Put back the set_default() values (oslo.privsep sets a context's
        capabilities that way: without them a helper forked later has none)."""
        tables = dict(_opt_tables(conf))
        for (group, name), value in self.defaults.items():
            info = tables.get(group, {}).get(name)
            if info is not None:
                info["default"] = value

    def restore(self, conf: cfg.ConfigOpts) -> None:
        # In place: code holding these containers (or the groups) keeps working.
        _replace(conf._opts, self.opts)
        _replace(conf._groups, self.groups)
        for name, group in self.groups.items():
            _replace(group._opts, self.group_opts[name])
        conf._cli_opts.clear()
        conf._cli_opts.extend(self.cli_opts)
        _replace(conf._deprecated_opts, self.deprecated_opts)


def _opt_tables(conf: cfg.ConfigOpts) -> list[tuple[str | None, dict[str, Any]]]:
    """(group name or None for DEFAULT, its name -> opt info table)."""
    return [(None, conf._opts)] + [(name, g._opts) for name, g in conf._groups.items()]


def _replace(target: dict[Any, Any], content: dict[Any, Any]) -> None:
    target.clear()
    target.update(content)


@pytest.fixture(autouse=True)
def neutron_option_world(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    saved = _Registry.save(cfg.CONF)
    common_registered = neutron_config._COMMON_OPTIONS_ALREADY_REGISTERED
    levels = {name: logging.getLogger(name).level for name in _NEUTRON_TEST_LOGGERS}
    stock_is_registered = cfg._is_opt_registered

    def neutron_wins(opts: dict[str, Any], opt: cfg.Opt) -> bool:
        # Another project's option of the same name (Nova's 'host'...) gives
        # way to Neutron's for this test; the saved registry brings it back.
        existing = opts.get(opt.dest)
        if existing is not None and existing["opt"] != opt:
            del opts[opt.dest]
        return bool(stock_is_registered(opts, opt))

    monkeypatch.setattr(cfg, "_is_opt_registered", neutron_wins)
    # Neutron's base registers CLI options, which oslo.config refuses once the
    # arguments are parsed: a test elsewhere that parsed cfg.CONF without
    # resetting it would fail this one. Neutron's base resets cfg.CONF after
    # every test anyway; this only does it before as well.
    cfg.CONF.reset()
    saved.restore_defaults(cfg.CONF)
    try:
        yield
    finally:
        saved.restore(cfg.CONF)
        # Drops parsed values and the value cache, which may name options
        # that are no longer registered (Neutron's base already resets too),
        # and the defaults, which come back next.
        cfg.CONF.reset()
        saved.restore_defaults(cfg.CONF)
        # The registry no longer holds what the test registered, so Neutron
        # must register its common options again when the next test needs them.
        neutron_config._COMMON_OPTIONS_ALREADY_REGISTERED = common_registered
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)
