"""The molecule scenarios (ollama_service on a systemd container, the lxc target in a real LXC container,
the docker target on a Docker-in-Docker host): converge twice (the second must change nothing), then testinfra."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT
from tests.native_host import DOCKER_HOST_IP, LXC_HOST_IP, www_server

pytestmark = [pytest.mark.infra, pytest.mark.slow]


@pytest.mark.parametrize(("role", "host_ip"), [
    # The ollama_service role's scenario: the project's native playbook on a systemd container.
    ("ollama_service", DOCKER_HOST_IP),
    # The lxc target's: the instance is a real plain-LXC container made and destroyed by role
    # lxc_container; converge is the shared service play inside it; testinfra through Ansible's
    # LXC connection.
    ("lxc_container", LXC_HOST_IP),
    # The docker target's: the instance is a Docker host (Docker in Docker, tests/docker_host.py) made
    # and destroyed by the scenario's own playbooks; converge is playbooks/docker.yml on it.
    ("ollama_container", DOCKER_HOST_IP),
])
def test_molecule_scenario_converges_twice_with_no_change_then_testinfra(role, host_ip):
    venv_bin = str(Path(sys.executable).parent)
    with www_server(host_ip) as url:
        env = {**os.environ, "OLLAMA_PROVISIONER_WWW": url, "PATH": f"{venv_bin}{os.pathsep}{os.environ['PATH']}",
               "ANSIBLE_NOCOLOR": "1", "PY_COLORS": "0"}
        proc = subprocess.run([f"{venv_bin}/molecule", "test"], cwd=ROOT / "roles" / role,
                              env=env, capture_output=True, text=True, timeout=900)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-6000:]
    assert "default > idempotence: Executed: Successful" in output
    assert "5 passed" in output, output[-3000:]
