"""The deployment targets: one module each, all behind one protocol (base.TargetModule).

Adding a target is adding a module here (its settings concern, files, context, checks,
preflight, place, fixes, uninstall), a playbook and its templates; nothing outside this
package changes. ``Target`` is the enum the CLI offers; ``get`` returns a target's module.
"""

from __future__ import annotations

from enum import Enum
from functools import cache
from typing import Any

from .base import FileSpec, Place, TargetModule


class Target(str, Enum):
    native = "native"
    docker = "docker"
    lxc = "lxc"
    kvm = "kvm"

    def __str__(self) -> str:  # typer shows the value, not "Target.native"
        return self.value


@cache
def _modules() -> dict[Target, TargetModule]:
    # Imported on first use: the modules load pydantic, which `provision --help` does not need.
    from . import docker, kvm, lxc, native

    return {Target.native: native.TARGET, Target.docker: docker.TARGET, Target.lxc: lxc.TARGET, Target.kvm: kvm.TARGET}


def __getattr__(name: str) -> Any:
    if name == "MODULES":  # {Target: TargetModule}, in the enum's order
        return _modules()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def get(target: Target | str) -> TargetModule:
    return _modules()[Target(target)]


def named(name: str) -> TargetModule | None:
    """The module of the target called ``name``; None for evidence from elsewhere (a bare URL)."""
    return _modules()[Target(name)] if name in Target.__members__ else None


__all__ = ["FileSpec", "MODULES", "Place", "Target", "TargetModule", "get", "named"]
