"""provisioner.progress: ansible-runner events become progress a person can follow.

The events are written by hand in the shape ansible-runner hands to ``event_handler``
(no Ansible runs here): two hosts, changed and unchanged tasks, a skipped task, a loop
that fails on one item, a failure with ignore_errors, a changed task with a diff.
"""

from __future__ import annotations

import io
import itertools
import os
import re
import select
import subprocess
import sys
import threading

import pytest

from provisioner.progress import Display, Failure, Quiet, diff_lines, failure_message

ANSI = re.compile(r"\x1b(\[[0-?]*[ -/]*[@-~]|\][^\x07\x1b]*(\x07|\x1b\\)|[@-Z\\-_])")

PLAYBOOK = "native.yml"
PLAY = "Install Ollama natively"
T_DRIVER = "Read the NVIDIA driver version"
T_BINARY = "Install the Ollama binary"
T_ROCM = "Install the ROCm runtime (AMD only)"
T_DROPIN = "Install the rendered drop-in with the server's settings"
T_IGPU = "Probe the optional integrated GPU"
T_PULL = "Pull the models"
PULL_ERROR = "pull model manifest: file does not exist"
DROPIN = "/etc/systemd/system/ollama.service.d/override.conf"

_counter = itertools.count(1)


def _event(kind: str, **event_data) -> dict:
    """One event as ansible-runner passes it to event_handler (the fields that matter, plus some noise)."""
    n = next(_counter)
    data = {"playbook": PLAYBOOK, "playbook_uuid": "9c1f6a2e-0000-4000-8000-000000000001",
            "play": PLAY, "play_uuid": "0242ac11-0002-aaaa-0000-000000000006", "play_pattern": "native",
            "uuid": f"0242ac11-0002-aaaa-0000-{n:012d}"}
    data.update(event_data)
    return {"uuid": data["uuid"], "counter": n, "stdout": "", "start_line": n, "end_line": n,
            "runner_ident": "20250101-120000-native", "created": "2025-01-01T12:00:00.000000",
            "pid": 4242, "event": kind, "event_data": data}


def _task_start(task: str, action: str = "ansible.builtin.command") -> dict:
    return _event("playbook_on_task_start", task=task, name=task, task_action=action, is_conditional=False,
                  task_path=f"/work/main/roles/ollama_native/tasks/main.yml:{len(task)}")


def _on_host(kind: str, host: str, task: str, res, **more) -> dict:
    return _event(kind, host=host, remote_addr=host, task=task, task_action="ansible.builtin.command",
                  res=res, start="2025-01-01T12:00:00", end="2025-01-01T12:00:01", duration=1.0,
                  event_loop=None, **more)


