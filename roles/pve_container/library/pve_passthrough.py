#!/usr/bin/python
# -*- coding: utf-8 -*-
"""The NVIDIA passthrough of one Proxmox VE container, set on the node (runs on the node as root)."""

from __future__ import annotations

DOCUMENTATION = r"""
module: pve_passthrough
short_description: Set a Proxmox VE container's NVIDIA passthrough on the node
description:
  - The API cannot do this with a token (devN is root@pam-only and raw lxc.* keys are not API
    properties), so it is done on the node, as root, the way an administrator would.
  - style devN (Proxmox VE >= 8.1) runs C(pct set VMID --devN ... [--delete ...]) for what differs
    from C(pct config VMID): entries already right keep their index, stale /dev/nvidia* entries go.
  - style raw edits the main section of /etc/pve/lxc/VMID.conf (before the first snapshot
    section): lxc.cgroup2.devices.allow / lxc.mount.entry lines for NVIDIA majors and nodes that
    are not wanted any more are removed, the wanted ones added. Lines are recognised by content,
    not by marker comments (PVE folds every comment line into the description).
  - Reports changed, so the caller restarts a running container only when the passthrough changed.
options:
  vmid: {type: int, required: true}
  style: {type: str, choices: [devN, raw], required: true}
  devices: {type: dict, description: "devN: value (style devN)"}
  lines: {type: list, elements: str, description: "'key: value' lines (style raw)"}
  majors: {type: list, elements: int, description: the NVIDIA majors (which allow lines are ours)}
"""

import os
import re
import tempfile
from typing import Any

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.pve_devices import device_entries, plan_devices

PCT = "/usr/sbin/pct"


def ours(line: str, majors: set[int]) -> bool:
    key, _, value = line.partition(":")
    key, value = key.strip(), value.strip()
    if key in ("lxc.cgroup2.devices.allow", "lxc.cgroup.devices.allow"):
        m = re.match(r"c\s+(\d+):", value)
        return bool(m and int(m.group(1)) in majors)
    if key == "lxc.mount.entry":
        return value.startswith("/dev/nvidia")
    return False


def plan_raw(text: str, wanted: list[str], majors: set[int]) -> str:
    """The config with our raw lines in its main section exactly as wanted; the rest untouched."""
    lines = text.splitlines()
    end = next((i for i, line in enumerate(lines) if line.startswith("[")), len(lines))
    main, sections = lines[:end], lines[end:]
    norm = lambda line: re.sub(r"\s*:\s*", ": ", line.strip(), count=1)  # noqa: E731
    want = [norm(w) for w in wanted]
    kept = [line for line in main if not ours(line, majors) or norm(line) in want]
    present = {norm(line) for line in kept}
    # Appended after the last non-empty line of the main section.
    while kept and not kept[-1].strip():
        kept.pop()
    added = [w for w in want if w not in present]
    new_main = kept + added
    if sections:
        new_main.append("")
    return "\n".join(new_main + sections) + "\n"


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "vmid": {"type": "int", "required": True},
            "style": {"type": "str", "choices": ["devN", "raw"], "required": True},
            "devices": {"type": "dict", "default": {}},
            "lines": {"type": "list", "elements": "str", "default": []},
            "majors": {"type": "list", "elements": "int", "default": []},
        },
        supports_check_mode=True,
    )
    p = module.params
    vmid = p["vmid"]
    result: dict[str, Any] = {"changed": False, "vmid": vmid}
    if p["style"] == "devN":
        rc, out, err = module.run_command([PCT, "config", str(vmid)])
        if rc != 0:
            module.fail_json(msg=f"`pct config {vmid}` failed on the node (exit {rc}): {(err or out).strip()}")
        have = device_entries(dict(line.split(": ", 1) for line in out.splitlines() if ": " in line))
        to_set, stale = plan_devices({k: str(v) for k, v in p["devices"].items()}, have)
        if to_set or stale:
            cmd = [PCT, "set", str(vmid)]
            for key in sorted(to_set, key=lambda k: int(k[3:])):
                cmd += [f"--{key}", to_set[key]]
            if stale:
                cmd += ["--delete", ",".join(stale)]
            result.update(changed=True, command=" ".join(cmd))
            result["diff"] = {"before": "".join(f"{k}: {v}\n" for k, v in sorted(have.items())),
                              "after": "".join(f"{k}: {v}\n" for k, v in sorted({**{k: v for k, v in have.items()
                                                                                    if k not in stale}, **to_set}.items()))}
            if not module.check_mode:
                rc, out, err = module.run_command(cmd)
                if rc != 0:
                    module.fail_json(msg=f"`{' '.join(cmd)}` failed on the node (exit {rc}): {(err or out).strip()}",
                                     **result)
        module.exit_json(**result)

    path = f"/etc/pve/lxc/{vmid}.conf"
    try:
        with open(path, encoding="utf-8") as handle:
            before = handle.read()
    except FileNotFoundError:
        module.fail_json(msg=f"{path} does not exist on the node: CT {vmid} is not on this node (set lxc_proxmox_node "
                             "to the node that holds it)")
    after = plan_raw(before, p["lines"], set(p["majors"]))
    if after != before:
        result.update(changed=True, diff={"before": before, "after": after, "before_header": path,
                                          "after_header": path})
        if not module.check_mode:
            fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix=f".{vmid}.conf.")
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write(after)
            os.rename(tmp, path)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
