"""Preflight from recorded facts: driver against Ollama's minimum, GPU without driver, CPU-only hosts."""

from __future__ import annotations

import pytest

from provisioner.errors import PreflightError
from provisioner.facts import GpuFact, HostFacts, PciDevice
from provisioner.preflight import check_host_driver, preflight
from provisioner.settings import build_settings
from provisioner.targets import Target

RTX_3090 = PciDevice(address="0000:01:00.0", vendor_id="10de", device_id="2204", driver="nvidia")
GTX_1080 = GpuFact(name="NVIDIA GeForce GTX 1080", compute_capability="6.1", memory_total_mib=8192)
RTX_4090 = GpuFact(name="NVIDIA GeForce RTX 4090", compute_capability="8.9", memory_total_mib=24564)


def _settings(host="gpu1", **variables):
    return build_settings(host, Target.native, variables)


def _facts(driver=None, gpus=(), pci=(RTX_3090,)):
    return HostFacts(nvidia_driver_version=driver, gpus=list(gpus), pci_devices=list(pci))


def test_a_host_without_nvidia_gpu_is_installed_for_cpu():
    result = check_host_driver(_settings(), _facts(pci=()))
    assert result.cpu_only and not result.problems
    assert "no NVIDIA GPU found" in result.notes[0]


def test_a_current_driver_passes_and_is_named():
    result = check_host_driver(_settings(), _facts("550.90.07", [RTX_4090]))
    assert not result.problems and not result.cpu_only
    assert result.notes == ["gpu1: NVIDIA driver 550.90.07 for NVIDIA GeForce RTX 4090 (minimum 550)"]


def test_a_driver_older_than_550_is_refused_with_the_fix():
    with pytest.raises(PreflightError) as exc:
        preflight([(_settings(), _facts("535.183.01", [RTX_4090]))])
    assert exc.value.message == (
        "gpu1: NVIDIA driver 535.183.01 is older than Ollama's minimum 550; install NVIDIA driver 550 or newer "
        "on gpu1, or set nvidia_driver_install: true (and nvidia_driver_allow_reboot: true to let it reboot)")
    assert exc.value.exit_code == 6 and exc.value.details[-1] == "nothing on any host was changed"


def test_a_pascal_card_needs_570():
    result = check_host_driver(_settings(), _facts("560.35.03", [GTX_1080]))
    assert result.problems and "minimum 570 (compute capability 6.1 needs 570)" in result.problems[0]


def test_a_gpu_without_driver_is_refused_unless_the_driver_is_to_be_installed():
    refused = check_host_driver(_settings(), _facts())
    assert "NVIDIA GPU 0000:01:00.0 found but no NVIDIA driver is loaded" in refused.problems[0]
    installing = check_host_driver(_settings(nvidia_driver_install=True), _facts())
    assert installing.install_driver and not installing.problems


def test_every_refused_host_is_listed():
    with pytest.raises(PreflightError) as exc:
        preflight([(_settings("a"), _facts("470.256.02")), (_settings("b"), _facts("550.1")),
                   (_settings("c"), _facts())])
    lines = exc.value.lines()
    assert lines[0].startswith("a: NVIDIA driver 470.256.02") and lines[1].startswith("c: NVIDIA GPU")
    assert len(lines) == 3
