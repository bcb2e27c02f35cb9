"""The one place that runs Ansible: ansible-runner over a playbook of this project.

Events only become progress (provisioner.progress); the run's ``rc`` and ``status``
are the truth. Each run keeps its artifacts (events, stdout, the command) in a run
directory of the workspace whose path is reported. ``Runner`` is the seam: the flow
talks to any object with ``run`` and ``display``, so it is tested with a fake one.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from . import resources
from .errors import ApplyError
from .progress import Display, Failure
from .workspace import Workspace

if TYPE_CHECKING:
    from .settings import HostSettings


@dataclass
class RunResult:
    playbook: str
    status: str
    rc: int
    run_dir: Path
    stats: dict[str, dict[str, int]] = field(default_factory=dict)
    failures: list[Failure] = field(default_factory=list)
    # What the roles asked to be told (set_stats of provision_notes, read by the display).
    notes: list[str] = field(default_factory=list)

    def changed(self, host: str) -> int:
        return self.stats.get("changed", {}).get(host, 0)


class Runner(Protocol):
    display: Display
    # Every run's directory, in order (for the report).
    run_dirs: list[Path]

    def run(self, playbook: str, *, limit: str | None = None, extravars: dict[str, Any] | None = None,
            check: bool = False, diff: bool = False) -> RunResult:
        """Run ``playbook`` of this project; raise ApplyError naming host, task and message on failure."""
        ...


def apply_error(playbook: str, run: RunResult) -> ApplyError:
    """The error of a failed run: the first failing host's last failure (earlier ones may have been rescued)."""
    first = Failure("?", "?", f"ansible exited {run.rc}")
    if run.failures:
        host = run.failures[0].host
        first = [f for f in run.failures if f.host == host][-1]
    changed = {h: n for h, n in run.stats.get("changed", {}).items() if n}
    changed_text = ", ".join(f"{h}: {n} changed" for h, n in changed.items()) or "nothing was changed"
    error = ApplyError(
        f"{playbook} failed on {first.host}, task '{first.task}': {first.message}",
        details=[f"changes made before the failure: {changed_text}", f"full log: {run.run_dir}/artifacts"],
    )
    error.failures = list(run.failures)
    error.run = run
    return error


# --- the contract between the provisioner and its playbooks -------------------------------


def places(hosts: list[HostSettings]) -> dict[str, dict[str, Any]]:
    """Where Ollama runs for each host and how it is reached (TargetModule.place_vars):
    playbooks/tasks/add-places.yml adds each to the run's inventory."""
    return {s.host: s.module.place_vars(s) for s in hosts}


def playbook_vars(hosts: list[HostSettings], **more: Any) -> dict[str, Any]:
    """The variables a target's playbook (and verify.yml) read: the group, the places, the target's own."""
    module = hosts[0].module
    return {"provision_group": module.group, "provision_places": places(hosts), **module.extravars(hosts), **more}


# The group the playbooks add each host's place to (playbooks/tasks/add-places.yml).
PLACES_GROUP = "provision_places"


def host_limit(hosts: list[HostSettings], limit: str | None) -> str | None:
    """Ansible's --limit for a run on ``hosts`` (already narrowed by the user's ``limit``).

    The host names, resolved once when the inventory was loaded (so any pattern the user gave,
    ``!gpu2`` or ``rack1:&gpu*``, is already applied), plus the places' group: hosts made by
    add_host do not bypass a limit (ansible#74978), and a name that does not exist yet when
    the run starts is dropped, while a group is matched when the play starts. Only the limited
    hosts add places, so only theirs run.
    """
    if limit is None:
        return None
    return ",".join([*(s.host for s in hosts), PLACES_GROUP])


class AnsibleRunner:
    """Runs this project's playbooks against one inventory with ansible-runner."""

    def __init__(self, workspace: Workspace, inventory: Path, display: Display) -> None:
        self.workspace = workspace
        self.inventory = Path(inventory).resolve()
        self.display = display
        self.run_dirs: list[Path] = []

    def run(self, playbook: str, *, limit: str | None = None, extravars: dict[str, Any] | None = None,
            check: bool = False, diff: bool = False) -> RunResult:
        import ansible_runner

        run_dir = self.workspace.new_run_dir(Path(playbook).stem)
        self.run_dirs.append(run_dir)
        cmdline = " ".join(flag for flag, on in (("--check", check), ("--diff", diff)) if on)
        path = Path(playbook) if Path(playbook).is_absolute() else resources.playbook(playbook)
        self.display.line(f"ansible: {Path(playbook).name} (run directory {run_dir})")
        self.display.start(Path(playbook).name)
        try:
            result = ansible_runner.run(
                private_data_dir=str(run_dir),
                playbook=str(path),
                inventory=str(self.inventory),
                limit=limit,
                extravars=extravars or {},
                cmdline=cmdline or None,
                envvars={
                    "ANSIBLE_ROLES_PATH": str(resources.roles_dir()),
                    "ANSIBLE_HOST_KEY_CHECKING": "False",
                    "ANSIBLE_NOCOLOR": "1",
                    # One connection round trip per task instead of three (put file, run, clean up).
                    "ANSIBLE_PIPELINING": "True",
                    "ANSIBLE_PYTHON_INTERPRETER": "auto_silent",
                    "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
                },
                event_handler=self.display,
                quiet=True,
                suppress_env_files=True,
            )
        finally:
            self.display.stop()
        stats = result.stats or {}
        run = RunResult(playbook, result.status, result.rc, run_dir,
                        {k: dict(v) for k, v in stats.items() if isinstance(v, dict)}, list(self.display.failures),
                        list(self.display.notes))
        if result.rc != 0 or result.status != "successful":
            raise apply_error(Path(playbook).name, run)
        for note in run.notes:
            self.display.line(f"note: {note}")
        return run
