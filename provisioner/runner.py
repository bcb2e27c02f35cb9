"""The one place that runs Ansible: ansible-runner over a playbook of this project.

Events only become progress lines; the run's ``rc`` and ``status`` are the truth.
Each run keeps its artifacts (events, stdout, the command) in a run directory
under ``.provision/runs/`` whose path is reported.
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from .errors import ApplyError
from .targets import PLAYBOOKS_DIR, ROLES_DIR

Progress = Callable[[str], None]


@dataclass
class Failure:
    host: str
    task: str
    message: str


@dataclass
class RunResult:
    playbook: str
    status: str
    rc: int
    run_dir: Path
    stats: dict[str, dict[str, int]] = field(default_factory=dict)
    failures: list[Failure] = field(default_factory=list)

    def changed(self, host: str) -> int:
        return self.stats.get("changed", {}).get(host, 0)


def _message(res: dict[str, Any]) -> str:
    failed_items = [r for r in res.get("results") or [] if isinstance(r, dict) and r.get("failed")]
    if failed_items:  # a loop: the first failed item says more than "One or more items failed"
        item = failed_items[0]
        label = item.get("_ansible_item_label", item.get("item"))
        return f"item {label}: {_message(item)}"
    msg = res.get("msg") or res.get("stderr") or res.get("reason") or ""
    if isinstance(msg, list):
        msg = " ".join(str(m) for m in msg)
    return str(msg).strip().splitlines()[0] if str(msg).strip() else "failed"


def _diff_lines(diff: Any) -> list[str]:
    """Ansible's --diff result of a task (a dict or a list of dicts with before/after) as unified diff lines."""
    import difflib

    lines: list[str] = []
    for d in diff if isinstance(diff, list) else [diff] if isinstance(diff, dict) else []:
        before, after = d.get("before", ""), d.get("after", "")
        if not isinstance(before, str) or not isinstance(after, str) or before == after:
            continue
        lines.extend(difflib.unified_diff(
            before.splitlines(), after.splitlines(), lineterm="",
            fromfile=str(d.get("before_header", "before")), tofile=str(d.get("after_header", "after"))))
    return lines


class _Progress:
    """Turns ansible-runner events into one line per task, with running ok/changed/failed counts."""

    def __init__(self, echo: Progress) -> None:
        self.echo = echo
        self.counts = {"ok": 0, "changed": 0, "failed": 0}
        self.failures: list[Failure] = []

    def __call__(self, event: dict[str, Any]) -> bool:
        kind = event.get("event", "")
        data = event.get("event_data", {})
        if kind == "playbook_on_task_start":
            c = self.counts
            self.echo(f"  [ok {c['ok']} changed {c['changed']} failed {c['failed']}] task: {data.get('task', '')}")
        elif kind == "runner_on_ok":
            res = data.get("res", {})
            self.counts["changed" if res.get("changed") else "ok"] += 1
            if res.get("changed"):
                for line in _diff_lines(res.get("diff")):
                    self.echo(f"    {line}")
        elif kind in ("runner_on_failed", "runner_on_unreachable") and not data.get("ignore_errors"):
            self.counts["failed"] += 1
            failure = Failure(str(data.get("host")), str(data.get("task")), _message(data.get("res", {})))
            self.failures.append(failure)
            self.echo(f"  FAILED {failure.host}: {failure.task}: {failure.message}")
        return True


def run_playbook(playbook: str, inventory: Path, *, limit: str | None = None,
                 extravars: dict[str, Any] | None = None, check: bool = False, diff: bool = False,
                 runs_dir: Path = Path(".provision/runs"), echo: Progress = print) -> RunResult:
    """Run ``playbooks/<playbook>`` against ``inventory``; raise ApplyError naming task, host and message."""
    import ansible_runner

    run_dir = (runs_dir / f"{time.strftime('%Y%m%d-%H%M%S')}-{Path(playbook).stem}").resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    cmdline = " ".join(flag for flag, on in (("--check", check), ("--diff", diff)) if on)
    progress = _Progress(echo)
    echo(f"ansible: {playbook} (run directory {run_dir})")
    result = ansible_runner.run(
        private_data_dir=str(run_dir),
        playbook=str(PLAYBOOKS_DIR / playbook),
        inventory=str(Path(inventory).resolve()),
        limit=limit,
        extravars=extravars or {},
        cmdline=cmdline or None,
        envvars={
            "ANSIBLE_ROLES_PATH": str(ROLES_DIR),
            "ANSIBLE_HOST_KEY_CHECKING": "False",
            "ANSIBLE_NOCOLOR": "1",
            # One connection round trip per task instead of three (put file, run, clean up).
            "ANSIBLE_PIPELINING": "True",
            "ANSIBLE_PYTHON_INTERPRETER": "auto_silent",
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        },
        event_handler=progress,
        quiet=True,
        suppress_env_files=True,
    )
    stats = result.stats or {}
    run = RunResult(playbook, result.status, result.rc, run_dir,
                    {k: dict(v) for k, v in stats.items() if isinstance(v, dict)}, progress.failures)
    if result.rc != 0 or result.status != "successful":
        # The last failure of the first failing host stopped it (earlier ones may have been rescued).
        first = Failure("?", "?", f"ansible exited {result.rc}")
        if progress.failures:
            host = progress.failures[0].host
            first = [f for f in progress.failures if f.host == host][-1]
        changed = {h: n for h, n in run.stats.get("changed", {}).items() if n}
        changed_text = ", ".join(f"{h}: {n} changed" for h, n in changed.items()) or "nothing was changed"
        raise ApplyError(
            f"{playbook} failed on {first.host}, task '{first.task}': {first.message}",
            details=[f"changes made before the failure: {changed_text}", f"full log: {run_dir}/artifacts"],
        )
    return run
