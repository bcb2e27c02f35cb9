"""The native target end to end on real components: Ansible installs the real Ollama server as a
systemd service into a container with systemd as PID 1, from a release archive served over HTTP."""

from __future__ import annotations

import json

import pytest
import testinfra

from tests.real_ollama import STATE
from tests.native_host import VERSION_A, VERSION_B, sh, systemd_container, write_native_inventory, www_server

pytestmark = [pytest.mark.infra, pytest.mark.slow]

UNIT = "/etc/systemd/system/ollama.service"
DROPIN = "/etc/systemd/system/ollama.service.d/override.conf"
ROOT = "/usr/local/lib/ollama-provisioner"
MODELS = "/usr/share/ollama/.ollama/models"


@pytest.fixture(scope="module")
def www():
    with www_server() as url:
        yield url


@pytest.fixture
def host():
    with systemd_container() as name:
        yield name


def _api(host: str, path: str) -> dict:
    return json.loads(sh(host, f"curl -sf http://127.0.0.1:11434{path}"))


def test_install_verifies_100_percent_cpu_and_a_rerun_changes_nothing(host, www, tmp_path, provision):
    inv = write_native_inventory(tmp_path / "inv", host, www, ollama_context_length=2048,
                                 ollama_extra_env={"OLLAMA_DEBUG": "0"})
    first = provision("--target", "native", "-i", inv)
    assert first.exit_code == 0, first.output
    assert "no NVIDIA GPU found" in first.output
    assert f"{host}: Ollama {VERSION_A} answers at http://127.0.0.1:11434" in first.output
    assert f"{host}: smollm2:latest: 100% CPU" in first.output
    assert "no NVIDIA GPU visible in the target" in first.output

    t = testinfra.get_host(f"docker://{host}")
    service = t.service("ollama")
    assert service.is_running and service.is_enabled
    listening = {str(s) for s in t.socket.get_listening_sockets() if s.endswith(":11434")}
    assert listening == {"tcp://127.0.0.1:11434"}
    dropin = t.file(DROPIN).content_string
    assert 'Environment="OLLAMA_CONTEXT_LENGTH=2048"' in dropin and 'Environment="OLLAMA_DEBUG=0"' in dropin
    user = t.user("ollama")
    assert user.exists and "video" in user.groups and user.shell == "/usr/sbin/nologin"
    assert t.file(MODELS).user == "ollama" and t.file(MODELS).is_directory
    assert t.file("/usr/local/bin/ollama").linked_to == f"{ROOT}/versions/{VERSION_A}/lib/ollama/ollama"
    assert _api(host, "/api/version")["version"] == VERSION_A
    assert "smollm2:latest" in [m["name"] for m in _api(host, "/api/tags")["models"]]

    again = provision("--target", "native", "-i", inv)
    assert again.exit_code == 0, again.output
    assert f"changed 0 thing(s) on {host}" in again.output

    # The same evidence through `verify --target`: the documented JSON, exit 1, and 0 with --expect cpu.
    checked = provision("verify", "--target", "native", "-i", inv, "--json")
    assert checked.exit_code == 1, checked.output
    doc = json.loads(checked.output)
    assert (doc["verdict"], doc["models"][0]["processor"], doc["models"][0]["size_vram"]) == ("cpu", "cpu", 0)
    assert doc["tokens_per_second"] > 0 and doc["causes"][0]["cause"].startswith("no NVIDIA GPU visible")
    assert provision("verify", "--target", "native", "-i", inv, "--expect", "cpu").exit_code == 0

    # A changed setting in a dry run: reported with its diff, the file on the host untouched.
    write_native_inventory(tmp_path / "inv", host, www, ollama_context_length=8192,
                           ollama_extra_env={"OLLAMA_DEBUG": "0"})
    dry = provision("--target", "native", "-i", inv, "--check", "--diff")
    assert dry.exit_code == 0, dry.output
    assert "would change" in dry.output and "verify: skipped in a dry run" in dry.output
    assert "-Environment=\"OLLAMA_CONTEXT_LENGTH=2048\"" in dry.output
    assert "+Environment=\"OLLAMA_CONTEXT_LENGTH=8192\"" in dry.output
    assert t.file(DROPIN).content_string == dropin


def test_checksum_mismatch_stops_before_anything_changes(host, www, tmp_path, provision):
    inv = write_native_inventory(tmp_path / "inv", host, www, ollama_sha256="0" * 64)
    before = sh(host, "ls -A /tmp /usr/local/lib /usr/local/bin /etc/systemd/system; getent passwd ollama || true")
    result = provision("--target", "native", "-i", inv)
    assert result.exit_code == 4, result.output
    assert "ollama-linux-amd64.tgz" in result.output and "0" * 64 in result.output
    assert "changes made before the failure: nothing was changed" in result.output
    assert sh(host, "ls -A /tmp /usr/local/lib /usr/local/bin /etc/systemd/system; getent passwd ollama || true") == before


