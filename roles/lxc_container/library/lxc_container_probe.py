#!/usr/bin/python3
"""Read a plain-LXC container's whole state in one round trip (role lxc_container).

Returns whether LXC is installed, whether a container of that name exists and carries the
project's mark, the sha256 of its config, whether its root filesystem is there, its state,
and its IPv4 addresses (an address means systemd-networkd ran: the container booted). Changes nothing.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess

from ansible.module_utils.basic import AnsibleModule

DOCUMENTATION = r"""
module: lxc_container_probe
short_description: Read a plain-LXC container's state in one round trip
options:
  name: {type: str, required: true, description: The container's name.}
  path: {type: path, default: /var/lib/lxc, description: Where LXC keeps containers.}
  mark: {type: str, required: true, description: Text whose presence in the config makes the container ours.}
"""


def _run(argv: list[str]) -> str:
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=20, check=False).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return ""


def main() -> None:
    module = AnsibleModule(argument_spec={"name": {"type": "str", "required": True},
                                          "path": {"type": "path", "default": "/var/lib/lxc"},
                                          "mark": {"type": "str", "required": True}},
                           supports_check_mode=True)
    name, mark = module.params["name"], module.params["mark"]
    directory = os.path.join(module.params["path"], name)
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
    module.exit_json(changed=False, container=state)


if __name__ == "__main__":
    main()