def _events() -> list[dict]:
    """The stream of one playbook run on gpu1 and gpu2."""
    ev: list[dict] = [
        _event("playbook_on_start"),
        {"event": "verbose", "stdout": "", "counter": 0},  # no event_data at all
        _event("playbook_on_play_start", name=PLAY, pattern="native"),
    ]
    # 1. unchanged on both
    ev.append(_task_start(T_DRIVER))
    for h in ("gpu1", "gpu2"):
        ev.append(_on_host("runner_on_start", h, T_DRIVER, None))
        ev.append(_on_host("runner_on_ok", h, T_DRIVER,
                           {"changed": False, "stdout": "550.54.14", "rc": 0, "_ansible_no_log": False}))
    # 2. changed on gpu1 (no diff), unchanged on gpu2
    ev.append(_task_start(T_BINARY, "ansible.builtin.unarchive"))
    for h, changed in (("gpu1", True), ("gpu2", False)):
        ev.append(_on_host("runner_on_start", h, T_BINARY, None))
        ev.append(_on_host("runner_on_ok", h, T_BINARY, {"changed": changed, "dest": "/usr/local"}))
    # 3. skipped on both
    ev.append(_task_start(T_ROCM, "ansible.builtin.apt"))
    for h in ("gpu1", "gpu2"):
        ev.append(_on_host("runner_on_start", h, T_ROCM, None))
        ev.append(_on_host("runner_on_skipped", h, T_ROCM,
                           {"changed": False, "skipped": True, "skip_reason": "Conditional result was False",
                            "false_condition": "gpu_vendor == 'amd'"}))
    # 4. changed with a diff on gpu1, unchanged on gpu2
    ev.append(_task_start(T_DROPIN, "ansible.builtin.copy"))
    ev.append(_on_host("runner_on_start", "gpu1", T_DROPIN, None))
    ev.append(_on_host("runner_on_ok", "gpu1", T_DROPIN, {
        "changed": True, "dest": DROPIN,
        "diff": [{"before": "[Service]\nEnvironment=OLLAMA_HOST=127.0.0.1:11434\n",
                  "after": "[Service]\nEnvironment=OLLAMA_HOST=0.0.0.0:11434\n",
                  "before_header": DROPIN, "after_header": "/root/.ansible/tmp/override.conf"}]}))
    ev.append(_on_host("runner_on_start", "gpu2", T_DROPIN, None))
    ev.append(_on_host("runner_on_ok", "gpu2", T_DROPIN, {"changed": False, "dest": DROPIN}))
    # 5. fails on gpu2 with ignore_errors (an ok), ok on gpu1
    ev.append(_task_start(T_IGPU))
    ev.append(_on_host("runner_on_start", "gpu1", T_IGPU, None))
    ev.append(_on_host("runner_on_ok", "gpu1", T_IGPU, {"changed": False, "rc": 0}))
    ev.append(_on_host("runner_on_start", "gpu2", T_IGPU, None))
    ev.append(_on_host("runner_on_failed", "gpu2", T_IGPU,
                       {"changed": False, "rc": 1, "msg": "non-zero return code", "stderr": "no iGPU"},
                       ignore_errors=True))
    # 6. a loop: second item fails on gpu1; both items change on gpu2
    ev.append(_task_start(T_PULL, "ansible.builtin.uri"))
    for h in ("gpu1", "gpu2"):
        ev.append(_on_host("runner_on_start", h, T_PULL, None))
    ok_item = {"changed": True, "item": "llama3.2:1b", "_ansible_item_label": "llama3.2:1b", "status": 200}
    bad_item = {"changed": False, "failed": True, "item": "nosuch:7b", "_ansible_item_label": "nosuch:7b",
                "status": 500, "msg": f"Status code was 500: {PULL_ERROR}\nmore detail"}
    ev.append(_on_host("runner_item_on_ok", "gpu1", T_PULL, ok_item))
    ev.append(_on_host("runner_item_on_failed", "gpu1", T_PULL, bad_item))
    ev.append(_on_host("runner_on_failed", "gpu1", T_PULL, {
        "changed": True, "failed": True, "msg": "One or more items failed", "results": [ok_item, bad_item]},
        ignore_errors=None))
    ev.append(_on_host("runner_item_on_ok", "gpu2", T_PULL, ok_item))
    ev.append(_on_host("runner_on_ok", "gpu2", T_PULL, {"changed": True, "results": [ok_item]}))
    # odd ones: a result that is not a dict, a host-less result
    ev.append(_event("runner_on_ok", host=None, task="play-level", res="not a dict"))
    ev.append(_event("playbook_on_stats", changed={"gpu1": 2, "gpu2": 1}, dark={}, failures={"gpu1": 1},
                     ignored={"gpu2": 1}, ok={"gpu1": 4, "gpu2": 5}, processed={"gpu1": 1, "gpu2": 1},
                     rescued={}, skipped={"gpu1": 1, "gpu2": 1}))
    return ev


EXPECTED_COUNTS = {
    "gpu1": {"ok": 2, "changed": 2, "failed": 1, "skipped": 1},
    "gpu2": {"ok": 4, "changed": 1, "failed": 0, "skipped": 1},
}
EXPECTED_FAILURE = Failure("gpu1", T_PULL, f"item nosuch:7b: Status code was 500: {PULL_ERROR}")


