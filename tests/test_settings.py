"""The settings model: defaults, derived values, and one clear line per bad value."""

from __future__ import annotations

import pytest

from provisioner.errors import SettingsError
from provisioner.settings import build_settings
from provisioner.targets import Target


def settings(target=Target.native, **variables):
    return build_settings("gpu1", target, variables)


def problems(target=Target.native, **variables) -> list[str]:
    with pytest.raises(SettingsError) as err:
        settings(target, **variables)
    return err.value.lines()


def test_defaults_listen_on_loopback_and_pin_context():
    s = settings()
    assert s.ollama_listen_address == "127.0.0.1:11434"
    assert s.ollama_environment["OLLAMA_HOST"] == "127.0.0.1:11434"
    assert s.ollama_environment["OLLAMA_CONTEXT_LENGTH"] == "4096"


@pytest.mark.parametrize(
    ("version", "url"),
    [
        ("0.13.5", "https://github.com/ollama/ollama/releases/download/v0.13.5/ollama-linux-amd64.tgz"),
        ("0.14.0", "https://github.com/ollama/ollama/releases/download/v0.14.0/ollama-linux-amd64.tar.zst"),
        ("v0.30.10", "https://github.com/ollama/ollama/releases/download/v0.30.10/ollama-linux-amd64.tar.zst"),
    ],
)
def test_official_archive_is_tgz_before_0_14_and_tar_zst_from_it(version, url):
    s = settings(ollama_version=version)
    assert s.archive_url == url
    assert s.checksum_url == url.rsplit("/", 1)[0] + "/sha256sum.txt"


def test_own_sha256_replaces_the_release_checksum_file():
    s = settings(ollama_archive="/srv/ollama.tgz", ollama_sha256="SHA256:" + "AB" * 32)
    assert s.ollama_sha256 == "ab" * 32
    assert s.checksum_url is None
    assert s.archive_url == "/srv/ollama.tgz"


def test_docker_environment_listens_inside_and_tag_follows_version():
    s = settings(Target.docker, ollama_version="0.12.3", ollama_listen_address="192.168.1.5:8080",
                 ollama_listen_unauthenticated=True)
    assert s.ollama_environment["OLLAMA_HOST"] == "0.0.0.0:11434"
    assert "OLLAMA_MODELS" not in s.ollama_environment
    assert (s.docker_tag, s.listen_host, s.listen_port) == ("0.12.3", "192.168.1.5", 8080)


def test_models_accept_names_and_local_gguf_entries():
    s = settings(ollama_models=["llama3.2:3b", {"name": "mine", "from": "/srv/m.gguf"}])
    assert [(m.name, m.source) for m in s.ollama_models] == [("llama3.2:3b", None), ("mine", "/srv/m.gguf")]


@pytest.mark.parametrize(
    ("variables", "expected"),
    [
        ({"ollama_kv_cache_type": "q5"}, "host 'gpu1': ollama_kv_cache_type = 'q5': Input should be 'f16', 'q8_0' or 'q4_0'"),
        ({"ollama_listen_address": "localhost"}, "host 'gpu1': ollama_listen_address = 'localhost': must be HOST:PORT"),
        ({"ollama_version": "latest"}, "host 'gpu1': ollama_version = 'latest': 'latest' is not a version like 0.12.3"),
        ({"ollama_version": "0.3.6"}, "releases before 0.3.7 ship a bare binary"),
        ({"ollama_sha256": "abc"}, "ollama_sha256 = 'abc': must be 64 hexadecimal digits"),
        ({"ollama_keep_alive": "forever"}, "ollama_keep_alive = 'forever': must be a duration like 5m"),
        ({"ollama_cuda_visible_devices": "gpu0"}, "ollama_cuda_visible_devices = 'gpu0': must be GPU indexes or UUIDs"),
        ({"ollama_num_parallel": 0}, "ollama_num_parallel = 0: Input should be greater than or equal to 1"),
        ({"ollama_models_dir": "models"}, "ollama_models_dir = 'models': must be an absolute path"),
        ({"ollama_models": ["bad name!"]}, "ollama_models[0].name = 'bad name!': model name 'bad name!' is not a name"),
        ({"ollama_archive": "ftp://x/o.tgz"}, "ollama_archive = 'ftp://x/o.tgz': must be an http(s):// or file:// URL"),
        ({"ollama_kv_cache_type": "q8_0", "ollama_flash_attention": False}, "needs flash attention, but ollama_flash_attention is false"),
    ],
)
def test_bad_value_is_one_line_naming_host_variable_value_and_rule(variables, expected):
    lines = problems(**variables)
    assert len(lines) == 1
    assert expected in lines[0]


