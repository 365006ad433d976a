"""Output for people (tables) and for programs (``--json``)."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from typing import Any, TextIO


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]], out: TextIO = sys.stdout) -> None:
    cells = [[("-" if c is None else str(c)) for c in row] for row in rows]
    widths = [len(h) for h in headers]
    for row in cells:
        widths = [max(w, len(c)) for w, c in zip(widths, row, strict=True)]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    print(fmt.format(*headers).rstrip(), file=out)
    for row in cells:
        print(fmt.format(*row).rstrip(), file=out)


def emit_json(data: Any, out: TextIO = sys.stdout) -> None:
    # One string, one write: json.dump would write each of its many
    # small pieces (an inventory of 1,024 VFs has some 100,000).
    out.write(json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")


class Progress:
    """One-line progress on a terminal; silent when output is not a terminal."""

    def __init__(self, out: TextIO = sys.stderr) -> None:
        self.out = out
        self.live = out.isatty()

    def step(self, text: str) -> None:
        if self.live:
            self.out.write("\r\033[K" + text)
            self.out.flush()

    def done(self) -> None:
        if self.live:
            self.out.write("\r\033[K")
            self.out.flush()
