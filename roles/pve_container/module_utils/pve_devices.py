# -*- coding: utf-8 -*-
"""devN entries of a Proxmox VE container: which to set and which to delete so that exactly the wanted
NVIDIA nodes are passed in. Shared by the node's module (pve_passthrough, `pct set`) and the API's
(pve_container, with a root@pam ticket), so both choose indexes and stale entries the same way."""

from __future__ import annotations

import re


def parse_dev(value: str) -> tuple[str, str]:
    """(path, the options) of a devN value: '/dev/nvidia0,gid=44' or 'path=/dev/nvidia0,gid=44'."""
    parts = [p.strip() for p in str(value).split(",") if p.strip()]
    path = ""
    rest = []
    for part in parts:
        if part.startswith("path="):
            path = part[5:]
        elif "=" not in part and not path:
            path = part
        else:
            rest.append(part)
    return path, ",".join(sorted(rest))


def plan_devices(want: dict[str, str], have: dict[str, str]) -> tuple[dict[str, str], list[str]]:
    """What `pct set` must set and delete so that the wanted nodes are passed, nothing else of ours."""
    have_by_path = {parse_dev(v)[0]: (k, v) for k, v in have.items()}
    to_set: dict[str, str] = {}
    used = set(have)
    pending = []
    for value in want.values():
        path, opts = parse_dev(value)
        current = have_by_path.get(path)
        if current and parse_dev(current[1])[1] == opts:
            continue
        if current:
            to_set[current[0]] = value
        else:
            pending.append(value)
    wanted_paths = {parse_dev(v)[0] for v in want.values()}
    stale = sorted((k for k, v in have.items() if parse_dev(v)[0].startswith("/dev/nvidia")
                    and parse_dev(v)[0] not in wanted_paths), key=lambda k: int(k[3:]))
    free = [f"dev{i}" for i in range(256) if f"dev{i}" not in used or f"dev{i}" in stale]
    for value in pending:
        key = free.pop(0)
        to_set[key] = value
        if key in stale:
            stale.remove(key)
    return to_set, stale


def device_entries(config: dict) -> dict[str, str]:
    """The devN entries of a container config (as `pct config` prints it or the API returns it)."""
    return {k: str(v) for k, v in config.items() if re.fullmatch(r"dev\d+", k)}
