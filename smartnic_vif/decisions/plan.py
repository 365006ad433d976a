"""Plans: ordered steps, each naming a host operation and the operation that undoes it.

A plan is plain data. It can be printed (``--dry-run``), stored as JSON in the
claim journal, and replayed backwards by the executor to undo what was done,
also by a later process after a crash.

Steps run in order unless a step names the earlier steps it needs
(``after``): then it may run alongside any other step whose needs are met.
Undo always runs in reverse order, which reverses every dependency.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any


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
    # Indices of the earlier steps this one needs; None: every earlier step.
    after: tuple[int, ...] | None = None

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "title": self.title,
            "do": self.do.to_dict(),
            "undo": self.undo.to_dict() if self.undo else None,
        }
        if self.after is not None:
            data["after"] = list(self.after)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Step:
        undo = data.get("undo")
        after = data.get("after")
        return cls(
            title=str(data["title"]),
            do=Operation.from_dict(data["do"]),
            undo=Operation.from_dict(undo) if undo else None,
            after=tuple(int(i) for i in after) if after is not None else None,
        )


@dataclass(frozen=True)
class Plan:
    """What to do for one port, and enough context to print it."""

    action: str  # plug / unplug
    port_id: str
    mode: str  # normal / passthrough / forwarder
    steps: tuple[Step, ...]
    vf_address: str | None = None

    def __post_init__(self) -> None:
        for i, step in enumerate(self.steps):
            if step.after is not None and any(not 0 <= j < i for j in step.after):
                raise ValueError(
                    f"step {i + 1} ({step.title}) may only come after earlier steps, "
                    f"not {[j + 1 for j in step.after]}"
                )

    def needs(self, index: int) -> frozenset[int]:
        """The steps that must be done before step ``index`` starts."""
        after = self.steps[index].after
        return frozenset(range(index) if after is None else after)

    def journal_horizon(self, started: Iterable[int]) -> int:
        """What a write-ahead journal records before ``started`` steps start:
        one past the last step among them, those that need nothing else
        (they start as soon as these end, unless one fails) and those that
        have no undo (nothing to restore, so nothing to journal). Journalling
        that next wave now keeps the journal write out of the gap between
        waves; every undo is safe on a step that never ran."""
        begun = set(started)
        ahead = [i for i, step in enumerate(self.steps)
                 if i in begun or self.needs(i) <= begun or step.undo is None]
        return max(ahead) + 1 if ahead else 0

    def __iter__(self) -> Iterator[Step]:
        return iter(self.steps)

    def __len__(self) -> int:
        return len(self.steps)

    def describe(self) -> str:
        head = f"{self.action} port {self.port_id} ({self.mode} mode"
        head += f", VF {self.vf_address})" if self.vf_address else ")"
        lines = [head + ":"]
        for i, step in enumerate(self.steps, 1):
            if step.after is None or i == 1:
                when = ""
            elif not step.after:
                when = "  [starts with the plan]"
            else:
                when = f"  [after {', '.join(str(j + 1) for j in step.after)}]"
            lines.append(f"  {i}. {step.title}{when}")
            lines.append(f"       do:   {step.do.describe()}")
            if step.undo:
                lines.append(f"       undo: {step.undo.describe()}")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {
            "action": self.action,
            "port_id": self.port_id,
            "mode": self.mode,
            "vf_address": self.vf_address,
            "steps": [s.to_dict() for s in self.steps],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Plan:
        return cls(
            action=str(data["action"]),
            port_id=str(data["port_id"]),
            mode=str(data["mode"]),
            vf_address=data.get("vf_address"),
            steps=tuple(Step.from_dict(s) for s in data["steps"]),
        )
