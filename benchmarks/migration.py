"""Downtime of the demo's live migration, over several runs of the demo.

Runs ``smartnic-vif demo`` ``--runs`` times, one after another, each in a
network namespace of its own (``unshare --net``: nothing it makes meets the
caller's namespace), and reads from its output what the normal VM's ping
(every 10 ms, across the destination plug, the guest's move and the source
unplug) lost and how long it went without a reply across the move. Prints
each run and then min / median / max of the lost pings, the gap and the
demo's wall time. A run that fails is reported and counted.

Usage (root): ``.venv/bin/python benchmarks/migration.py [--runs 10]``
"""

from __future__ import annotations

import argparse
import re
import shutil
import statistics
import subprocess
import sys

DOWNTIME = re.compile(r"migration downtime: lost (\d+) of (\d+) pings .*no reply for (\d+) ms")
PASSED = re.compile(r"^demo passed in ([0-9.]+)s$", re.M)


def run_once() -> tuple[int, int, int, float] | str:
    """(lost, sent, gap in ms, demo seconds), or why the run failed."""
    unshare = shutil.which("unshare") or "/usr/bin/unshare"
    proc = subprocess.run(  # noqa: S603 - fixed argv, no shell
        [unshare, "--net", "--", sys.executable, "-m", "smartnic_vif.cli.main", "demo"],
        capture_output=True, text=True, timeout=300, check=False)
    found, passed = DOWNTIME.search(proc.stdout), PASSED.search(proc.stdout)
    if proc.returncode != 0 or not found or not passed:
        tail = (proc.stderr.strip() or proc.stdout.strip()).splitlines()[-1:] or ["no output"]
        return f"exit {proc.returncode}: {tail[0]}"
    return int(found[1]), int(found[2]), int(found[3]), float(passed[1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    args = parser.parse_args()
    results = []
    failed = 0
    for n in range(1, args.runs + 1):
        result = run_once()
        if isinstance(result, str):
            failed += 1
            print(f"run {n:2}: FAILED ({result})", flush=True)
            continue
        lost, sent, gap, seconds = result
        results.append(result)
        print(f"run {n:2}: lost {lost:3} of {sent:4} pings, no reply for {gap:4} ms, "
              f"demo {seconds:.1f} s", flush=True)
    if results:
        print(f"\n{len(results)} runs ({failed} failed)       min  median     max")
        for name, index in (("lost pings", 0), ("gap (ms)", 2), ("demo (s)", 3)):
            values = [r[index] for r in results]
            print(f"  {name:12} {min(values):10.1f} {statistics.median(values):7.1f} "
                  f"{max(values):7.1f}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
