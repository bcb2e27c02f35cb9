"""Progress of an Ansible run that a person can follow, built from ansible-runner events.

``Display`` is the ``event_handler`` given to ``ansible_runner.run``. On a terminal it
keeps a live view (rich) with one line per host (its current task and its
ok/changed/failed/skipped counts) and prints, permanently above it, only the tasks that
changed something or failed. In verbose mode, or when the stream is not a terminal
(CI logs), it prints plain lines without ANSI codes. ``Quiet`` prints nothing.

Only the standard library is imported here: rich is imported when a display that
needs it is created, so that ``provision --help`` stays fast.
"""

from __future__ import annotations

import difflib
import json
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any, TextIO

COUNT_KEYS = ("ok", "changed", "failed", "skipped")


@dataclass
class Failure:
    host: str
    task: str
    message: str


def failure_message(res: dict) -> str:
    """One line saying why a task failed: for a loop the first failed item, else msg, stderr or reason."""
    if not isinstance(res, dict):
        return "failed"
    failed_items = [r for r in res.get("results") or [] if isinstance(r, dict) and r.get("failed")]
    if failed_items:  # a loop: the first failed item says more than "One or more items failed"
        item = failed_items[0]
        label = item.get("_ansible_item_label", item.get("item"))
        return f"item {label}: {failure_message(item)}"
    msg = res.get("msg") or res.get("stderr") or res.get("reason") or ""
    if isinstance(msg, list):
        msg = " ".join(str(m) for m in msg)
    text = str(msg).strip()
    return text.splitlines()[0] if text else "failed"


def _diff_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    # Some modules (file, ...) give before/after as dicts: serialized as Ansible's own callback does.
    return json.dumps(value, indent=4, sort_keys=True, default=str) + "\n"


def diff_lines(diff: Any) -> list[str]:
    """Ansible's --diff result of a task (a dict or a list of dicts with before/after) as unified diff lines."""
    lines: list[str] = []
    for d in diff if isinstance(diff, list) else [diff] if isinstance(diff, dict) else []:
        if not isinstance(d, dict):
            continue
        if "before" in d or "after" in d:
            before, after = _diff_text(d.get("before")), _diff_text(d.get("after"))
            if before != after:
                lines.extend(difflib.unified_diff(
                    before.splitlines(), after.splitlines(), lineterm="",
                    fromfile=str(d.get("before_header") or "before"),
                    tofile=str(d.get("after_header") or "after")))
        prepared = d.get("prepared")
        if isinstance(prepared, str) and prepared.strip():
            lines.extend(prepared.rstrip("\n").splitlines())
    return lines


def _task_diff(res: dict) -> Any:
    """The task's diff; for a loop without one at the top, the diffs of its changed items."""
    if res.get("diff"):
        return res["diff"]
    diffs: list[Any] = []
    for item in res.get("results") or []:
        if isinstance(item, dict) and item.get("changed") and item.get("diff"):
            d = item["diff"]
            diffs.extend(d if isinstance(d, list) else [d])
    return diffs


