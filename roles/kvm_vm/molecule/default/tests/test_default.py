"""What the guest looks like after converge (testinfra over the scenario's SSH connection)."""

import json
import os

import testinfra.utils.ansible_runner

testinfra_hosts = testinfra.utils.ansible_runner.AnsibleRunner(
    os.environ["MOLECULE_INVENTORY_FILE"]).get_hosts("provision_places")

VERSION = "0.5.4-ipexllm-20250407"
DROPIN = "/etc/systemd/system/ollama.service.d/override.conf"
MODELS = "/usr/share/ollama/.ollama/models"


def test_it_is_a_vm_whose_cpu_carries_avx2(host):
    assert host.check_output("systemd-detect-virt --vm") == "qemu"
    assert "avx2" in host.file("/proc/cpuinfo").content_string.split()


def test_service_running_and_enabled(host):
    service = host.service("ollama")
    assert service.is_running
    assert service.is_enabled


def test_dropin_listens_on_loopback_only(host):
    assert 'Environment="OLLAMA_HOST=127.0.0.1:11434"' in host.file(DROPIN).content_string


def test_the_server_answers_with_the_installed_version_and_has_the_model(host):
    assert json.loads(host.check_output("curl -sf http://127.0.0.1:11434/api/version"))["version"] == VERSION
    tags = json.loads(host.check_output("curl -sf http://127.0.0.1:11434/api/tags"))
    assert "smollm2:latest" in [m["name"] for m in tags["models"]]


def test_models_directory_belongs_to_the_service_user(host):
    with host.sudo():
        assert host.file(MODELS).user == "ollama"
