"""The docker target end to end on real components: `provision --target docker` on a real Docker engine
inside a throwaway systemd container (tests/docker_host.py, the engine installed by role docker_host),
running a real Ollama image built locally from the same PyPI-built release archive as the native
tests (no registry: the image is loaded into the host's engine, so the role finds it and pulls nothing).

What it cannot prove: anything about a GPU (the test host has none: the GPU reservation is left out
of compose.yaml and the verification expects 100% CPU)."""

from __future__ import annotations

import json

import pytest
import yaml

from tests.docker_host import (
    NEVER_HEALTHY_TAG,
    OLLAMA_IMAGE,
    docker_host,
    load_images,
    load_sleeper,
    ollama_images,
)
from tests.native_host import MODEL_FILE, VERSION_A, VERSION_B, sh, www_server

pytestmark = [pytest.mark.infra, pytest.mark.slow]

COMPOSE = "/opt/ollama/compose.yaml"
LABEL = "org.ollama-provisioner.managed"


@pytest.fixture(scope="module")
def www():
    with www_server() as url:
        yield url


@pytest.fixture
def host():
    images = ollama_images()
    with docker_host(prefix="op-dk") as name:
        load_images(name, *images)
        yield name


def write_docker_inventory(directory, host: str, www: str, **variables):
    settings = {
        "ollama_version": VERSION_A,
        "ollama_docker_image": OLLAMA_IMAGE,
        "ollama_models": [{"name": "smollm2", "from": f"{www}/{MODEL_FILE}"}],
        **variables,
    }
    hostvars = {"ansible_connection": "community.docker.docker", "ansible_host": host,
                "ansible_python_interpreter": "/usr/bin/python3"}
    directory.mkdir(parents=True, exist_ok=True)
    doc = {"all": {"children": {"docker": {"hosts": {host: hostvars}}}, "vars": settings}}
    (directory / "hosts.yml").write_text(yaml.safe_dump(doc, sort_keys=False))
    return directory


def _inspect(host: str, what: str = "ollama") -> dict | None:
    out = sh(host, f"docker container inspect {what} 2>/dev/null || true")
    return json.loads(out)[0] if out and out != "[]" else None


def _api(host: str, path: str) -> dict:
    return json.loads(sh(host, f"python3 -c \"import urllib.request as u; "
                               f"print(u.urlopen('http://127.0.0.1:11434{path}').read().decode())\""))


def test_install_verifies_cpu_reruns_clean_refuses_a_foreign_container_and_uninstall_keeps_the_volume(
        host, www, tmp_path, provision):
    inv = write_docker_inventory(tmp_path / "inv", host, www)

    # Someone else's container named ollama (no project label): refused before anything changes.
    load_sleeper(host)
    foreign = sh(host, "docker run -d --name ollama local/sleeper /usr/bin/sleep infinity")
    refused = provision("--target", "docker", "-i", inv)
    assert refused.exit_code == 4, refused.output
    assert "a container named ollama already exists" in refused.output and "nothing was changed" in refused.output
    assert _inspect(host)["Id"] == foreign and _inspect(host)["State"]["Running"]
    assert sh(host, f"test -e {COMPOSE} && echo yes || echo no") == "no"
    sh(host, "docker rm -f ollama >/dev/null")

    first = provision("--target", "docker", "-i", inv)
    assert first.exit_code == 0, first.output
    assert f"{host}: Ollama {VERSION_A} answers at http://127.0.0.1:11434" in first.output
    assert f"{host}: smollm2:latest: 100% CPU" in first.output
    c = _inspect(host)
    assert c["Config"]["Labels"][LABEL] == "true" and c["State"]["Health"]["Status"] == "healthy"
    assert c["Config"]["Image"] == f"{OLLAMA_IMAGE}:{VERSION_A}"
    assert not c["HostConfig"].get("DeviceRequests")  # no GPU on this host: no reservation
    assert c["HostConfig"]["PortBindings"]["11434/tcp"] == [{"HostIp": "127.0.0.1", "HostPort": "11434"}]
    assert sh(host, f"cat {COMPOSE}") == (tmp_path / ".provision/rendered/docker" / host /
                                          "host/opt/ollama/compose.yaml").read_text().strip()
    assert _api(host, "/api/version")["version"] == VERSION_A
    assert "smollm2:latest" in [m["name"] for m in _api(host, "/api/tags")["models"]]
    # No model file left behind, in the container or on the host.
    assert sh(host, "docker exec ollama sh -c 'ls /tmp | grep ollama-provisioner-model || true'") == ""
    assert sh(host, "ls /tmp | grep ollama-model || true") == ""

    again = provision("--target", "docker", "-i", inv)
    assert again.exit_code == 0, again.output
    assert f"changed 0 thing(s) on {host}" in again.output
    assert _inspect(host)["Id"] == c["Id"]

    removed = provision("uninstall", "--target", "docker", "-i", inv)
    assert removed.exit_code == 0, removed.output
    assert _inspect(host) is None
    assert sh(host, "docker volume ls -q") == "ollama"
    assert "its models volume was kept" in removed.output

    purged = provision("uninstall", "--target", "docker", "-i", inv, "--purge")
    assert purged.exit_code == 0, purged.output
    assert sh(host, "docker volume ls -q") == ""


def test_upgrade_keeps_the_volumes_models_and_an_image_that_never_becomes_healthy_is_rolled_back(
        host, www, tmp_path, provision):
    inv = write_docker_inventory(tmp_path / "inv", host, www)
    assert provision("--target", "docker", "-i", inv).exit_code == 0
    blobs = sh(host, "docker exec ollama ls /root/.ollama/models/blobs")

    # A -> B: a new tag recreates the container on the same volume; the model is not created again.
    write_docker_inventory(tmp_path / "inv", host, www, ollama_version=VERSION_B)
    upgrade = provision("--target", "docker", "-i", inv)
    assert upgrade.exit_code == 0, upgrade.output
    assert "Create the model on the server" not in upgrade.output
    assert _api(host, "/api/version")["version"] == VERSION_B
    assert _inspect(host)["Config"]["Image"] == f"{OLLAMA_IMAGE}:{VERSION_B}"
    assert sh(host, "docker exec ollama ls /root/.ollama/models/blobs") == blobs

    # An image whose server never starts: never healthy, so B's compose file and image run again.
    write_docker_inventory(tmp_path / "inv", host, www, ollama_version=VERSION_B,
                           ollama_docker_tag=NEVER_HEALTHY_TAG, ollama_container_start_timeout=12)
    bad = provision("--target", "docker", "-i", inv)
    assert bad.exit_code == 4, bad.output
    assert "did not become healthy within 12s" in bad.output and "rolled back" in bad.output
    assert _inspect(host)["Config"]["Image"] == f"{OLLAMA_IMAGE}:{VERSION_B}"
    assert f"{OLLAMA_IMAGE}:{VERSION_B}" in sh(host, "cat /opt/ollama/compose.yaml")
    assert sh(host, "ls /opt/ollama") == "compose.yaml"