def test_misspelt_variable_is_named_with_the_right_spelling():
    (line,) = problems(ollama_verison="0.12.3")
    assert line == "host 'gpu1': unknown variable ollama_verison; did you mean ollama_version?"


def test_role_variables_and_foreign_variables_are_not_flagged():
    s = settings(ollama_service_user="ollama", my_own_var=1, http_proxy="http://p:3128")
    assert s.host == "gpu1"


def test_every_problem_gets_its_own_line():
    lines = problems(ollama_num_parallel=0, ollama_kv_cache_type="x", ollama_verison="1")
    assert len(lines) == 3


@pytest.mark.parametrize(
    ("target", "variables", "expected"),
    [
        (Target.lxc, {}, "lxc_vmid is required when lxc_backend is 'proxmox'"),
        (Target.lxc, {"lxc_vmid": 99}, "lxc_vmid = 99: Proxmox VMIDs are integers from 100"),
        (Target.lxc, {"lxc_backend": "lxc", "lxc_passthrough": "devN"}, "lxc_passthrough='devN' exists only on Proxmox VE >= 8.1"),
        (Target.lxc, {"lxc_backend": "lxc", "lxc_name": "Ollama_1"}, "lxc_name = 'Ollama_1': must be a host name"),
        (Target.lxc, {"lxc_vmid": 120, "lxc_proxmox_api_token_id": "root@pam!x"}, "go together"),
        (Target.kvm, {"kvm_base_image": "https://cloud.debian.org/d.qcow2"}, "is a URL without kvm_base_image_checksum_url"),
        (Target.kvm, {"kvm_base_image": "images/d.qcow2"}, "kvm_base_image = 'images/d.qcow2': must be an absolute path"),
        (Target.kvm, {"kvm_initrd": "/boot/initrd.img"}, "kvm_initrd is set without kvm_kernel"),
        (Target.kvm, {"kvm_gpu_pci_addresses": ["01:00.0"]}, "'01:00.0' is not a full PCI address like 0000:01:00.0"),
        (Target.kvm, {"kvm_gpu_pci_addresses": ["0000:01:00.0", "0000:01:00.0"]}, "0000:01:00.0 is listed twice"),
        (Target.kvm, {"kvm_gpu_pci_addresses": ["0000:01:00.0"], "kvm_machine": "pc"}, "needs a PCIe machine: q35"),
    ],
)
def test_target_specific_rules(target, variables, expected):
    lines = problems(target, **variables)
    assert any(expected in line for line in lines), lines


def test_rules_of_other_targets_do_not_apply():
    assert settings(Target.native).kvm_gpu_pci_addresses == []


def test_token_secret_is_masked_in_public_data():
    s = settings(Target.lxc, lxc_vmid=120, lxc_proxmox_api_token_id="root@pam!p",
                 lxc_proxmox_api_token_secret="s3cr3t-value")
    assert "s3cr3t-value" not in str(s.public_dict())
    assert "s3cr3t-value" not in repr(s)
    assert s.lxc_proxmox_api_token_secret.get_secret_value() == "s3cr3t-value"
