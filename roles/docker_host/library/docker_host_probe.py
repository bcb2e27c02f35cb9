#!/usr/bin/python
# -*- coding: utf-8 -*-
"""Read, in one round trip, what the docker_host role needs to know about the host (changes nothing)."""

from __future__ import annotations

DOCUMENTATION = r"""
module: docker_host_probe
short_description: Read the state of a host's Docker engine in one call (changes nothing)
description:
  - The distribution (os-release id and code name, dpkg architecture), which of the given
    packages are installed (and their versions), the engine's version (C(dockerd --version)),
    whether docker.service is active and enabled and its main PID, whether
    nvidia-container-runtime-hook is on the PATH, whether dockerd knows C(--validate), and the
    compose command that works (C(docker compose) v2 or C(docker-compose)).
options:
  packages: {type: list, elements: str, default: [], description: Packages whose installed version to report.}
  daemon_json:
    type: path
    description: The daemon's configuration file; with it, C(state.daemon_json) says whether merging O(fragment)
      would change it (C(would_change)), the C(error) that stops a merge, and the C(conflicts) it would warn of.
  fragment: {type: dict, default: {}, description: What the project needs in O(daemon_json).}
"""

RETURN = r"""
state:
  description: What was found; every key is present, with null (or false) where the thing is missing.
  type: dict
  returned: always
"""

import json
import os
import re
import shutil
import subprocess

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.daemon_json_merge import DaemonJsonError, merge, read

# 20.10.24+dfsg1, 26.1.5, 18.09.1-ce, 1.13.1
_VERSION = re.compile(r"version\s+v?(\d+\.\d+(?:\.\d+)?)", re.IGNORECASE)
_SBIN = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def _run(*argv: str, timeout: int = 20) -> tuple[int, str]:
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                              env={**os.environ, "PATH": _SBIN, "LC_ALL": "C"})
    except (OSError, subprocess.TimeoutExpired) as err:
        return 127, str(err)
    return proc.returncode, (proc.stdout + proc.stderr).strip()


def _os_release() -> dict[str, str]:
    out = {}
    try:
        with open("/etc/os-release", encoding="utf-8") as f:
            for line in f:
                key, _, value = line.strip().partition("=")
                out[key] = value.strip('"')
    except OSError:
        pass
    return out


def _packages(names: list[str]) -> dict[str, str]:
    if not names:
        return {}
    rc, out = _run("dpkg-query", "-W", "-f", "${Package} ${Version} ${db:Status-Status}\n", *names)
    found = {}
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[2] == "installed":
            found[parts[0]] = parts[1]
    return found


def _info() -> dict | None:
    """What the running engine says about itself (None when it does not answer)."""
    rc, out = _run("docker", "info", "--format", "{{json .}}")
    if rc != 0:
        return None
    try:
        doc = json.loads(out.splitlines()[-1])
    except (ValueError, IndexError):
        return None
    return {
        "server_version": doc.get("ServerVersion"),
        "runtimes": sorted((doc.get("Runtimes") or {}).keys()),
        "default_runtime": doc.get("DefaultRuntime"),
        "live_restore": bool(doc.get("LiveRestoreEnabled")),
        "cgroup_driver": doc.get("CgroupDriver"),
        "cgroup_version": doc.get("CgroupVersion"),
    }


def _running() -> list[dict]:
    """The running containers, each with its restart policy (what a dockerd restart does to it)."""
    rc, ids = _run("docker", "ps", "-q")
    if rc != 0 or not ids.split():
        return []
    rc, out = _run("docker", "inspect", "--format", "{{.Name}}\t{{.HostConfig.RestartPolicy.Name}}", *ids.split())
    running = []
    for line in out.splitlines():
        name, _, policy = line.partition("\t")
        if name:
            running.append({"name": name.lstrip("/"), "restart_policy": policy or "no"})
    return sorted(running, key=lambda c: c["name"])


# Where the docker CLI looks for its plugins (compose v2 is one).
_PLUGIN_DIRS = ("/usr/local/lib/docker/cli-plugins", "/usr/local/libexec/docker/cli-plugins",
                "/usr/lib/docker/cli-plugins", "/usr/libexec/docker/cli-plugins")


