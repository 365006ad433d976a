"""Port health commands: status, reconcile (and ``--watch``), doctor.

``status`` compares every claim with the host (the same comparison
``reconcile`` repairs by, :mod:`smartnic_vif.decisions.repair`) and lists what
unplugs could not restore and host state no claim explains. ``reconcile``
finishes or undoes work a crash interrupted and repairs what drifted on
plugged ports; ``--watch`` keeps doing it as a service (:mod:`.watch`).
``doctor`` checks the host's setup.
"""

from __future__ import annotations

import argparse
import os
from typing import Any

from smartnic_vif.cli import render
from smartnic_vif.cli.main import EXIT_FAILED, EXIT_OK, UsageError, load_config
from smartnic_vif.cli.ports import ReadSession, Session, vif_from_record
from smartnic_vif.model.errors import SmartNICError


def register(sub: Any) -> None:
    p = sub.add_parser("status", help="claims against OVS ports, relays and VF settings")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=cmd_status)

    p = sub.add_parser("reconcile", help="finish or undo work a crash interrupted, and "
                       "repair what drifted on plugged ports")
    p.add_argument("--json", action="store_true")
    p.add_argument("--watch", action="store_true",
                   help="keep running (a systemd service): repair after a virtio-forwarder "
                   "restart or an OVSDB reconnection, and every --interval seconds")
    p.add_argument("--interval", type=float, default=60.0, metavar="SECONDS",
                   help="with --watch: seconds between full passes (default 60)")
    p.set_defaults(handler=cmd_reconcile)

    p = sub.add_parser("doctor", help="check OVSDB, bridge, forwarder, VFs and device_spec")
    p.add_argument("--json", action="store_true")
    p.add_argument("--nova-config", metavar="FILE",
                   help="nova.conf whose [pci] device_spec and alias to check (default "
                   "/etc/nova/nova.conf when readable, else pci_device_spec)")
    p.set_defaults(handler=cmd_doctor)



# -- status / reconcile ----------------------------------------------------------------
def _vif_data(record: Any) -> dict[str, Any] | None:
    """The fields of the VIF an attach journalled (its os-vif primitive),
    read as stored: a read need not load os-vif to know a MAC and a path."""
    vif = record.request.get("vif")
    return dict(vif["versioned_object.data"]) if vif is not None else None


def port_status(session: ReadSession, record: Any,
                ovs_ports: list[Any] | None = None) -> dict[str, Any]:
    """One claim checked against the host; ``drift`` lists what disagrees.
    ``ovs_ports``: the OVS ports with the claim's iface-id, when the caller
    read them all at once (status: one pass over OVSDB, not one per port)."""
    vif = _vif_data(record)
    mac = vif.get("address") if vif is not None else record.request.get("mac")
    drift: list[str] = []
    if ovs_ports is None:
        ovs_ports = session.host.ovsdb.find_ports_by_iface_id(record.port_id)
    info: dict[str, Any] = {
        "port_id": record.port_id, "vf": record.vf_address, "mode": record.mode,
        "phase": record.phase, "steps_started": record.steps_started,
        "ovs_ports": [p.name for p in ovs_ports],
    }
    # A plugged VF port is judged against its journalled plan, as reconcile
    # repairs it (one way to tell drift); the other checks cover the rest.
    planned = record.phase == "plugged" and record.vf_address and record.plan is not None
    if record.phase == "plugged":
        if len(ovs_ports) != 1:
            drift.append(f"expected one OVS port with iface-id {record.port_id}, "
                         f"found {len(ovs_ports)}")
        elif not planned and ovs_ports[0].external_ids.get("attached-mac") != mac:
            drift.append(f"OVS attached-mac {ovs_ports[0].external_ids.get('attached-mac')} "
                         f"is not the port MAC {mac}")
    else:
        drift.append(f"interrupted in phase {record.phase}: run reconcile")
    # A plugged port's plan is observed once: its VF settings and relay
    # serve the fields below too (not read a second time).
    observed = _observe(session, record.plan, ovs_ports) if planned else None
    if record.vf_address and record.phase == "plugged":
        if observed is not None and observed.vf_settings is not None:
            settings = observed.vf_settings
        else:
            settings = session.host.vf_settings(record.vf_address)
        info["vf_mac"] = settings.get("mac")
        if not planned and settings.get("mac") != mac:
            drift.append(f"VF MAC is {settings.get('mac')}, expected {mac}")
        driver = session.host.vf_driver(record.vf_address)
        info["vf_driver"] = driver
        if record.mode == "forwarder":
            # A claim os-vif's plug made (Nova) records the plugin's
            # request, whose socket path is "vhost_path".
            path = vif.get("path") if vif is not None else record.request.get("vhost_path")
            if path and observed is not None and path in observed.relays:
                paired = observed.relays[path]
            else:
                paired = session.host.forwarder.query_pci(path) if path else None
            info["relay"] = str(paired) if paired else None
            if not planned and (paired is None or str(paired) != record.vf_address):
                drift.append(f"no virtio-forwarder relay pairs {record.vf_address} with {path}")
            if not planned and driver != session.group.vfio_driver:
                drift.append(f"VF driver is {driver}, expected {session.group.vfio_driver}")
    if observed is not None:
        drift.extend(_plan_drift(record.plan, observed, missing_port_said=len(ovs_ports) == 0))
    info["drift"] = drift
    return info