def test_a_dry_run_on_a_fresh_host_changes_nothing(host, www, tmp_path, provision):
    inv = write_native_inventory(tmp_path / "inv", host, www)
    result = provision("--target", "native", "-i", inv, "--check")
    assert result.exit_code == 0, result.output
    assert "would change" in result.output
    assert sh(host, f"ls {ROOT} {UNIT} 2>&1; getent passwd ollama", check=False).count("No such file") == 2


def test_upgrade_keeps_models_and_settings_a_bad_version_rolls_back_and_uninstall_keeps_models(
        host, www, tmp_path, provision):
    inv = tmp_path / "inv"
    common = {"ollama_context_length": 2048, "ollama_keep_alive": "10m"}
    write_native_inventory(inv, host, www, **common)
    assert provision("--target", "native", "-i", inv).exit_code == 0
    dropin = sh(host, f"cat {DROPIN}")
    blobs = sh(host, f"ls {MODELS}/blobs")

    # A -> B: the new version answers, the model and the drop-in are untouched, A stays for rollback.
    write_native_inventory(inv, host, www, **common, ollama_version=VERSION_B,
                           ollama_archive=f"{www}/next/ollama-linux-amd64.tgz")
    upgrade = provision("--target", "native", "-i", inv)
    assert upgrade.exit_code == 0, upgrade.output
    assert _api(host, "/api/version")["version"] == VERSION_B
    assert sh(host, f"cat {DROPIN}") == dropin and sh(host, f"ls {MODELS}/blobs") == blobs
    assert "smollm2:latest" in [m["name"] for m in _api(host, "/api/tags")["models"]]
    assert sh(host, f"ls {ROOT}/versions").split() == sorted([VERSION_A, VERSION_B])

    # A version that never reports itself (A's archive labelled 0.5.6): rolled back to B.
    write_native_inventory(inv, host, www, **common, ollama_version="0.5.6",
                           ollama_archive=f"{www}/ollama-linux-amd64.tgz", ollama_service_start_timeout=5)
    bad = provision("--target", "native", "-i", inv)
    assert bad.exit_code == 4, bad.output
    assert f"rolled back to {VERSION_B}" in bad.output
    assert _api(host, "/api/version")["version"] == VERSION_B

    # Uninstall keeps the models and the user; a reinstall finds the model again without creating it.
    write_native_inventory(inv, host, www, **common)
    removed = provision("uninstall", "--target", "native", "-i", inv)
    assert removed.exit_code == 0, removed.output
    assert sh(host, f"ls {ROOT} {UNIT} /usr/local/bin/ollama 2>&1", check=False).count("No such file") == 3
    assert sh(host, "systemctl is-active ollama", check=False) != "active"
    assert sh(host, f"ls {MODELS}/blobs") == blobs and sh(host, "id -un ollama") == "ollama"
    back = provision("--target", "native", "-i", inv)
    assert back.exit_code == 0, back.output
    assert "Create the model on the server" not in back.output

    purged = provision("uninstall", "--target", "native", "-i", inv, "--purge")
    assert purged.exit_code == 0, purged.output
    assert sh(host, f"ls {MODELS} 2>&1; getent passwd ollama", check=False).startswith("ls: cannot access")
    assert sh(host, "getent passwd ollama || echo gone") == "gone"


def test_air_gapped_install_from_a_tar_zst_file_on_the_controller(host, www, tmp_path, provision):
    # The archive and a sha256sum.txt that does not match it, side by side on the controller.
    bad = tmp_path / "bad"
    bad.mkdir()
    archive = bad / "ollama-linux-amd64.tar.zst"
    archive.write_bytes((STATE / "www/zst/ollama-linux-amd64.tar.zst").read_bytes())
    (bad / "sha256sum.txt").write_text(f"{'ab' * 32}  ./ollama-linux-amd64.tar.zst\n")
    inv = write_native_inventory(tmp_path / "inv", host, www, ollama_archive=str(archive))
    refused = provision("--target", "native", "-i", inv)
    assert refused.exit_code == 4, refused.output
    assert f"expected {'ab' * 32} ({bad}/sha256sum.txt)" in refused.output
    assert sh(host, f"ls {ROOT} 2>&1; getent passwd ollama", check=False).startswith("ls: cannot access")

    good = STATE / "www/zst/ollama-linux-amd64.tar.zst"
    write_native_inventory(tmp_path / "inv", host, www, ollama_archive=str(good))
    result = provision("--target", "native", "-i", inv)
    assert result.exit_code == 0, result.output
    assert _api(host, "/api/version")["version"] == VERSION_A
    assert sh(host, f"cat {ROOT}/versions/{VERSION_A}/.archive-sha256") == \
        (STATE / "www/zst/sha256sum.txt").read_text().split()[0]
