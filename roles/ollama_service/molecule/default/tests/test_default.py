"""What a converged native host must look like (testinfra, run by molecule's verify step)."""

import json
import os

import testinfra.utils.ansible_runner

testinfra_hosts = testinfra.utils.ansible_runner.AnsibleRunner(
    os.environ["MOLECULE_INVENTORY_FILE"]).get_hosts("native")

VERSION = "0.5.4-ipexllm-20250407"
DROPIN = "/etc/systemd/system/ollama.service.d/override.conf"
MODELS = "/usr/share/ollama/.ollama/models"


def test_service_running_and_enabled(host):
    service = host.service("ollama")
    assert service.is_running
    assert service.is_enabled


def test_listens_on_the_configured_address_and_nowhere_else(host):
    ports = {str(s) for s in host.socket.get_listening_sockets() if s.endswith(":11434")}
    assert ports == {"tcp://127.0.0.1:11434"}
    # Nothing on this host listens beyond loopback: not the server, not its model runners.
    tcp = [str(s) for s in host.socket.get_listening_sockets() if str(s).startswith("tcp")]
    assert tcp and all(s.startswith("tcp://127.0.0.1:") for s in tcp), tcp


def test_dropin_carries_the_settings(host):
    dropin = host.file(DROPIN)
    assert dropin.user == "root" and dropin.mode == 0o644
    assert 'Environment="OLLAMA_HOST=127.0.0.1:11434"' in dropin.content_string
    assert 'Environment="OLLAMA_CONTEXT_LENGTH=2048"' in dropin.content_string
    assert f'Environment="OLLAMA_MODELS={MODELS}"' in dropin.content_string


def test_user_groups_and_models_directory(host):
    user = host.user("ollama")
    assert user.exists and user.home == "/usr/share/ollama"
    expected = {g for g in ("render", "video") if host.group(g).exists}
    assert expected and expected <= set(user.groups)
    models = host.file(MODELS)
    assert models.is_directory and models.user == "ollama" and models.group == "ollama"


def test_api_reports_the_installed_version_and_lists_the_model(host):
    version = json.loads(host.check_output("curl -sf http://127.0.0.1:11434/api/version"))
    assert version["version"] == VERSION
    tags = json.loads(host.check_output("curl -sf http://127.0.0.1:11434/api/tags"))
    assert "smollm2:latest" in [m["name"] for m in tags["models"]]