def _compose() -> tuple[str | None, str | None]:
    """The compose command that works here and its version: `docker compose` (v2) first."""
    if shutil.which("docker", path=_SBIN):
        for directory in _PLUGIN_DIRS:
            plugin = os.path.join(directory, "docker-compose")
            if os.access(plugin, os.X_OK):
                rc, out = _run(plugin, "version", "--short")
                if rc == 0:
                    return "docker compose", out.splitlines()[-1].lstrip("v")
    if shutil.which("docker-compose", path=_SBIN):
        # Debian's v1 is Python and slow to start: its package says its version.
        version = _packages(["docker-compose"]).get("docker-compose")
        if version:
            return "docker-compose", re.sub(r"-[^-]*$", "", version.split(":")[-1])
        rc, out = _run("docker-compose", "version", "--short")
        if rc == 0:
            return "docker-compose", out.splitlines()[-1].lstrip("v")
    return None, None


def _unit() -> tuple[str, str, str]:
    """docker.service's active state, unit file state and main PID, in one systemctl call."""
    rc, out = _run("systemctl", "show", "-p", "ActiveState", "-p", "UnitFileState", "-p", "MainPID",
                   "docker.service")
    props = dict(line.partition("=")[::2] for line in out.splitlines())
    return props.get("ActiveState", ""), props.get("UnitFileState", ""), props.get("MainPID", "")


def probe(packages: list[str]) -> dict:
    from concurrent.futures import ThreadPoolExecutor

    release = _os_release()
    dockerd = shutil.which("dockerd", path=_SBIN)
    # The reads are independent: run them side by side (a re-run's time is mostly this probe's).
    with ThreadPoolExecutor(max_workers=8) as pool:
        arch_f = pool.submit(_run, "dpkg", "--print-architecture")
        version_f = pool.submit(_run, dockerd, "--version") if dockerd else None
        unit_f = pool.submit(_unit)
        packages_f = pool.submit(_packages, packages)
        info_f = pool.submit(_info)
        running_f = pool.submit(_running)
        compose_f = pool.submit(_compose)
    rc, arch = arch_f.result()
    version_text = version = None
    validate = False
    if version_f is not None:
        rc, version_text = version_f.result()
        match = _VERSION.search(version_text)
        version = match.group(1) if match else None
        # `dockerd --validate --config-file F` came with Docker Engine 23.0.
        validate = version is not None and int(version.split(".")[0]) >= 23
    active, enabled, pid = unit_f.result()
    info = info_f.result() if active == "active" else None
    compose, compose_version = compose_f.result()
    return {
        "os_id": release.get("ID"),
        "codename": release.get("VERSION_CODENAME"),
        "arch": arch if arch and " " not in arch else None,
        "packages": packages_f.result(),
        "dockerd": dockerd,
        "engine_version": version,
        "engine_version_text": version_text,
        "dockerd_validate": validate,
        "active": active == "active",
        "enabled": enabled == "enabled",
        "main_pid": int(pid) if pid.isdigit() else 0,
        "nvidia_hook": shutil.which("nvidia-container-runtime-hook", path=_SBIN),
        "info": info,
        "running": running_f.result() if info is not None else [],
        "compose": compose,
        "compose_version": compose_version,
    }


def daemon_json(path: str, fragment: dict) -> dict:
    """What merging ``fragment`` into ``path`` would do (the merge module's own logic), without writing:
    the run skips the merge task when nothing would change. A file that cannot be merged is
    reported, not raised: the merge task then runs and stops with the error."""
    try:
        result = merge(read(path), fragment, path)
    except (DaemonJsonError, OSError, UnicodeDecodeError) as err:
        return {"would_change": False, "error": str(err), "conflicts": [], "live_restore": False}
    return {"would_change": result.changed, "error": None, "conflicts": result.conflicts,
            "live_restore": result.live_restore}


def main() -> None:
    module = AnsibleModule(argument_spec={"packages": {"type": "list", "elements": "str", "default": []},
                                          "daemon_json": {"type": "path"},
                                          "fragment": {"type": "dict", "default": {}}},
                           supports_check_mode=True)
    state = probe(module.params["packages"])
    if module.params["daemon_json"]:
        state["daemon_json"] = daemon_json(module.params["daemon_json"], module.params["fragment"])
    module.exit_json(changed=False, state=state)


if __name__ == "__main__":
    main()
