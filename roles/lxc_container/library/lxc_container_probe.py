#!/usr/bin/python
"""Read a plain-LXC container's whole state in one round trip (role lxc_container).

Returns whether LXC is installed, whether a container of that name exists and carries the
project's mark, the sha256 of its config, whether its root filesystem is there, its state,
and its IPv4 addresses (an address means systemd-networkd ran: the container booted). Changes nothing.

A JSON-args module (Ansible's module replacer writes the task's arguments, as JSON, into the
string ARGS below): it needs nothing of Ansible on the host, so Ansible sends it as it is, piped
when pipelining is on, instead of building and unpacking a module archive on every re-converge.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys

DOCUMENTATION = r"""
module: lxc_container_probe
short_description: Read a plain-LXC container's state in one round trip
options:
  name: {type: str, required: true, description: The container's name.}
  path: {type: path, default: /var/lib/lxc, description: Where LXC keeps containers.}
  mark: {type: str, required: true, description: Text whose presence in the config makes the container ours.}
"""

ARGS = r"""<<INCLUDE_ANSIBLE_MODULE_JSON_ARGS>>"""


def _run(argv: list[str]) -> str:
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=20, check=False).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return ""


def probe(name: str, path: str, mark: str) -> dict:
    directory = os.path.join(path, name)
    config = os.path.join(directory, "config")
    state = {"lxc": shutil.which("lxc-info") is not None, "exists": os.path.isdir(directory), "ours": False,
             "config_sha256": None, "rootfs": os.path.exists(os.path.join(directory, "rootfs", "etc", "os-release")),
             "state": "", "addresses": []}
    if os.path.isfile(config):
        with open(config, "rb") as f:
            data = f.read()
        state["config_sha256"] = hashlib.sha256(data).hexdigest()
        state["ours"] = mark.encode() in data
    if state["lxc"] and state["exists"]:
        state["state"] = _run(["lxc-info", "-n", name, "-sH"])
        if state["state"] == "RUNNING":
            state["addresses"] = [a for a in _run(["lxc-info", "-n", name, "-iH"]).split() if a[:1].isdigit() and "." in a]
    return state


def main() -> None:
    args = json.loads(ARGS)
    missing = [k for k in ("name", "mark") if not isinstance(args.get(k), str) or not args[k]]
    unknown = sorted(k for k in args if not k.startswith("_ansible_") and k not in ("name", "path", "mark"))
    if missing or unknown:
        print(json.dumps({"failed": True, "msg": f"lxc_container_probe: missing {missing}, unsupported {unknown}"}))
        sys.exit(1)
    path = os.path.expanduser(os.path.expandvars(args.get("path") or "/var/lib/lxc"))
    print(json.dumps({"changed": False, "container": probe(args["name"], path, args["mark"])}))


if __name__ == "__main__":
    main()
