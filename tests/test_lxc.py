"""The lxc target end to end on real components, plain LXC backend: the project creates an
unprivileged container on this machine from a Debian root filesystem tarball, starts it on lxcbr0,
installs the real Ollama server inside through the shared service play (Ansible's LXC
connection) and verifies inside the container. No GPU here: 100% CPU is the expected verdict.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import uuid
from pathlib import Path

import pytest
import yaml

from provisioner.cli import app
from tests.native_host import LXC_HOST_IP, MODEL_FILE, VERSION_A, www_server
from tests.real_ollama import STATE

pytestmark = [pytest.mark.infra, pytest.mark.slow]

TARBALL = STATE / "rootfs.tar"
MODELS = "/usr/share/ollama/.ollama/models"


def _run(*cmd: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, check=check, timeout=120, stdin=subprocess.DEVNULL)


def inside(name: str, command: str) -> str:
    return _run("lxc-attach", "-n", name, "--", "sh", "-c", command, check=False).stdout.strip()


@pytest.fixture(scope="module")
def www():
    with www_server(LXC_HOST_IP) as url:
        yield url


@pytest.fixture
def name():
    for tool in ("lxc-start", "lxc-attach", "lxc-destroy"):
        if not shutil.which(tool):
            pytest.fail(f"{tool} missing: run tests/infra/bootstrap.sh")
    if not TARBALL.is_file():
        pytest.fail(f"no root filesystem tarball {TARBALL}: run tests/infra/bootstrap.sh")
    name = f"oprov-{uuid.uuid4().hex[:8]}"
    try:
        yield name
    finally:
        _run("lxc-stop", "-n", name, "-k", check=False)
        _run("lxc-destroy", "-n", name, check=False)
        shutil.rmtree(f"/var/lib/lxc/{name}", ignore_errors=True)


@pytest.fixture
def provision(runner, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)

    def _run_cli(*args: str):
        return runner.invoke(app, [str(a) for a in args])

    return _run_cli


def write_lxc_inventory(directory: Path, name: str, www: str, **variables) -> Path:
    """An inventory whose lxc group is this machine, carrying a plain-LXC container ``name``."""
    host = {"ansible_connection": "local", "ansible_python_interpreter": "/usr/bin/python3"}
    settings = {
        "lxc_backend": "lxc",
        "lxc_name": name,
        "lxc_rootfs_tarball": str(TARBALL),
        "ollama_version": VERSION_A,
        "ollama_archive": f"{www}/ollama-linux-amd64.tgz",
        "ollama_models": [{"name": "smollm2", "from": f"{www}/{MODEL_FILE}"}],
        **variables,
    }
    directory.mkdir(parents=True, exist_ok=True)
    doc = {"all": {"children": {"lxc": {"hosts": {"lxchost": {**host, **settings}}}}}}
    (directory / "hosts.yml").write_text(yaml.safe_dump(doc, sort_keys=False))
    return directory


def test_plain_lxc_container_created_ollama_inside_verified_rerun_changes_nothing_uninstall_keeps_models(
        name, www, tmp_path, provision):
    inv = write_lxc_inventory(tmp_path / "inv", name, www, ollama_context_length=2048)
    first = provision("--target", "lxc", "-i", inv)
    assert first.exit_code == 0, first.output
    assert f"on container {name} on lxchost" in first.output
    assert "lxchost: smollm2:latest: 100% CPU" in first.output

    # Unprivileged, id-mapped, marked as ours, with an address on lxcbr0 and Ollama running inside.
    config = Path(f"/var/lib/lxc/{name}/config").read_text()
    assert "Managed by ollama-provisioner" in config and "lxc.idmap = u 0 100000 65536" in config
    assert inside(name, "cat /proc/self/uid_map").split() == ["0", "100000", "65536"]
    assert _run("lxc-info", "-n", name, "-iH").stdout.startswith("10.0.3.")
    assert inside(name, "systemctl is-active ollama") == "active"
    assert json.loads(inside(name, "curl -sf http://127.0.0.1:11434/api/version"))["version"] == VERSION_A
    assert 'Environment="OLLAMA_CONTEXT_LENGTH=2048"' in inside(
        name, "cat /etc/systemd/system/ollama.service.d/override.conf")

    again = provision("--target", "lxc", "-i", inv)
    assert again.exit_code == 0, again.output
    assert "changed 0 thing(s) on lxchost" in again.output

    blobs = inside(name, f"ls {MODELS}/blobs")
    removed = provision("uninstall", "--target", "lxc", "-i", inv)
    assert removed.exit_code == 0, removed.output
    assert "the container was kept" in removed.output
    assert inside(name, "systemctl is-active ollama") != "active"
    assert inside(name, f"ls {MODELS}/blobs") == blobs and blobs


def test_a_container_of_the_same_name_not_made_by_the_project_is_left_alone(name, www, tmp_path, provision):
    foreign = Path(f"/var/lib/lxc/{name}")
    foreign.mkdir(parents=True)
    (foreign / "config").write_text(f"lxc.uts.name = {name}\nlxc.rootfs.path = dir:/srv/{name}\n")
    before = sorted(p.name for p in foreign.iterdir())
    inv = write_lxc_inventory(tmp_path / "inv", name, www)
    result = provision("--target", "lxc", "-i", inv)
    assert result.exit_code == 4, result.output
    assert f"LXC container {name} on lxchost was not created by ollama-provisioner" in result.output
    assert "changes made before the failure: nothing was changed" in result.output
    assert sorted(p.name for p in foreign.iterdir()) == before
    assert (foreign / "config").read_text().startswith(f"lxc.uts.name = {name}\n")


def test_the_proxmox_backend_is_rendered_and_said_not_built(tmp_path, provision, write_inventory):
    inv = write_inventory("all:\n  children:\n    lxc:\n      hosts:\n        pve1: {lxc_vmid: 120}\n")
    result = provision("--target", "lxc", "-i", inv)
    assert result.exit_code == 5
    assert "lxc_backend 'proxmox' is not built in this version" in result.output
