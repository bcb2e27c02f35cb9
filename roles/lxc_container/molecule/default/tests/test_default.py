"""What the container looks like after converge (testinfra through Ansible's LXC connection)."""

import json
import os

import testinfra.utils.ansible_runner

testinfra_hosts = testinfra.utils.ansible_runner.AnsibleRunner(
    os.environ["MOLECULE_INVENTORY_FILE"]).get_hosts("provision_places")

VERSION = "0.5.4-ipexllm-20250407"
DROPIN = "/etc/systemd/system/ollama.service.d/override.conf"
MODELS = "/usr/share/ollama/.ollama/models"


def test_it_is_an_unprivileged_container(host):
    assert host.file("/proc/self/uid_map").content_string.split() == ["0", "100000", "65536"]


def test_service_running_and_enabled(host):
    service = host.service("ollama")
    assert service.is_running
    assert service.is_enabled


def test_dropin_carries_the_settings(host):
    dropin = host.file(DROPIN).content_string
    assert 'Environment="OLLAMA_HOST=127.0.0.1:11434"' in dropin
    assert 'Environment="OLLAMA_CONTEXT_LENGTH=2048"' in dropin


def test_the_server_answers_with_the_installed_version_and_has_the_model(host):
    assert json.loads(host.check_output("curl -sf http://127.0.0.1:11434/api/version"))["version"] == VERSION
    tags = json.loads(host.check_output("curl -sf http://127.0.0.1:11434/api/tags"))
    assert "smollm2:latest" in [m["name"] for m in tags["models"]]


def test_models_directory_belongs_to_the_service_user(host):
    assert host.file(MODELS).user == "ollama"