def _observe(session: ReadSession, plan: Any, ovs_ports: list[Any]) -> Any:
    from smartnic_vif.host.observe import observe_port

    return observe_port(session.host, plan, {p.name: p for p in ovs_ports})


def _plan_drift(plan: Any, observed: Any, missing_port_said: bool) -> list[str]:
    """What reconcile would repair on a plugged port, each problem on its own."""
    from smartnic_vif.decisions.repair import plan_repair

    problems = [p for r in plan_repair(plan, observed) if r.problem
                for p in r.problem.split("; ")]
    if missing_port_said:  # said once already, by iface-id
        problems = [p for p in problems
                    if not (p.startswith("OVS port ") and " is missing from " in p)]
    return problems + [f"could not check: {e}" for e in observed.errors]


def cmd_status(args: argparse.Namespace) -> int:
    # A read: no privileged helper, no os-vif (see ReadSession).
    session = ReadSession(args)
    try:
        return _status(session, args.json)
    finally:
        session.host.close()


def _status(session: ReadSession, as_json: bool) -> int:
    from smartnic_vif.host import traces
    from smartnic_vif.host.ovsdb import IFACE_ID

    records = session.store.all()
    ovs_ports = session.host.ovsdb.ports_with_iface_id()
    by_iface_id: dict[str, list[Any]] = {}
    for port in ovs_ports:
        by_iface_id.setdefault(port.external_ids[IFACE_ID], []).append(port)
    ports = [port_status(session, r, by_iface_id.get(r.port_id, [])) for r in records]
    # What unplugs could not put back (until the VF is plugged again or
    # reconcile acknowledges it), and host state that no claim explains.
    unrestored = session.store.unrestored()
    unexplained = traces.unexplained(
        session.host, {r.vf_address: r.port_id for r in records if r.vf_address}, ovs_ports)
    drift = any(p["drift"] for p in ports) or bool(unrestored) or bool(unexplained)
    if as_json:
        render.emit_json({"ports": ports, "unrestored": unrestored,
                          "unexplained": unexplained, "drift": drift})
    else:
        render.table(("PORT", "MODE", "VF", "PHASE", "OVS PORT", "DRIFT"),
                     [(p["port_id"], p["mode"], p["vf"], p["phase"],
                       ",".join(p["ovs_ports"]) or None, "; ".join(p["drift"]) or "none")
                      for p in ports])
        for note in unrestored:
            print(f"could not be restored (port {note['port_id']}, VF {note['vf'] or '-'}): "
                  f"{note['what']}")
        for item in unexplained:
            print(f"unexplained: VF {item['vf']}: {item['what']} "
                  f"(detach --port-id {item['port_id']} removes it)" if item["port_id"]
                  else f"unexplained: VF {item['vf']}: {item['what']}")
    return EXIT_FAILED if drift else EXIT_OK


def _acknowledge_unrestored(session: Session) -> list[dict[str, Any]]:
    """reconcile's last duty: the notes of what unplugs could not restore
    have been shown by status; report them once more and forget them."""
    notes = session.store.unrestored()
    session.store.clear_unrestored()
    return [{"port_id": n["port_id"], "vf": n["vf"], "action": f"acknowledged: {n['what']}"}
            for n in notes]


