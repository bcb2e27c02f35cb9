"""The state directory of one command: facts, rendered files, run directories and evidence.

One object is handed down instead of loose paths::

    ROOT/facts/<host>.json          discovered facts
    ROOT/rendered/<target>/<host>/  rendered files (or --out)
    ROOT/runs/<time>-<name>/        one directory per Ansible run or evidence set, never reused
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path


@dataclass
class Workspace:
    root: Path = Path(".provision")
    # Where rendered files go (--out); ROOT/rendered by default.
    out: Path | None = None
    # Where facts are read from and written to (--facts); ROOT/facts by default.
    facts_dir: Path | None = None

    @classmethod
    def beside(cls, facts_dir: Path) -> Workspace:
        """The workspace whose facts directory is ``facts_dir`` (its runs go beside it)."""
        return cls(root=facts_dir.parent, facts_dir=facts_dir)

    @property
    def facts(self) -> Path:
        return self.facts_dir if self.facts_dir is not None else self.root / "facts"

    @property
    def runs(self) -> Path:
        return self.root / "runs"

    def rendered(self, target: str) -> Path:
        return (self.out if self.out is not None else self.root / "rendered") / target

    def new_run_dir(self, name: str) -> Path:
        """A fresh directory runs/<time>-<name>[-N]: two runs in the same second never share one."""
        self.runs.mkdir(parents=True, exist_ok=True)
        stamp = time.strftime("%Y%m%d-%H%M%S")
        for n in range(1, 1000):
            path = self.runs / (f"{stamp}-{name}" if n == 1 else f"{stamp}-{name}-{n}")
            try:
                path.mkdir()
            except FileExistsError:
                continue
            return path.resolve()
        raise RuntimeError(f"no free run directory for {name} in {self.runs}")
