#!/usr/bin/python
# -*- coding: utf-8 -*-
"""Who listens on a TCP address of the host: the process, read from /proc, changing nothing."""

from __future__ import annotations

DOCUMENTATION = r"""
module: listen_port_owner
short_description: Name the process that listens on a TCP port the container is to publish
description:
  - Reads the host's listening TCP sockets (/proc/net/tcp and tcp6) that would stop Docker from
    publishing O(port) on O(address) (the same address, or a wildcard on either side), and the
    process holding each (its pid and command, from /proc/PID/fd). Changes nothing.
options:
  address: {type: str, required: true, description: The address the port is to be published on (0.0.0.0 for every one).}
  port: {type: int, required: true, description: The TCP port.}
"""

RETURN = r"""
listeners:
  description: One per conflicting socket, with C(address), C(pid) and C(command) (pid and command null when no
    process of this host's PID namespace holds it) and C(text), e.g. C(python3 (pid 812) on 127.0.0.1:11434).
  type: list
  returned: always
"""

import ipaddress
import os
import socket

_LISTEN = "0A"


def _addr(hex_addr: str) -> str:
    raw = bytes.fromhex(hex_addr)
    if len(raw) == 4:
        return socket.inet_ntop(socket.AF_INET, raw[::-1])
    # /proc/net/tcp6 prints four little-endian 32-bit words.
    words = b"".join(raw[i:i + 4][::-1] for i in range(0, 16, 4))
    text = socket.inet_ntop(socket.AF_INET6, words)
    mapped = ipaddress.IPv6Address(text).ipv4_mapped
    return str(mapped) if mapped else text


def listening(port: int, proc: str = "/proc") -> list[tuple[str, str]]:
    """(address, socket inode) of every TCP socket listening on ``port``."""
    found = []
    for name in ("tcp", "tcp6"):
        try:
            with open(f"{proc}/net/{name}") as f:
                lines = f.readlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) < 10 or fields[3] != _LISTEN:
                continue
            local_addr, _, local_port = fields[1].partition(":")
            if int(local_port, 16) == port:
                found.append((_addr(local_addr), fields[9]))
    return found


def _wildcard(address: str) -> bool:
    return address in ("0.0.0.0", "::", "")


def conflicts(address: str, listener: str) -> bool:
    """Whether a socket listening on ``listener`` stops a bind of the same port on ``address``."""
    return _wildcard(address) or _wildcard(listener) or ipaddress.ip_address(address) == ipaddress.ip_address(listener)


def owners(inodes: set[str], proc: str = "/proc") -> dict[str, tuple[int, str]]:
    """{inode: (pid, command)} for the processes holding these sockets."""
    found: dict[str, tuple[int, str]] = {}
    for pid in (p for p in os.listdir(proc) if p.isdigit()):
        try:
            fds = os.listdir(f"{proc}/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                link = os.readlink(f"{proc}/{pid}/fd/{fd}")
            except OSError:
                continue
            inode = link[len("socket:["):-1] if link.startswith("socket:[") else None
            if inode in inodes and inode not in found:
                try:
                    with open(f"{proc}/{pid}/comm") as f:
                        command = f.read().strip()
                except OSError:
                    command = "?"
                found[inode] = (int(pid), command)
    return found


def find(address: str, port: int, proc: str = "/proc") -> list[dict]:
    sockets = [(a, inode) for a, inode in listening(port, proc) if conflicts(address, a)]
    held = owners({inode for _, inode in sockets}, proc)
    found = []
    for a, inode in sockets:
        pid, command = held.get(inode, (None, None))
        where = f"[{a}]:{port}" if ":" in a else f"{a}:{port}"
        text = f"{command} (pid {pid}) on {where}" if pid else f"a socket on {where} that no process here holds"
        found.append({"address": a, "pid": pid, "command": command, "text": text})
    return found


def main() -> None:
    from ansible.module_utils.basic import AnsibleModule

    module = AnsibleModule(argument_spec={"address": {"type": "str", "required": True},
                                          "port": {"type": "int", "required": True}},
                           supports_check_mode=True)
    address = module.params["address"].strip("[]") or "0.0.0.0"
    try:
        ipaddress.ip_address(address)
    except ValueError:
        try:
            address = socket.gethostbyname(address)
        except OSError as exc:
            module.fail_json(msg=f"cannot resolve the publish address {address!r}: {exc}")
    module.exit_json(changed=False, listeners=find(address, module.params["port"]))


if __name__ == "__main__":
    main()