def _feed(display: Display) -> None:
    display.line("validated 2 host(s) of target native: gpu1, gpu2")
    display.start(PLAYBOOK)
    for event in _events():
        assert display(event) is True
    display.stop()
    display.stop()  # idempotent


# -- plain (not a terminal) -----------------------------------------------------------------


def test_plain_stream_lists_only_changed_and_failed_tasks():
    out = io.StringIO()
    display = Display(out, diff=True)
    assert not display.terminal
    _feed(display)
    text = out.getvalue()
    assert "\x1b" not in text
    lines = text.splitlines()
    assert lines[0] == "validated 2 host(s) of target native: gpu1, gpu2"
    task_lines = [line for line in lines if not line.startswith(" ") and line != lines[0]]
    assert task_lines == [
        f"changed gpu1: {T_BINARY}",
        f"changed gpu1: {T_DROPIN}",
        f"FAILED gpu1: {T_PULL}: item nosuch:7b: Status code was 500: {PULL_ERROR}",
        f"changed gpu2: {T_PULL}",
    ]
    for skipped_or_ok in (T_ROCM, T_DRIVER, T_IGPU):
        assert skipped_or_ok not in text
    # the diff, indented 4, right under its task's line
    i = lines.index(f"changed gpu1: {T_DROPIN}")
    assert lines[i + 1:i + 8] == [
        f"    --- {DROPIN}",
        "    +++ /root/.ansible/tmp/override.conf",
        "    @@ -1,2 +1,2 @@",
        "     [Service]",
        "    -Environment=OLLAMA_HOST=127.0.0.1:11434",
        "    +Environment=OLLAMA_HOST=0.0.0.0:11434",
        f"FAILED gpu1: {T_PULL}: item nosuch:7b: Status code was 500: {PULL_ERROR}",
    ]


def test_diffs_only_with_the_diff_flag():
    out = io.StringIO()
    _feed(Display(out))
    assert f"changed gpu1: {T_DROPIN}" in out.getvalue()
    assert "OLLAMA_HOST" not in out.getvalue()


def test_counts_and_failures():
    display = Display(io.StringIO())
    _feed(display)
    assert display.counts == EXPECTED_COUNTS
    assert display.failures == [EXPECTED_FAILURE]


def test_start_clears_counts_and_failures():
    display = Display(io.StringIO())
    _feed(display)
    old = display.failures
    display.start("uninstall.yml")
    assert display.counts == {} and display.failures == []
    assert old == [EXPECTED_FAILURE]  # a list the caller kept is not emptied
    display.stop()


def test_unreachable_is_a_failure():
    out = io.StringIO()
    display = Display(out)
    display.start(PLAYBOOK)
    display(_on_host("runner_on_unreachable", "gpu3", "Gathering Facts",
                     {"unreachable": True, "changed": False,
                      "msg": "Failed to connect to the host via ssh: ssh: connect to host gpu3 port 22: "
                             "No route to host\r\n"}))
    display.stop()
    assert display.counts["gpu3"]["failed"] == 1
    assert out.getvalue() == ("FAILED gpu3: Gathering Facts: Failed to connect to the host via ssh: "
                              "ssh: connect to host gpu3 port 22: No route to host\n")


def test_malformed_events_are_ignored():
    out = io.StringIO()
    display = Display(out)
    for event in ({}, {"event": "runner_on_ok"}, {"event": "runner_on_ok", "event_data": None},
                  {"event": "runner_on_failed", "event_data": {"host": "gpu1", "res": ["x"]}},
                  {"event": "playbook_on_stats", "event_data": {"failures": "?"}}, "not a dict"):
        assert display(event) is True
    assert display.counts == {"gpu1": {"ok": 0, "changed": 0, "failed": 1, "skipped": 0}}
    assert display.failures == [Failure("gpu1", "?", "failed")]


