"""The docker target end to end on real components: `provision --target docker` on a real Docker engine
inside a throwaway systemd container (tests/docker_host.py, the engine installed by role docker_host),
running a real Ollama image built locally from the same PyPI-built release archive as the native
tests, pushed to a real local registry (Debian's docker-registry) that the target pulls from over
plain HTTP through the insecure-registries entry the project merges into daemon.json.

The GPU path runs with a DOUBLE of a GPU host's facts (an NVIDIA PCI function and driver 550 in the
facts file given with --facts) and the stand-in NVIDIA Container Toolkit from a local signed apt
repository: it proves the toolkit install, the runtime merge, the GPU reservation that dockerd
accepts and what the verification reads from docker inspect. What it cannot prove: that a real
toolkit injects a real GPU (the stand-in hook injects nothing, so the verdict is 100% CPU and the
cause is the missing device node).
"""

from __future__ import annotations

import json
import re
import secrets
import subprocess

import pytest
import yaml

from tests.docker_host import (
    NEVER_HEALTHY_TAG,
    OLLAMA_IMAGE,
    docker_host,
    load_sleeper,
    registry,
    standin_toolkit_repo,
)
from tests.native_host import MODEL_FILE, VERSION_A, VERSION_B, sh, www_server
from tests.test_expose_lxc import _status

pytestmark = [pytest.mark.infra, pytest.mark.slow]

COMPOSE = "/opt/ollama/compose.yaml"
LABEL = "org.ollama-provisioner.managed"
# A user's own daemon.json, in the user's formatting: every key must survive the merge byte for byte.
USER_DAEMON_JSON = """{
    "log-driver": "json-file",
    "log-opts": { "max-size": "10m", "max-file": "3" },
    "registry-mirrors": ["http://10.9.9.9:5000"],
    "insecure-registries": ["10.9.9.9:5000"]
}
"""


@pytest.fixture(scope="module")
def www():
    with www_server() as url:
        yield url


@pytest.fixture(scope="module")
def reg():
    return registry()


@pytest.fixture
def host(reg):
    with docker_host(prefix="op-dk") as name:
        yield name