def reconcile_once(session: Session, interrupted: bool = True,
                   port_ids: set[str] | None = None) -> list[dict[str, Any]]:
    """One pass over the claims (those in ``port_ids``, or all): repair what
    drifted on plugged ports and, with ``interrupted``, finish or undo what a
    crash interrupted. One action per port that needed one; a port whose
    repair or recovery failed has ``failed`` set, the others go on."""

    actions: list[dict[str, Any]] = []
    for record in session.store.all():
        if port_ids is not None and record.port_id not in port_ids:
            continue
        action: dict[str, Any] = {"port_id": record.port_id, "vf": record.vf_address}
        try:
            if record.phase == "plugged":
                if record.vf_address is None:
                    repairs = _replug_normal(session, record)
                else:
                    repairs = session.plugin.repair(record.port_id)
                if not repairs:
                    continue
                action.update(action=f"repaired {len(repairs)} problem(s)", repairs=repairs)
            elif not interrupted:
                continue
            elif record.vf_address is None:
                # A normal port whose attach died: unplug whatever os-vif made.
                from smartnic_vif.decisions import vif_builder

                vif = vif_from_record(record)
                session.os_vif().unplug(vif, vif_builder.instance_info(
                    record.request["instance_uuid"], "reconcile"))
                session.store.release(record.port_id)
                action["action"] = "unplugged an interrupted normal attach"
            else:
                action["action"] = session.plugin.recover(record.port_id)
        except (SmartNICError, OSError) as e:
            action.update(action=f"failed: {e}", failed=True)
        actions.append(action)
    return actions


def normal_port_repairs(session: Session, record: Any) -> list[str]:
    """What plugging the plugged normal port ``record`` again would repair:
    what status finds drifted (its OVS port gone or edited), or nothing."""
    problems = port_status(session, record)["drift"]
    return ([f"{'; '.join(problems)} -> plug the port again through os-vif's ovs plugin"]
            if problems else [])


def _replug_normal(session: Session, record: Any) -> list[str]:
    """A plugged normal port is os-vif's ovs plugin's (no plan of ours): if
    it drifted, plug it again through os-vif, which re-asserts the port and
    its external_ids."""
    from os_vif import exception as os_vif_exception

    from smartnic_vif.decisions import vif_builder

    repairs = normal_port_repairs(session, record)
    if not repairs:
        return []
    uuid_ = record.request["instance_uuid"]
    try:
        session.os_vif().plug(vif_from_record(record),
                              vif_builder.instance_info(uuid_, f"instance-{uuid_[:8]}"))
    except os_vif_exception.ExceptionBase as e:
        raise SmartNICError(f"plug of normal port {record.port_id} again failed: {e}") from e
    return repairs


def print_actions(actions: list[dict[str, Any]]) -> None:
    for a in actions:
        print(f"port {a['port_id']} (VF {a['vf'] or '-'}): {a['action']}")
        for repair in a.get("repairs", []):
            print(f"  - {repair}")


def cmd_reconcile(args: argparse.Namespace) -> int:
    if args.watch:
        if args.json:
            raise UsageError("--json cannot be used with --watch (it logs what it does)")
        if not args.interval > 0:
            raise UsageError(f"--interval {args.interval:g}: expected a number of seconds > 0")
        from smartnic_vif.cli import watch

        return watch.run(Session(args), args.interval)
    session = Session(args)
    # The notes of what unplugs could not restore are the operator's to
    # acknowledge: the one-shot reconcile does, the watch never does.
    actions = reconcile_once(session) + _acknowledge_unrestored(session)
    if args.json:
        render.emit_json({"actions": actions})
    else:
        print_actions(actions)
        if not actions:
            print("nothing to reconcile")
    return EXIT_FAILED if any(a.get("failed") for a in actions) else EXIT_OK