# -- verbose -----------------------------------------------------------------------------------


def test_verbose_prints_every_task():
    out = io.StringIO()
    _feed(Display(out, verbose=True, force_terminal=True))  # plain lines even on a terminal
    text = out.getvalue()
    assert "\x1b" not in text
    task_lines = [line for line in text.splitlines() if line.startswith("  [")]
    assert task_lines == [
        f"  [ok 0 changed 0 failed 0] task: {T_DRIVER}",
        f"  [ok 2 changed 0 failed 0] task: {T_BINARY}",
        f"  [ok 3 changed 1 failed 0] task: {T_ROCM}",
        f"  [ok 3 changed 1 failed 0] task: {T_DROPIN}",
        f"  [ok 4 changed 2 failed 0] task: {T_IGPU}",
        f"  [ok 6 changed 2 failed 0] task: {T_PULL}",
    ]
    assert f"FAILED gpu1: {T_PULL}: item nosuch:7b" in text
    assert f"changed gpu1: {T_DROPIN}" in text


# -- terminal (a real pseudo-terminal) -------------------------------------------------------


def _read_all(fd: int, chunks: list[bytes], done: threading.Event) -> None:
    while True:
        ready, _, _ = select.select([fd], [], [], 0.05)
        if ready:
            try:
                data = os.read(fd, 65536)
            except OSError:  # EIO: the other side is closed
                return
            if not data:
                return
            chunks.append(data)
        elif done.is_set():
            return


@pytest.mark.skipif(not hasattr(os, "openpty"), reason="needs a pseudo-terminal")
def test_terminal_shows_a_live_view_and_lists_changes_and_failures(monkeypatch):
    monkeypatch.setenv("TERM", "xterm-256color")
    monkeypatch.setenv("COLUMNS", "160")
    for var in ("NO_COLOR", "TTY_INTERACTIVE", "TTY_COMPATIBLE", "FORCE_COLOR"):
        monkeypatch.delenv(var, raising=False)
    master, slave = os.openpty()
    chunks: list[bytes] = []
    done = threading.Event()
    reader = threading.Thread(target=_read_all, args=(master, chunks, done), daemon=True)
    reader.start()  # drains the master side so that writes never block on a full pty buffer
    stream = open(slave, "w", buffering=1, encoding="utf-8")
    try:
        display = Display(stream, diff=True)  # force_terminal=None: detected
        assert display.terminal and display.mode == "live"
        display.refresh_per_second = 1.0  # the explicit refresh after each event is what shows
        _feed(display)
        stream.flush()
    finally:
        stream.close()
        done.set()
        reader.join(5)
        os.close(master)
    raw = b"".join(chunks).decode("utf-8", "replace")
    assert "\x1b[" in raw  # it did draw on the terminal
    lines = [line.rstrip() for line in re.split(r"\r\n|\r|\n", ANSI.sub("", raw))]

    assert "validated 2 host(s) of target native: gpu1, gpu2" in lines
    assert f"changed  gpu1  {T_BINARY}" in lines
    assert f"changed  gpu1  {T_DROPIN}" in lines
    assert f"changed  gpu2  {T_PULL}" in lines
    assert "    +Environment=OLLAMA_HOST=0.0.0.0:11434" in lines
    i = lines.index(f"FAILED   gpu1  {T_PULL}")
    assert lines[i + 1] == f"    item nosuch:7b: Status code was 500: {PULL_ERROR}"

    status = re.compile(r"^\S?\s+(gpu\d)\s+(ok \d+ changed \d+ failed \d+ skipped \d+)\s+(.*)$")
    finals = {m[1]: (m[2], m[3]) for m in map(status.match, lines) if m}
    assert finals == {"gpu1": ("ok 2 changed 2 failed 1 skipped 1", "failed"),
                      "gpu2": ("ok 4 changed 1 failed 0 skipped 1", "done")}
    assert any(m and m[1] == "gpu1" and m[3] == T_DROPIN for m in map(status.match, lines))  # a current task
    # skipped (and merely ok) tasks only ever show as a host's current task, never as a line of their own
    for name in (T_ROCM, T_DRIVER, T_IGPU):
        assert all(status.match(line) for line in lines if name in line)


