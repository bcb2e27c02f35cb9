"""native: Ollama as a hardened systemd service on the host itself."""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Mapping

from .base import DROPIN_TEMPLATE, UNIT_TEMPLATE, Place, TargetModule, proxy_files, service_files

if TYPE_CHECKING:
    from ..facts import HostFacts
    from ..settings import HostSettings


@lru_cache(maxsize=32)
def _exposure(unit: str, dropin: str) -> str | None:
    """``systemd-analyze security --offline`` of the unit plus drop-in, e.g. '2.9 OK'."""
    tool = shutil.which("systemd-analyze")
    if tool is None:
        return None
    with tempfile.TemporaryDirectory() as root:
        unit_dir = Path(root, "etc/systemd/system")
        (unit_dir / "ollama.service.d").mkdir(parents=True)
        (unit_dir / "ollama.service").write_text(unit)
        (unit_dir / "ollama.service.d/override.conf").write_text(dropin)
        proc = subprocess.run(
            [tool, "security", "--offline=yes", f"--root={root}", "--no-pager", "ollama.service"],
            capture_output=True, text=True, check=False,
        )
    m = re.search(r"Overall exposure level for ollama\.service:\s*([\d.]+)\s+(\w+)", proc.stdout)
    return f"{m.group(1)} {m.group(2)}" if m else None


def _without_comments(text: str) -> str:
    return "\n".join(line for line in text.splitlines() if not line.lstrip().startswith(("#", ";"))) + "\n"


def security_exposure(unit: str, dropin: str) -> str | None:
    """Computed once per distinct unit + drop-in: comments (which name the host) never change it."""
    return _exposure(_without_comments(unit), _without_comments(dropin))


class NativeTarget(TargetModule):
    name = "native"
    description = "Ollama as a hardened systemd service on the host"
    apply_ready = True
    # The proxy (when exposed) runs on the host next to the service.
    files = (*service_files("host"), *proxy_files("host"))

    def render_notes(self, settings: HostSettings, facts: HostFacts, texts: Mapping[str, str]) -> list[str]:
        exposure = security_exposure(texts[UNIT_TEMPLATE], texts[DROPIN_TEMPLATE])
        return [f"systemd-analyze security exposure of ollama.service: {exposure}"] if exposure else []

    def place(self, settings: HostSettings) -> Place:
        return Place(name=settings.host, description=f"the host {settings.host} itself")


TARGET = NativeTarget()