def write_docker_inventory(directory, host: str, www: str, reg=None, **variables):
    """The inventory of one Docker host; its image from ``reg`` (a Registry), else local/ollama as
    load_images() puts it in the host's engine."""
    settings = {
        "ollama_version": VERSION_A,
        "ollama_docker_image": reg.repository if reg else OLLAMA_IMAGE,
        "ollama_docker_insecure_registries": [reg.address] if reg else [],
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


def _nothing_changed(host: str) -> None:
    assert sh(host, f"test -e {COMPOSE} && echo yes || echo no") == "no"
    assert sh(host, "cat /etc/docker/daemon.json") == USER_DAEMON_JSON.strip()
    assert sh(host, "docker volume ls -q") == ""


def test_install_from_a_registry_verifies_cpu_reruns_clean_refuses_what_is_not_ours_and_uninstall_keeps_the_volume(
        host, www, reg, tmp_path, provision):
    inv = write_docker_inventory(tmp_path / "inv", host, www, reg)
    sh(host, f"cat > /etc/docker/daemon.json <<'EOF'\n{USER_DAEMON_JSON}EOF\nsystemctl restart docker")

    # A dry run on a fresh host changes nothing.
    dry = provision("--target", "docker", "-i", inv, "--check")
    assert dry.exit_code == 0, dry.output
    _nothing_changed(host)

    # Someone else's process on the port the compose file publishes: refused, named, nothing changed.
    sh(host, "setsid python3 -m http.server --bind 127.0.0.1 11434 >/dev/null 2>&1 < /dev/null &")
    sh(host, "for i in $(seq 50); do python3 -c 'import socket; socket.create_connection((\"127.0.0.1\", 11434))' "
             "2>/dev/null && break; sleep 0.1; done")
    taken = provision("--target", "docker", "-i", inv)
    assert taken.exit_code == 4, taken.output
    holder = re.search(r"port 127\.0\.0\.1:11434 on \S+ is already taken by python3 \(pid (\d+)\) on 127\.0\.0\.1:11434",
                       taken.output)
    assert holder, taken.output
    assert "nothing was changed" in taken.output
    _nothing_changed(host)
    assert "http.server" in sh(host, f"tr '\\0' ' ' < /proc/{holder[1]}/cmdline")  # the pid named is the holder's
    sh(host, f"kill {holder[1]}")

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

    # daemon.json: the user's keys byte for byte, the registry appended to the user's own list.
    merged = sh(host, "cat /etc/docker/daemon.json")
    for member in ('"log-driver": "json-file"', '"log-opts": { "max-size": "10m", "max-file": "3" }',
                   '"registry-mirrors": ["http://10.9.9.9:5000"]'):
        assert member in merged, merged
    assert json.loads(merged)["insecure-registries"] == ["10.9.9.9:5000", reg.address]
    assert merged.startswith('{\n    "log-driver": "json-file",\n    "log-opts"')

    # The image came from the registry (pulled by the engine, not loaded), and its digest is recorded.
    c = _inspect(host)
    image = json.loads(sh(host, f"docker image inspect {reg.image(VERSION_A)}"))[0]
    (repo_digest,) = image["RepoDigests"]
    assert repo_digest.startswith(f"{reg.repository}@sha256:")
    manifest = json.loads((tmp_path / ".provision/rendered/docker" / host / "manifest.json").read_text())
    assert manifest["deployed_image"] == {"image": reg.image(VERSION_A), "digest": repo_digest,
                                          "image_id": image["Id"]}
    assert c["Config"]["Labels"][LABEL] == "true" and c["State"]["Health"]["Status"] == "healthy"
    assert c["Config"]["Image"] == reg.image(VERSION_A) and c["Image"] == image["Id"]
    assert not c["HostConfig"].get("DeviceRequests")  # no GPU on this host: no reservation
    assert c["HostConfig"]["PortBindings"]["11434/tcp"] == [{"HostIp": "127.0.0.1", "HostPort": "11434"}]
    assert sh(host, f"cat {COMPOSE}") == (tmp_path / ".provision/rendered/docker" / host /
                                          "host/opt/ollama/compose.yaml").read_text().strip()
    assert _api(host, "/api/version")["version"] == VERSION_A
    assert "smollm2:latest" in [m["name"] for m in _api(host, "/api/tags")["models"]]
    # No model file left behind, in the container or on the host.
    assert sh(host, "docker exec ollama sh -c 'ls /tmp | grep ollama-provisioner-model || true'") == ""
    assert sh(host, "ls /tmp | grep ollama-model || true") == ""
    # The verification read docker inspect and docker info of the real engine.
    evidence = sorted((tmp_path / ".provision").glob(f"runs/*-evidence*/{host}.evidence.json"))[-1]
    docker_view = json.loads(evidence.read_text())["docker"]
    assert docker_view["device_requests"] == [] and docker_view["runtime"] == "runc"
    assert "runc" in docker_view["runtimes"] and docker_view["cgroup_driver"] in ("cgroupfs", "systemd")

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


def test_upgrade_keeps_the_volumes_models_bad_images_leave_the_running_one_and_the_proxy_guards_it(
        host, www, reg, tmp_path, provision):
    inv = write_docker_inventory(tmp_path / "inv", host, www, reg)
    assert provision("--target", "docker", "-i", inv).exit_code == 0
    blobs = sh(host, "docker exec ollama ls /root/.ollama/models/blobs")

    # A -> B: a new tag recreates the container on the same volume; the model is not created again.
    write_docker_inventory(tmp_path / "inv", host, www, reg, ollama_version=VERSION_B)
    upgrade = provision("--target", "docker", "-i", inv)
    assert upgrade.exit_code == 0, upgrade.output
    assert "Create the model on the server" not in upgrade.output
    assert _api(host, "/api/version")["version"] == VERSION_B
    running = _inspect(host)
    assert running["Config"]["Image"] == reg.image(VERSION_B)
    assert sh(host, "docker exec ollama ls /root/.ollama/models/blobs") == blobs

    # A tag the registry does not have: the pull fails naming registry, image and tag; B keeps running.
    write_docker_inventory(tmp_path / "inv", host, www, reg, ollama_version=VERSION_B, ollama_docker_tag="0.0.0-absent")
    absent = provision("--target", "docker", "-i", inv)
    assert absent.exit_code == 4, absent.output
    assert (f"cannot pull {reg.image('0.0.0-absent')} (registry {reg.address}, image {reg.repository}, "
            "tag 0.0.0-absent)") in absent.output
    assert "the container that runs keeps running" in absent.output
    after = _inspect(host)
    assert after["Id"] == running["Id"] and after["State"]["Running"]
    assert f"{reg.image(VERSION_B)}\"" in sh(host, f"cat {COMPOSE}")

    # An image whose server never starts: never healthy, so B's compose file and image run again.
    write_docker_inventory(tmp_path / "inv", host, www, reg, ollama_version=VERSION_B,
                           ollama_docker_tag=NEVER_HEALTHY_TAG, ollama_container_start_timeout=12)
    bad = provision("--target", "docker", "-i", inv)
    assert bad.exit_code == 4, bad.output
    assert "did not become healthy within 12s" in bad.output and "rolled back" in bad.output
    assert _inspect(host)["Config"]["Image"] == reg.image(VERSION_B)
    assert reg.image(VERSION_B) in sh(host, f"cat {COMPOSE}")
    assert sh(host, "ls /opt/ollama") == "compose.yaml"

    # Exposed: the TLS and token proxy runs on the Docker host (Debian's nginx, role ollama_proxy) in
    # front of the port the compose file keeps on loopback; the verification checks it through the proxy.
    token = secrets.token_hex(20)
    write_docker_inventory(tmp_path / "inv", host, www, reg, ollama_version=VERSION_B,
                           ollama_expose_address="0.0.0.0:8443",
                           ollama_expose_tokens=[{"name": "lan-client", "token": token}])
    exposed = provision("--target", "docker", "-i", inv, "--json")
    assert exposed.exit_code == 0, exposed.output
    exposure = json.loads(exposed.stdout)["hosts"][0]["exposure"]
    assert exposure["ok"] and exposure["results"][:3] == ["no token: 401", "wrong token: 401", "token 'lan-client': 200"]
    assert sh(host, "systemctl is-active ollama-proxy") == "active"
    assert _inspect(host)["HostConfig"]["PortBindings"]["11434/tcp"] == [{"HostIp": "127.0.0.1", "HostPort": "11434"}]
    ip = subprocess.run(["docker", "inspect", "-f", "{{.NetworkSettings.IPAddress}}", host],
                        capture_output=True, text=True, check=True).stdout.strip()
    assert _status(ip, exposure["fingerprint"], None) == 401
    assert _status(ip, exposure["fingerprint"], token) == 200
    assert token not in exposed.stdout + exposed.stderr


def gpu_host_facts(directory, host: str):
    """A DOUBLE of a GPU host's discovered facts (the test host has no GPU): an RTX 4090's PCI function
    and a loaded 550 driver, in the facts file format discovery writes (<host>.json)."""
    directory.mkdir(parents=True, exist_ok=True)
    facts = {"source": "discovered", "cpu_vendor": "intel", "cpu_flags": ["avx", "avx2", "fma", "f16c"],
             "nvidia_driver_version": "550.90.07", "device_majors": {"nvidia-frontend": 195, "nvidia-uvm": 511},
             "pci_devices": [{"address": "0000:01:00.0", "vendor_id": "10de", "device_id": "2684",
                              "driver": "nvidia", "iommu_group": 12}],
             "gpus": [{"name": "NVIDIA GeForce RTX 4090", "compute_capability": "8.9", "memory_total_mib": 24564}],
             "cgroup_version": 2}
    (directory / f"{host}.json").write_text(json.dumps(facts))
    return directory


def test_a_gpu_host_gets_the_toolkit_the_runtime_and_the_gpu_request_and_the_verification_names_the_cause(
        host, www, reg, tmp_path, provision):
    repo = standin_toolkit_repo()
    inv = write_docker_inventory(tmp_path / "inv", host, www, reg, docker_host_toolkit_repo_url=repo.repo_url,
                                 docker_host_toolkit_key_url=repo.key_url)
    facts = gpu_host_facts(tmp_path / "facts", host)

    run = provision("--target", "docker", "-i", inv, "--facts", facts)
    # Installed for a GPU, so the verification expects 100% GPU: the stand-in injects no device.
    assert run.exit_code == 1, run.output
    assert sh(host, "dpkg-query -W -f '${Version}' nvidia-container-toolkit") == repo.version
    daemon = json.loads(sh(host, "cat /etc/docker/daemon.json"))
    assert daemon["runtimes"]["nvidia"]["path"] == "nvidia-container-runtime"
    assert daemon["exec-opts"] == ["native.cgroupdriver=cgroupfs"]
    (request,) = _inspect(host)["HostConfig"]["DeviceRequests"]
    assert request["Driver"] == "nvidia" and request["Count"] == -1 and request["Capabilities"] == [["gpu"]]
    env = _inspect(host)["Config"]["Env"]
    assert "NVIDIA_DRIVER_CAPABILITIES=compute,utility" in env
    assert f"{host}: smollm2:latest: 100% CPU" in run.output
    assert "no NVIDIA GPU visible in the target" in run.output and "runtimes.nvidia" in run.output
    assert "docker-no-nvidia-runtime" not in run.output and "without a GPU request" not in run.output

    # The reverse: the engine loses its nvidia runtime (a daemon.json rewritten by hand); the same
    # container, restarted by dockerd, requests the GPU from an engine that has no runtime for it.
    sh(host, "python3 -c \"import json; p='/etc/docker/daemon.json'; d=json.load(open(p)); d.pop('runtimes'); "
             "json.dump(d, open(p, 'w'))\" && systemctl restart docker")
    sh(host, "for i in $(seq 100); do [ \"$(docker inspect -f '{{.State.Health.Status}}' ollama)\" = healthy ] "
             "&& break; sleep 0.3; done")
    verify = provision("verify", "--target", "docker", "-i", inv, "--json")
    assert verify.exit_code == 1, verify.output
    verdict = json.loads(verify.output)
    assert verdict["verdict"] == "cpu"
    assert "docker-no-nvidia-runtime" in [c["rule"] for c in verdict["causes"]], verdict
