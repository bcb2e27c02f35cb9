#!/usr/bin/python
# -*- coding: utf-8 -*-
"""Read, in one round trip, what role ollama_container needs to know on the Docker host (changes nothing)."""

from __future__ import annotations

DOCUMENTATION = r"""
module: ollama_container_probe
short_description: The container, its image, its compose file, its port and its models in one call
description:
  - C(docker container inspect) of the container and C(docker image inspect) of the wanted image
    (null where absent, or where there is no docker CLI yet); the SHA-256 of the installed compose
    file; the listening TCP sockets that would stop Docker from publishing O(port) on O(address)
    (the same address, or a wildcard on either side), each with the process holding it (from
    /proc/net/tcp*, /proc/PID/fd), and the containers that publish the port; the models the
    server answering at O(api_url) has (null when it does not answer). Changes nothing.
options:
  name: {type: str, required: true, description: The container's name.}
  image: {type: str, required: true, description: The image the compose file names (image:tag).}
  compose_file: {type: path, required: true, description: The compose file's path on the host.}
  address: {type: str, required: true, description: The address the port is published on (0.0.0.0 for every one).}
  port: {type: int, required: true, description: The published TCP port.}
  api_url: {type: str, required: true, description: Where the server answers on the host.}
"""

RETURN = r"""
container: {description: docker container inspect of the container, or null, type: dict, returned: always}
image: {description: docker image inspect of the wanted image, or null, type: dict, returned: always}
compose_sha256: {description: The installed compose file's SHA-256, or null when it is absent, type: str, returned: always}
listeners:
  description: One per conflicting socket, with C(address), C(pid) and C(command) (pid and command null when no
    process of this host's PID namespace holds it) and C(text), e.g. C(python3 (pid 812) on 127.0.0.1:11434).
  type: list
  returned: always
publishers: {description: Names of the running containers that publish the port, type: list, returned: always}
models: {description: The model names the server lists (/api/tags), or null when it does not answer, type: list, returned: always}
"""

import hashlib
import ipaddress
import json
import os
import shutil
import socket
import subprocess
import urllib.request

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


def _docker_json(*argv: str) -> dict | None:
    """The first document of a `docker ... inspect`, or None (absent, or no docker CLI)."""
    if shutil.which("docker") is None:
        return None
    proc = subprocess.run(["docker", *argv], capture_output=True, text=True, timeout=60)
    if proc.returncode != 0:
        return None
    docs = json.loads(proc.stdout or "[]")
    return docs[0] if docs else None


def _publishers(port: int) -> list[str]:
    if shutil.which("docker") is None:
        return []
    proc = subprocess.run(["docker", "ps", "--filter", f"publish={port}", "--format", "{{.Names}}"],
                          capture_output=True, text=True, timeout=60)
    return proc.stdout.split() if proc.returncode == 0 else []


def _sha256(path: str) -> str | None:
    try:
        with open(path, "rb") as f:
            return hashlib.sha256(f.read()).hexdigest()
    except FileNotFoundError:
        return None


def _models(api_url: str, container: dict | None) -> list[str] | None:
    if not container or (container.get("State") or {}).get("Status") != "running":
        return None
    try:
        with urllib.request.urlopen(f"{api_url.rstrip('/')}/api/tags", timeout=10) as r:
            return [m["name"] for m in json.load(r).get("models") or []]
    except (OSError, ValueError, KeyError):
        return None


def main() -> None:
    from ansible.module_utils.basic import AnsibleModule

    module = AnsibleModule(argument_spec={"name": {"type": "str", "required": True},
                                          "image": {"type": "str", "required": True},
                                          "compose_file": {"type": "path", "required": True},
                                          "address": {"type": "str", "required": True},
                                          "port": {"type": "int", "required": True},
                                          "api_url": {"type": "str", "required": True}},
                           supports_check_mode=True)
    p = module.params
    address = p["address"].strip("[]") or "0.0.0.0"
    try:
        ipaddress.ip_address(address)
    except ValueError:
        try:
            address = socket.gethostbyname(address)
        except OSError as exc:
            module.fail_json(msg=f"cannot resolve the publish address {address!r}: {exc}")
    from concurrent.futures import ThreadPoolExecutor

    # The reads are independent: run them side by side (a re-run's time is mostly this probe's).
    with ThreadPoolExecutor(max_workers=6) as pool:
        container_f = pool.submit(_docker_json, "container", "inspect", p["name"])
        image_f = pool.submit(_docker_json, "image", "inspect", p["image"])
        listeners_f = pool.submit(find, address, p["port"])
        publishers_f = pool.submit(_publishers, p["port"])
        models_f = pool.submit(_models, p["api_url"], {"State": {"Status": "running"}})
    container = container_f.result()
    module.exit_json(changed=False, container=container, image=image_f.result(),
                     compose_sha256=_sha256(p["compose_file"]), listeners=listeners_f.result(),
                     publishers=publishers_f.result(),
                     models=models_f.result() if (container or {}).get("State", {}).get("Status") == "running" else None)


if __name__ == "__main__":
    main()
