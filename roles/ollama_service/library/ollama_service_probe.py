#!/usr/bin/python
# -*- coding: utf-8 -*-
"""Read, in one round trip, everything the ollama_service role would otherwise check task by task.

A JSON-args module (Ansible's module replacer writes the task's arguments, as JSON, into the
string ARGS below): it needs nothing of Ansible on the host, so Ansible sends it as it is, piped
when pipelining is on, instead of building and unpacking a module archive on every re-converge.
"""

from __future__ import annotations

DOCUMENTATION = r"""
module: ollama_service_probe
short_description: Read the state of an Ollama service install in one call (changes nothing)
description:
  - Reports the sha256 of the unit and the drop-in, the installed versions and where the
    symlinks point, whether the service is active and enabled, the service user, the GPU
    groups that exist (render, video), the owner of the models directory, and what the server answers on /api/version, /api/tags and /api/ps.
  - The ollama_service role compares this with what it would install; when everything
    matches it skips the full converge, so a re-run on an up-to-date host is one round trip.
options:
  install_root: {type: path, required: true, description: Root of the versioned installs.}
  version: {type: str, required: true, description: The version to look for.}
  user: {type: str, required: true, description: The service user.}
  models_dir: {type: path, required: true, description: The models directory.}
  home: {type: path, required: true, description: The service user's home.}
  api_url: {type: str, required: true, description: Base URL of the server.}
"""

RETURN = r"""
state:
  description: What was found; every key is present, with null where the thing is missing.
  type: dict
  returned: always
"""

import grp
import hashlib
import json
import os
import pwd
import subprocess
import sys
import urllib.request

ARGS = r"""<<INCLUDE_ANSIBLE_MODULE_JSON_ARGS>>"""
OPTIONS = ("install_root", "version", "user", "models_dir", "home", "api_url")


def _sha256(path):
    try:
        with open(path, "rb") as f:
            return hashlib.sha256(f.read()).hexdigest()
    except OSError:
        return None


def _readlink(path):
    try:
        return os.readlink(path)
    except OSError:
        return None


def _owner(path):
    try:
        st = os.stat(path)
        return pwd.getpwuid(st.st_uid).pw_name
    except (OSError, KeyError):
        return None


def _systemctl(*args):
    try:
        proc = subprocess.run(["systemctl", *args, "ollama.service"], capture_output=True, text=True, timeout=20)
        return proc.stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return None


def _get(url):
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return json.loads(resp.read().decode())
    except Exception:  # unreachable, not JSON: the role converges fully and says why
        return None


def main():
    args = json.loads(ARGS)
    missing = [k for k in OPTIONS if not isinstance(args.get(k), str) or not args[k]]
    unknown = sorted(k for k in args if not k.startswith("_ansible_") and k not in OPTIONS)
    if missing or unknown:
        print(json.dumps({"failed": True, "msg": f"ollama_service_probe: missing {missing}, unsupported {unknown}"}))
        sys.exit(1)
    paths = ("install_root", "models_dir", "home")
    p = {k: os.path.expanduser(os.path.expandvars(args[k])) if k in paths else args[k] for k in OPTIONS}
    version_dir = os.path.join(p["install_root"], "versions", p["version"])
    try:
        user = pwd.getpwnam(p["user"])
        groups = sorted(g.gr_name for g in grp.getgrall() if p["user"] in g.gr_mem)
    except KeyError:
        user, groups = None, []
    existing_gpu_groups = []
    for name in ("render", "video"):
        try:
            grp.getgrnam(name)
            existing_gpu_groups.append(name)
        except KeyError:
            pass
    version = _get(p["api_url"].rstrip("/") + "/api/version")
    tags = _get(p["api_url"].rstrip("/") + "/api/tags")
    ps = _get(p["api_url"].rstrip("/") + "/api/ps")
    state = {
        "unit_sha256": _sha256("/etc/systemd/system/ollama.service"),
        "dropin_sha256": _sha256("/etc/systemd/system/ollama.service.d/override.conf"),
        "version_installed": os.path.exists(os.path.join(version_dir, ".archive-sha256")),
        "current_link": _readlink(os.path.join(p["install_root"], "current")),
        "bin_link": _readlink("/usr/local/bin/ollama"),
        "active": _systemctl("is-active"),
        "enabled": _systemctl("is-enabled"),
        "user_exists": user is not None,
        "user_groups": groups,
        "gpu_groups": existing_gpu_groups,
        "gpu_groups_missing": [g for g in existing_gpu_groups if g not in groups],
        "home_owner": _owner(p["home"]),
        "models_dir_owner": _owner(p["models_dir"]),
        "server_version": (version or {}).get("version"),
        "models": [m.get("name") for m in (tags or {}).get("models", [])] if tags else None,
        "loaded": [m.get("name") for m in (ps or {}).get("models", [])] if ps else [],
    }
    print(json.dumps({"changed": False, "state": state}))


if __name__ == "__main__":
    main()