def _isatty(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except Exception:  # closed, or not a file at all
        return False


def _diff_style(line: str) -> str:
    if line.startswith(("+++", "---")):
        return "bold"
    if line.startswith("@@"):
        return "cyan"
    if line.startswith("+"):
        return "green"
    if line.startswith("-"):
        return "red"
    return ""


class Display:
    """Turns ansible-runner events into progress; keeps the failures and the counts per host.

    Modes: ``live`` (terminal, not verbose), ``verbose`` (plain, a line per task start),
    ``plain`` (not a terminal: a line per changed or failed task), ``quiet`` (nothing).
    """

    refresh_per_second = 4.0

    def __init__(self, stream: TextIO | None = None, *, verbose: bool = False, diff: bool = False,
                 force_terminal: bool | None = None) -> None:
        self.stream: TextIO = sys.stderr if stream is None else stream
        self.verbose = verbose
        self.diff = diff
        self.terminal = _isatty(self.stream) if force_terminal is None else bool(force_terminal)
        self.failures: list[Failure] = []
        self.counts: dict[str, dict[str, int]] = {}
        # What the roles asked to be told (set_stats of provision_notes, aggregated over hosts).
        self.notes: list[str] = []
        self.mode = self._choose_mode()
        self._lock = threading.Lock()  # the live view renders from rich's refresh thread
        self._title = ""
        self._play = ""
        self._current: dict[str, str] = {}  # host -> what it is doing now
        self._since: dict[str, float] = {}  # host -> when that started
        self._done: dict[str, str] = {}  # host -> "done" / "failed" / "unreachable" once the stats came
        self._live: Any = None
        self._console: Any = None
        self._spinner: Any = None
        if self.mode == "live":
            from rich.console import Console

            self._console = Console(file=self.stream, force_terminal=True, highlight=False, markup=False,
                                    emoji=False)

    def _choose_mode(self) -> str:
        if self.verbose:
            return "verbose"
        return "live" if self.terminal else "plain"

    # -- the caller's side --------------------------------------------------------------

    def line(self, text: str) -> None:
        """A flow-level line (above the live view while there is one)."""
        if self.mode == "quiet":
            return
        if self.mode == "live":
            from rich.text import Text

            self._console.print(Text(str(text)), soft_wrap=True)
        else:
            self._write([str(text)])

    def start(self, title: str) -> None:
        """A playbook run starts: counts and failures start afresh; on a terminal the live view starts."""
        self.stop()
        with self._lock:
            self.failures = []
            self.counts = {}
            self.notes = []
            self._current, self._since, self._done = {}, {}, {}
            self._title, self._play = str(title), ""
        if self.mode != "live":
            return
        from rich.live import Live
        from rich.spinner import Spinner

        encoding = (getattr(self._console, "encoding", "") or "").lower()
        self._spinner = Spinner("dots" if encoding.startswith("utf") else "line", style="cyan")
        live = Live(get_renderable=self._render, console=self._console, auto_refresh=True,
                    refresh_per_second=self.refresh_per_second, transient=False,
                    redirect_stdout=False, redirect_stderr=False)
        try:
            live.start(refresh=True)
        except Exception:  # another live display is active: changed/failed lines still print
            return
        self._live = live

    def stop(self) -> None:
        """A playbook run ends: the live view stops, leaving its last frame (the counts per host)."""
        live, self._live = self._live, None
        if live is not None:
            try:
                live.stop()
            except Exception:
                pass

    def __enter__(self) -> Display:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __call__(self, event: dict) -> bool:
        """ansible-runner's event_handler: True keeps the event in the run's artifacts."""
        try:
            with self._lock:
                out = self._update(event)
            for item in out:
                self._emit(*item)
            if self._live is not None:
                self._live.refresh()
        except Exception:  # progress must never break a run; its rc and status are the truth
            pass
        return True

    # -- events -> state ----------------------------------------------------------------

    def _host(self, host: str) -> dict[str, int]:
        if host not in self.counts:
            self.counts[host] = dict.fromkeys(COUNT_KEYS, 0)
        return self.counts[host]

    def _doing(self, host: str, what: str) -> None:
        self._host(host)
        if self._current.get(host) != what:
            self._since[host] = time.monotonic()
        self._current[host] = what

    def _update(self, event: Any) -> list[tuple]:
        """Count the event; return what to print (printing happens outside the lock)."""
        if not isinstance(event, dict):
            return []
        kind = str(event.get("event") or "")
        data = event.get("event_data")
        data = data if isinstance(data, dict) else {}
        raw_host = data.get("host")
        host = str(raw_host) if raw_host not in (None, "") else None
        task = str(data.get("task") or data.get("task_action") or "")
        res = data.get("res")
        res = res if isinstance(res, dict) else {}

        if kind == "playbook_on_play_start":
            self._play = str(data.get("play") or data.get("name") or "")
        elif kind in ("playbook_on_task_start", "playbook_on_handler_task_start"):
            task = task or str(data.get("name") or "")
            for h in self.counts:
                if h not in self._done:
                    self._doing(h, task)
            if self.mode == "verbose":
                total = {k: sum(c[k] for c in self.counts.values()) for k in COUNT_KEYS}
                return [("task", f"  [ok {total['ok']} changed {total['changed']} failed {total['failed']}] "
                                 f"task: {task}")]
        elif host is None:
            if kind == "playbook_on_stats":
                self._finish(data)
        elif kind == "runner_on_start":
            self._doing(host, task)
        elif kind in ("runner_item_on_ok", "runner_item_on_failed", "runner_item_on_skipped"):
            label = res.get("_ansible_item_label", res.get("item"))
            self._doing(host, f"{task} ({label})" if label is not None else task)
        elif kind == "runner_retry":
            self._doing(host, f"{task} (retry {res.get('attempts', '?')}/{res.get('retries', '?')})")
        elif kind == "runner_on_ok":
            if res.get("skipped"):
                self._host(host)["skipped"] += 1
            elif res.get("changed"):
                self._host(host)["changed"] += 1
                return [("changed", host, task, res)]
            else:
                self._host(host)["ok"] += 1
        elif kind == "runner_on_skipped":
            self._host(host)["skipped"] += 1
        elif kind in ("runner_on_failed", "runner_on_unreachable"):
            if data.get("ignore_errors"):
                self._host(host)["ok"] += 1
            else:
                self._host(host)["failed"] += 1
                failure = Failure(host, task or "?", failure_message(res))
                self.failures.append(failure)
                return [("failed", failure)]
        return []

    def _finish(self, stats: dict) -> None:
        """playbook_on_stats: every host is done (or failed, or unreachable)."""
        def bad(key: str) -> set[str]:
            d = stats.get(key)
            return {str(h) for h, n in d.items() if n} if isinstance(d, dict) else set()

        artifact = stats.get("artifact_data")
        found = artifact.get("provision_notes") if isinstance(artifact, dict) else None
        self.notes = [" ".join(str(n).split()) for n in found] if isinstance(found, list) else []
        failed, dark = bad("failures"), bad("dark")
        for h in self.counts:
            self._done[h] = "unreachable" if h in dark else "failed" if h in failed else "done"

    # -- output -------------------------------------------------------------------------

    def _write(self, lines: list[str]) -> None:
        self.stream.write("".join(f"{line}\n" for line in lines))
        self.stream.flush()

    def _emit(self, what: str, *args: Any) -> None:
        if self.mode == "quiet":
            return
        if what == "task":
            self._write([args[0]])
            return
        live = self.mode == "live"
        if what == "changed":
            host, task, res = args
            lines = diff_lines(_task_diff(res)) if self.diff else []
            if not live:
                self._write([f"changed {host}: {task}"] + [f"    {line}" for line in lines])
                return
            from rich.text import Text

            text = Text()
            text.append("changed", style="yellow")
            text.append(f"  {host}  ", style="bold")
            text.append(task)
            for line in lines:
                text.append("\n    ")
                text.append(line, style=_diff_style(line))
            self._console.print(text, soft_wrap=True)
        elif what == "failed":
            f: Failure = args[0]
            if not live:
                self._write([f"FAILED {f.host}: {f.task}: {f.message}"])
                return
            from rich.text import Text

            text = Text()
            text.append("FAILED ", style="bold red")
            text.append(f"  {f.host}  ", style="bold")
            text.append(f.task)
            text.append(f"\n    {f.message}", style="red")
            self._console.print(text, soft_wrap=True)

    def _render(self) -> Any:
        """The live view: the playbook, then one line per host (rich's refresh thread calls this)."""
        from rich.console import Group
        from rich.table import Table
        from rich.text import Text

        with self._lock:
            rows = [(h, dict(c), self._current.get(h, ""), self._since.get(h), self._done.get(h))
                    for h, c in self.counts.items()]
            title, play = self._title, self._play
        header = Text(title or "ansible", style="bold")
        if play:
            header.append(f"  {play}", style="dim")
        if not rows:
            return Group(header, Text("  waiting for the first task", style="dim"))
        grid = Table.grid(padding=(0, 2))
        grid.add_column(no_wrap=True, width=1)
        grid.add_column(no_wrap=True)
        grid.add_column(no_wrap=True)
        grid.add_column(overflow="ellipsis")
        now = time.monotonic()
        for host, c, doing, since, done in rows:
            counts = Text()
            for i, key in enumerate(COUNT_KEYS):
                style = {"changed": "yellow", "failed": "red"}.get(key, "") if c[key] else ""
                counts.append(" " if i else "")
                counts.append(f"{key} {c[key]}", style=style)
            if done:
                state = Text(done, style="green" if done == "done" else "bold red", no_wrap=True,
                             overflow="ellipsis")
                grid.add_row(Text(" "), Text(host, style="bold"), counts, state)
                continue
            now_doing = Text(doing, no_wrap=True, overflow="ellipsis")
            if since is not None and now - since >= 2:
                now_doing.append(f"  {int(now - since)}s", style="dim")
            grid.add_row(self._spinner or Text(" "), Text(host, style="bold"), counts, now_doing)
        return Group(header, grid)


class Quiet(Display):
    """Prints nothing at all (for --json callers); still keeps the failures and the counts."""

    def _choose_mode(self) -> str:
        return "quiet"