# -- doctor --------------------------------------------------------------------------------
def cmd_doctor(args: argparse.Namespace) -> int:
    from smartnic_vif.host.discovery import BackgroundDiscovery

    group = load_config(args)
    checks: list[dict[str, Any]] = []

    def check(name: str, ok: bool, detail: str, fix: str) -> None:
        # A passing check has no fix to suggest.
        checks.append({"check": name, "ok": ok, "detail": detail, "fix": None if ok else fix})

    # Discovery runs beside the OVSDB connection (see BackgroundDiscovery);
    # the checks are still reported in the order sysfs, OVSDB, forwarder.
    discovery = BackgroundDiscovery(group.sysfs_root)
    from smartnic_vif.host.ovsdb import READ_TABLES, OvsdbClient

    client, datapath_type, ovsdb_error = None, None, None
    try:
        client = OvsdbClient(group.ovsdb_connection, min(group.ovsdb_timeout, 5),
                             tables=READ_TABLES)
        datapath_type = client.bridge_datapath_type(group.integration_bridge)
    except Exception as e:
        client, ovsdb_error = None, e
    from smartnic_vif.host.forwarder.client import ForwarderClient

    inventory = None
    try:
        inventory = discovery.result()
        switchdev = [pf for pf in inventory.pfs if pf.switchdev]
        check("sysfs", True, f"{len(inventory.pfs)} SR-IOV PFs under {group.sysfs_root}", "")
        check("switchdev", bool(switchdev), f"{len(switchdev)} PFs in switchdev mode",
              "devlink dev eswitch set pci/<PF> mode switchdev")
        missing = [vf.address for pf in switchdev for vf in pf.vfs if vf.representor is None]
        check("representors", not missing,
              "every switchdev VF has a representor" if not missing
              else f"no representor for {', '.join(missing)}",
              "create the VFs after switching to switchdev (echo N > sriov_numvfs)")
    except Exception as e:
        check("sysfs", False, str(e),
              f"set sysfs_root (now {group.sysfs_root}) in [os_vif_smartnic]")
    if ovsdb_error is None:
        check("ovsdb", True, f"connected to {group.ovsdb_connection}", "")
        check("bridge", datapath_type is not None,
              f"{group.integration_bridge}: datapath_type {datapath_type!r}",
              f"start the Neutron OVS agent or: ovs-vsctl add-br {group.integration_bridge}")
    else:
        check("ovsdb", False, str(ovsdb_error),
              f"start ovsdb-server or fix ovsdb_connection (now {group.ovsdb_connection})")
    try:
        with ForwarderClient(group.forwarder_port_control_endpoint, group.forwarder_stats_endpoint,
                             min(group.forwarder_timeout, 2.0)) as fwd:
            usage = fwd.relay_usage()
        # The daemon lists every relay slot: count those in use, out of all.
        check("forwarder", True,
              f"virtio-forwarder answers, {usage.used}/{usage.total} relays in use"
              + (" (full: no more virtio-forwarder ports)" if usage.used >= usage.total else ""),
              "")
    except Exception as e:
        check("forwarder", False, str(e),
              "start virtio-forwarder with dynamic sockets, or fix forwarder_*_endpoint "
              "(only needed for virtio-forwarder ports)")
    if any(c["check"] == "ovsdb" and c["ok"] for c in checks):
        _check_unexplained(group, check, inventory)
    if inventory is not None:
        _check_offload(group, inventory, client if _passed(checks, "ovsdb") else None, check)
    from smartnic_vif.cli.doctor_nova import nova_checks

    nova_checks(args, group, inventory, check)
    if args.json:
        render.emit_json({"checks": checks, "ok": all(c["ok"] for c in checks)})
    else:
        for c in checks:
            print(f"[{'ok' if c['ok'] else 'FAIL'}] {c['check']}: {c['detail']}")
            if not c["ok"]:
                print(f"       fix: {c['fix']}")
    return EXIT_OK if all(c["ok"] for c in checks) else EXIT_FAILED


def _check_unexplained(group: Any, check: Any, inventory: Any = None) -> None:
    """doctor: representors on OVS for a port and relays that no claim
    explains (what a lost state database leaves). ``inventory``: discovery's,
    if doctor has it already (read once)."""
    from smartnic_vif.host import traces
    from smartnic_vif.host.backend import Host
    from smartnic_vif.host.ovsdb import READ_TABLES
    from smartnic_vif.host.state import StateError, StateStore

    try:
        # Reading the claims must not create a state directory.
        exists = os.path.exists(os.path.join(group.state_path, "state.db"))
        claims = StateStore(group.state_path).claims() if exists else {}
    except StateError as e:
        # Without the claims, no host state can be called unexplained.
        check("state", False, str(e),
              f"make state_path (now {group.state_path}) a writable directory holding a "
              "usable state.db, as said above")
        return
    fix = ("'smartnic-vif detach --port-id <port>' removes what a port left without a claim; "
           "'smartnic-vif status' lists it")
    host = Host(group, inventory=inventory, ovsdb_tables=READ_TABLES)
    try:
        found = traces.unexplained(host, claims)
        check("unexplained", not found,
              "every representor on OVS and every relay has a claim" if not found
              else "; ".join(f"VF {i['vf']}: {i['what']}" for i in found), fix)
    except Exception as e:
        check("unexplained", False, str(e), fix)
    finally:
        host.close()


def _passed(checks: list[dict[str, Any]], name: str) -> bool:
    return any(c["check"] == name and c["ok"] for c in checks)


def _check_offload(group: Any, inventory: Any, ovsdb: Any, check: Any) -> None:
    """doctor: is offload happening? OVS's hw-offload and tc-policy, each
    plugged representor's hw-tc-offload, the eswitch mode of PFs with
    representors (:mod:`smartnic_vif.decisions.offload`)."""
    from smartnic_vif.decisions.offload import judge_offload
    from smartnic_vif.host.offload import read_offload_facts

    try:
        facts = read_offload_facts(group, inventory, ovsdb)
    except Exception as e:
        check("offload", False, f"could not read the offload state: {e}",
              "see the error; the other checks say more")
        return
    for c in judge_offload(facts.other_config, facts.plugged, facts.modes, facts.errors):
        check(c.name, c.ok, c.detail, c.fix)
