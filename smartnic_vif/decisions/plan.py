"""Plans: what a decision asks of the host, as phases of lanes of steps.

A plan is plain data. It can be printed (``--dry-run``), stored as JSON in the
claim journal, and replayed backwards to undo what was done, also by a later
process after a crash.

- A **step** is one host operation (``do``) with the operation that undoes it.
- A **lane** is a list of steps that run one after the other.
- A **phase** is a set of lanes that run at the same time; a phase starts once
  the phase before it has ended.

The steps are numbered phase by phase, lane by lane (``Plan.steps``). That
order is the journal's (``n`` started steps are steps ``[0, n)``) and, last
first, the undo order. The decisions code states the phases and lanes; the
executor (:mod:`smartnic_vif.host.executor`) only follows them.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

# A phase: its lanes, each the indices of its steps in Plan.steps.
Layout = tuple[tuple[int, ...], ...]


@dataclass(frozen=True)
class Operation:
    """One call on a host backend: ``backend.<name>(**args)``."""

    name: str
    args: Mapping[str, Any] = field(default_factory=dict)

    def describe(self) -> str:
        shown = ", ".join(f"{k}={v!r}" for k, v in self.args.items())
        return f"{self.name}({shown})"

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "args": dict(self.args)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Operation:
        return cls(name=str(data["name"]), args=dict(data.get("args") or {}))


@dataclass(frozen=True)
class Step:
    """A small change with its undo. ``undo`` is None for steps that change
    nothing that needs restoring (checks, hooks that run after the fact)."""

    title: str
    do: Operation
    undo: Operation | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "title": self.title,
            "do": self.do.to_dict(),
            "undo": self.undo.to_dict() if self.undo else None,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Step:
        # Plans journalled before phases existed also carry "after" (the
        # earlier steps a step needed); undo and repair never needed it.
        undo = data.get("undo")
        return cls(
            title=str(data["title"]),
            do=Operation.from_dict(data["do"]),
            undo=Operation.from_dict(undo) if undo else None,
        )


@dataclass(frozen=True)
class Plan:
    """What to do for one port, and enough context to print it.

    ``steps`` in journal order; ``phases`` lays them out, each phase a tuple
    of lanes, each lane the indices of its steps. Without ``phases`` the
    steps run in order, in one lane (build phased plans with :meth:`phased`).
    """

    action: str  # plug / unplug
    port_id: str
    mode: str  # normal / passthrough / forwarder
    steps: tuple[Step, ...]
    vf_address: str | None = None
    phases: tuple[Layout, ...] = ()

    def __post_init__(self) -> None:
        if not self.phases and self.steps:
            object.__setattr__(self, "phases", ((tuple(range(len(self.steps))),),))
        numbered = [i for phase in self.phases for lane in phase for i in lane]
        if numbered != list(range(len(self.steps))) or not all(p and all(p) for p in self.phases):
            raise ValueError(f"plan phases {self.phases} do not lay out steps "
                             f"1 to {len(self.steps)} in order, each once, in no empty lane")

    @classmethod
    def phased(cls, action: str, port_id: str, mode: str,
               phases: Sequence[Sequence[Sequence[Step]]], vf_address: str | None = None
               ) -> Plan:
        """A plan from its phases, each a list of lanes, each a list of steps."""
        steps: list[Step] = []
        layout: list[Layout] = []
        for phase in phases:
            lanes = []
            for lane in phase:
                lanes.append(tuple(range(len(steps), len(steps) + len(lane))))
                steps += lane
            layout.append(tuple(lanes))
        return cls(action, port_id, mode, tuple(steps), vf_address, tuple(layout))

    def phase_steps(self, phase: int) -> range:
        """The indices of the steps of ``phase``."""
        lanes = self.phases[phase]
        return range(lanes[0][0], lanes[-1][-1] + 1)

    def journal_mark(self, phase: int) -> int:
        """What the journal records before ``phase`` starts: the number of
        steps that may then have started. That is every step up to the end
        of ``phase``, and of the phases after it that have nothing to undo
        (they need no journal write of their own)."""
        end = self.phase_steps(phase).stop
        for later in range(phase + 1, len(self.phases)):
            if any(self.steps[i].undo is not None for i in self.phase_steps(later)):
                break
            end = self.phase_steps(later).stop
        return end

    def __iter__(self) -> Iterator[Step]:
        return iter(self.steps)

    def __len__(self) -> int:
        return len(self.steps)

    def describe(self) -> str:
        head = f"{self.action} port {self.port_id} ({self.mode} mode"
        head += f", VF {self.vf_address})" if self.vf_address else ")"
        lines = [head + ":"]
        for k, phase in enumerate(self.phases, 1):
            side = f", {len(phase)} lanes at the same time" if len(phase) > 1 else ""
            lines.append(f"  phase {k}{side}:")
            for n, lane in enumerate(phase, 1):
                indent = "    "
                if len(phase) > 1:
                    lines.append(f"    lane {n}:")
                    indent = "      "
                for i in lane:
                    step = self.steps[i]
                    lines.append(f"{indent}{i + 1}. {step.title}")
                    lines.append(f"{indent}     do:   {step.do.describe()}")
                    if step.undo:
                        lines.append(f"{indent}     undo: {step.undo.describe()}")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {
            "action": self.action,
            "port_id": self.port_id,
            "mode": self.mode,
            "vf_address": self.vf_address,
            "steps": [s.to_dict() for s in self.steps],
            "phases": [[list(lane) for lane in phase] for phase in self.phases],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Plan:
        # A plan journalled before phases existed has none: its steps were
        # numbered in the same journal and undo order, so it reads as one
        # lane (it is only ever undone or repaired, never run again).
        return cls(
            action=str(data["action"]),
            port_id=str(data["port_id"]),
            mode=str(data["mode"]),
            vf_address=data.get("vf_address"),
            steps=tuple(Step.from_dict(s) for s in data["steps"]),
            phases=tuple(tuple(tuple(int(i) for i in lane) for lane in phase)
                         for phase in data.get("phases") or ()),
        )
