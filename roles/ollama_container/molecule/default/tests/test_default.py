"""What the Docker host looks like after converge (testinfra through Ansible's docker connection)."""

import json
import os

import testinfra.utils.ansible_runner

testinfra_hosts = testinfra.utils.ansible_runner.AnsibleRunner(
    os.environ["MOLECULE_INVENTORY_FILE"]).get_hosts("docker")

VERSION = "0.5.4-ipexllm-20250407"
LABEL = "org.ollama-provisioner.managed"


def _container(host):
    return json.loads(host.check_output("docker container inspect ollama"))[0]


def test_the_container_is_ours_healthy_and_restarts_unless_stopped(host):
    c = _container(host)
    assert c["Config"]["Labels"][LABEL] == "true"
    assert c["State"]["Health"]["Status"] == "healthy"
    assert c["HostConfig"]["RestartPolicy"]["Name"] == "unless-stopped"
    assert c["Config"]["Image"] == f"local/ollama:{VERSION}"


def test_the_port_is_published_on_loopback_only(host):
    assert _container(host)["HostConfig"]["PortBindings"]["11434/tcp"] == [{"HostIp": "127.0.0.1", "HostPort": "11434"}]


def test_the_settings_are_the_servers_environment(host):
    env = _container(host)["Config"]["Env"]
    assert "OLLAMA_CONTEXT_LENGTH=2048" in env and "OLLAMA_HOST=0.0.0.0:11434" in env


def test_the_models_live_in_the_named_volume(host):
    mounts = _container(host)["Mounts"]
    assert [(m["Type"], m["Name"], m["Destination"]) for m in mounts] == [("volume", "ollama", "/root/.ollama")]


def test_the_model_answers(host):
    tags = json.loads(host.check_output("docker exec ollama ollama list >/dev/null && "
                                        "python3 -c \"import urllib.request as u; "
                                        "print(u.urlopen('http://127.0.0.1:11434/api/tags').read().decode())\""))
    assert "smollm2:latest" in [m["name"] for m in tags["models"]]
