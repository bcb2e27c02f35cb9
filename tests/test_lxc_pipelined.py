"""The lxc_pipelined connection's input and output exchange (playbooks/connection_plugins/), without
LXC: a child process stands in for the attached command. A pipelined module is read from stdin to
its end, so the write end must be closed once written, while stdout and stderr are read at the
same time (a child that fills its output pipe before it has read its input must not deadlock).
The plugin end to end, in a real container, is tests/test_lxc.py (every module there is pipelined).
"""

from __future__ import annotations

import fcntl
import importlib.util
import os
import signal
import subprocess
import sys

import pytest

from tests.conftest import ROOT

PLUGIN = ROOT / "playbooks" / "connection_plugins" / "lxc_pipelined.py"


@pytest.fixture(scope="module")
def connection():
    spec = importlib.util.spec_from_file_location("lxc_pipelined", PLUGIN)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.Connection


@pytest.fixture(autouse=True)
def deadline():
    """A deadlock fails the test instead of hanging the suite."""
    def _raise(*_):
        raise TimeoutError("the exchange did not finish within 20 s")

    old = signal.signal(signal.SIGALRM, _raise)
    signal.alarm(20)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, old)


def _exchange(connection, script: str, in_data: bytes | None):
    """Run ``script`` in a Python child on the pipes exec_command gives the attached command."""
    read_out, write_out = os.pipe()
    read_err, write_err = os.pipe()
    write_in = None
    stdin = subprocess.DEVNULL
    if in_data is not None:
        stdin, write_in = os.pipe()
        fcntl.fcntl(write_in, fcntl.F_SETFL, fcntl.fcntl(write_in, fcntl.F_GETFL) | os.O_NONBLOCK)
    child = subprocess.Popen([sys.executable, "-c", script], stdin=stdin, stdout=write_out, stderr=write_err)
    for fd in (write_out, write_err) + ((stdin,) if write_in is not None else ()):
        os.close(fd)
    ours = [read_out, read_err] + ([write_in] if write_in is not None else [])
    try:
        out, err = connection._exchange(in_data, write_in, read_out, read_err, ours)
    finally:
        for fd in ours:
            os.close(fd)
    return child.wait(), out, err


def test_the_input_is_read_to_its_end_while_the_output_is_read(connection):
    # Larger than a pipe's buffer both ways: a pipelined module (AnsiballZ) is hundreds of kB.
    module = os.urandom(1 << 20).hex().encode()
    script = ("import sys; data = sys.stdin.buffer.read(); sys.stderr.write('x' * 300000); "
              "sys.stdout.buffer.write(data[::-1])")
    rc, out, err = _exchange(connection, script, module)
    assert rc == 0
    assert out == module[::-1]
    assert err == b"x" * 300000


def test_output_before_the_input_is_read_does_not_deadlock(connection):
    script = "import sys; sys.stdout.write('y' * 500000); sys.stdout.flush(); sys.stdin.buffer.read()"
    rc, out, _ = _exchange(connection, script, b"z" * 500000)
    assert rc == 0 and out == b"y" * 500000


def test_a_command_that_exits_without_reading_its_input_says_why(connection):
    rc, out, err = _exchange(connection, "import sys; print('refused'); sys.exit(3)", b"w" * (1 << 20))
    assert rc == 3 and out == b"refused\n"


def test_a_command_without_input_gets_none(connection):
    rc, out, err = _exchange(connection, "print('hello')", None)
    assert (rc, out, err) == (0, b"hello\n", b"")
