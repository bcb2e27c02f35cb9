"""The whole flow of DESIGN.md for one target: validate -> discover -> preflight -> render -> apply -> verify.

Usable from Python without the CLI; ``echo`` receives one progress line per step.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from . import inventory as inv
from .errors import NotBuiltYet
from .render import render
from .targets import Target, spec


def run_flow(*, target: Target, inventory: Path, limit: str | None, out: Path,
             check: bool = False, diff: bool = False, facts: Path | None = None,
             echo: Callable[[str], None] = print) -> None:
    tspec = spec(target)
    loaded = inv.load(inventory, target, limit)
    echo(f"validated {len(loaded.hosts)} host(s) of target {target}: {', '.join(h.host for h in loaded.hosts)}")
    results = render(loaded.hosts, out / target.value, facts)
    for r in results:
        echo(f"rendered {len(r.files)} files for {r.host} in {r.directory}")
    if not tspec.apply_ready:
        raise NotBuiltYet(
            f"applying target {target} is not built in this version; the files are rendered in "
            f"{out / target.value} for review (nothing on any host was changed)"
        )
