"""The ollama_service role's molecule scenario: converge twice (the second must change nothing), then testinfra."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT
from tests.native_host import LXC_HOST_IP, www_server

pytestmark = [pytest.mark.infra, pytest.mark.slow]


def test_molecule_scenario_of_the_ollama_service_role():
    venv_bin = str(Path(sys.executable).parent)
    with www_server() as url:
        env = {**os.environ, "OLLAMA_PROVISIONER_WWW": url, "PATH": f"{venv_bin}{os.pathsep}{os.environ['PATH']}",
               "ANSIBLE_NOCOLOR": "1", "PY_COLORS": "0"}
        proc = subprocess.run([f"{venv_bin}/molecule", "test"], cwd=ROOT / "roles" / "ollama_service",
                              env=env, capture_output=True, text=True, timeout=900)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-6000:]
    assert "default > idempotence: Executed: Successful" in output
    assert "5 passed" in output, output[-3000:]


def test_molecule_scenario_of_the_lxc_target():
    """The instance is a real plain-LXC container made and destroyed by role lxc_container; converge is
    the shared service play inside it; idempotence and testinfra through Ansible's LXC connection."""
    venv_bin = str(Path(sys.executable).parent)
    with www_server(LXC_HOST_IP) as url:
        env = {**os.environ, "OLLAMA_PROVISIONER_WWW": url, "PATH": f"{venv_bin}{os.pathsep}{os.environ['PATH']}",
               "ANSIBLE_NOCOLOR": "1", "PY_COLORS": "0"}
        proc = subprocess.run([f"{venv_bin}/molecule", "test"], cwd=ROOT / "roles" / "lxc_container",
                              env=env, capture_output=True, text=True, timeout=900)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-6000:]
    assert "default > idempotence: Executed: Successful" in output
    assert "5 passed" in output, output[-3000:]