def test_forced_terminal_on_a_plain_stream_draws():
    out = io.StringIO()
    display = Display(out, force_terminal=True)
    assert display.mode == "live"
    _feed(display)
    assert display.counts == EXPECTED_COUNTS
    assert f"changed  gpu1  {T_DROPIN}" in ANSI.sub("", out.getvalue())


# -- quiet -------------------------------------------------------------------------------------


@pytest.mark.parametrize("force_terminal", [None, True])
def test_quiet_prints_nothing(force_terminal):
    out = io.StringIO()
    display = Quiet(out, verbose=True, diff=True, force_terminal=force_terminal)
    _feed(display)
    assert out.getvalue() == ""
    assert display.counts == EXPECTED_COUNTS
    assert display.failures == [EXPECTED_FAILURE]


# -- the rules ---------------------------------------------------------------------------------


def test_failure_message():
    assert failure_message({"msg": "Could not find the requested service ollama: host\nsecond line"}) == \
        "Could not find the requested service ollama: host"
    assert failure_message({"msg": "", "stderr": "E: Unable to locate package nvidia-driver-550\n"}) == \
        "E: Unable to locate package nvidia-driver-550"
    assert failure_message({"reason": "timed out"}) == "timed out"
    assert failure_message({"msg": ["a", "b"]}) == "a b"
    assert failure_message({"failed": True}) == "failed"
    assert failure_message("nonsense") == "failed"  # type: ignore[arg-type]
    loop = {"msg": "One or more items failed", "results": [
        {"item": "a", "changed": False},
        {"item": {"name": "b"}, "_ansible_item_label": "b", "failed": True, "msg": "first\nsecond"},
        {"item": "c", "failed": True, "msg": "later"},
    ]}
    assert failure_message(loop) == "item b: first"
    assert failure_message({"results": [{"item": "x", "failed": True, "stderr": "boom"}]}) == "item x: boom"


def test_diff_lines_dict_and_list():
    one = {"before": "a\nb\n", "after": "a\nc\n", "before_header": "/etc/x", "after_header": "/tmp/x"}
    assert diff_lines(one) == ["--- /etc/x", "+++ /tmp/x", "@@ -1,2 +1,2 @@", " a", "-b", "+c"]
    two = {"before": "", "after": "new\n"}
    assert diff_lines([one, two]) == diff_lines(one) + ["--- before", "+++ after", "@@ -0,0 +1 @@", "+new"]
    assert diff_lines({"before": "same", "after": "same"}) == []
    assert diff_lines(None) == [] and diff_lines("text") == [] and diff_lines([None, 3]) == []
    state = diff_lines({"before": {"path": "/x", "state": "absent"}, "after": {"path": "/x", "state": "directory"}})
    assert '-    "state": "absent"' in state and '+    "state": "directory"' in state


def test_importing_progress_does_not_import_rich():
    code = "import sys, provisioner.progress; print(sorted(m for m in sys.modules if m.split('.')[0] == 'rich'))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert out.stdout.strip() == "[]"


def test_notes_the_roles_pass_on_with_set_stats_are_kept_one_line_each_and_reset_per_run():
    display = Display(io.StringIO(), force_terminal=False)
    display.start(PLAYBOOK)
    display(_event("playbook_on_stats", changed={}, dark={}, failures={}, ok={"gpu1": 1},
                   artifact_data={"provision_notes": ["a reboot is needed\n  on gpu1", "kept /etc/x on gpu2"]}))
    assert display.notes == ["a reboot is needed on gpu1", "kept /etc/x on gpu2"]
    display.start(PLAYBOOK)
    assert display.notes == []
    display(_event("playbook_on_stats", changed={}, artifact_data={"other": 1}))
    assert display.notes == []
