# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt): this plugin
# subclasses community.general's lxc connection (GPL-3.0-or-later).
"""community.general.lxc with pipelining that works: the attached command gets a blocking stdin
that is closed once the module is written, so a pipelined module is read whole and then runs."""

from __future__ import annotations

DOCUMENTATION = r"""
name: lxc_pipelined
short_description: community.general.lxc, with pipelined modules read to the end
description:
  - Runs commands in, and copies files to and from, a running LXC container through liblxc's
    attach, exactly as community.general.lxc does (which it subclasses).
  - The difference is how a command's input and output are given. community.general.lxc hands the
    attached process a non-blocking stdin and keeps the pipe's write end open until the process
    exits, so a pipelined module reads nothing (or part of itself) and fails with "Broken pipe".
    This plugin gives it a blocking stdin, writes the input and closes the write end, so the module
    is read to its end; with pipelining on, a module is one attach instead of six (home directory,
    temporary directory, copy, chmod, run, clean-up).
  - The attached process's stdout and stderr are blocking too (community.general.lxc makes them
    non-blocking, so a command with more output than a pipe holds can die with BlockingIOError),
    and the result carries the command's exit code (community.general.lxc returns waitpid's raw
    status, 768 for an exit code of 3).
options:
  remote_addr:
    description:
      - Container identifier.
    type: string
    default: inventory_hostname
    vars:
      - name: inventory_hostname
      - name: ansible_host
      - name: ansible_lxc_host
  executable:
    default: /bin/sh
    description:
      - Shell executable.
    type: string
    vars:
      - name: ansible_executable
      - name: ansible_lxc_executable
"""

import fcntl
import os
import select

from ansible import errors
from ansible.module_utils.common.text.converters import to_native
from ansible.plugins.connection import ConnectionBase
from ansible_collections.community.general.plugins.connection import lxc as _stock


class Connection(_stock.Connection):
    """community.general.lxc whose exec_command feeds stdin to its end."""

    transport = "lxc_pipelined"
    has_pipelining = True

    def exec_command(self, cmd, in_data=None, sudoable=False):
        """Run ``cmd`` in the container with ``in_data`` (if any) on its stdin, then EOF."""
        ConnectionBase.exec_command(self, cmd, in_data=in_data, sudoable=sudoable)
        executable = to_native(self.get_option("executable"), errors="surrogate_or_strict")
        local_cmd = [executable, "-c", to_native(cmd, errors="surrogate_or_strict")]

        # Pipes are close-on-exec (Python's default): the attached process keeps only the ends
        # it gets as 0, 1 and 2, so closing ours is an end of file it sees. Its ends stay
        # blocking; only ours, the controller's, are polled.
        ours, theirs = [], []
        try:
            read_out, write_out = os.pipe()
            ours.append(read_out)
            theirs.append(write_out)
            read_err, write_err = os.pipe()
            ours.append(read_err)
            theirs.append(write_err)
            kwargs = {"stdout": write_out, "stderr": write_err, "env_policy": _stock._lxc.LXC_ATTACH_CLEAR_ENV}
            write_in = None
            if in_data:
                read_in, write_in = os.pipe()
                ours.append(write_in)
                theirs.append(read_in)
                kwargs["stdin"] = read_in
                fcntl.fcntl(write_in, fcntl.F_SETFL, fcntl.fcntl(write_in, fcntl.F_GETFL) | os.O_NONBLOCK)

            self._display.vvv(f"EXEC {local_cmd}", host=self.container_name)
            pid = self.container.attach(_stock._lxc.attach_run_command, local_cmd, **kwargs)
            if pid == -1:
                raise errors.AnsibleError(f"failed to attach to container {self.container_name}")
            while theirs:
                os.close(theirs.pop())
            stdout, stderr = self._exchange(in_data, write_in, read_out, read_err, ours)
            _, status = os.waitpid(pid, 0)
            return os.waitstatus_to_exitcode(status), stdout, stderr
        finally:
            for fd in ours + theirs:
                try:
                    os.close(fd)
                except OSError:
                    pass

    @staticmethod
    def _exchange(in_data, write_in, read_out, read_err, ours):
        """Write ``in_data`` and close the write end; read stdout and stderr to their ends."""
        chunks = {read_out: [], read_err: []}
        readers = [read_out, read_err]
        writers = [write_in] if write_in is not None else []
        data = memoryview(in_data) if in_data else memoryview(b"")
        while readers or writers:
            try:
                readable, writable, _ = select.select(readers, writers, [])
            except InterruptedError:
                continue
            if writers and writable:
                try:
                    data = data[os.write(write_in, data):]
                except BlockingIOError:
                    pass
                except BrokenPipeError:  # it exited without reading everything: its output says why
                    data = data[len(data):]
                if not data:
                    writers.clear()
                    ours.remove(write_in)
                    os.close(write_in)
            for fd in readable:
                chunk = os.read(fd, 65536)
                if chunk:
                    chunks[fd].append(chunk)
                else:
                    readers.remove(fd)
        return b"".join(chunks[read_out]), b"".join(chunks[read_err])
