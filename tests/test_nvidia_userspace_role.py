"""Role nvidia_userspace on a real Debian bookworm system (a container with systemd as PID 1), with
Debian's real NVIDIA user-space packages from the mirror: installed at exactly the host driver's
version, nvidia-smi then runs inside (and, with no kernel driver on this machine, says what it
says there: "Failed to initialize NVML: Unknown Error", exit 255), a second converge changes
nothing, and a version Debian does not offer is refused with nothing installed.

What this cannot prove: the .run installer path (NVIDIA's download site is out of reach here).
"""

from __future__ import annotations

import pytest

from provisioner.errors import ApplyError
from provisioner.progress import Quiet
from provisioner.runner import AnsibleRunner
from provisioner.workspace import Workspace
from tests.native_host import sh, systemd_container

pytestmark = [pytest.mark.infra, pytest.mark.slow]

BOOKWORM = "535.261.03"  # Debian 12's nvidia-smi, libcuda1 and libnvidia-ml1


def _converge(tmp_path, host: str, version: str):
    (tmp_path / "inv.yml").write_text(
        f"all:\n  hosts:\n    {host}:\n      ansible_connection: community.docker.docker\n"
        f"      ansible_python_interpreter: /usr/bin/python3\n")
    (tmp_path / "play.yml").write_text(
        f"- hosts: all\n  gather_facts: false\n  roles:\n    - role: nvidia_userspace\n"
        f"      nvidia_userspace_version: '{version}'\n")
    return AnsibleRunner(Workspace(tmp_path / "state"), tmp_path / "inv.yml", Quiet()).run(str(tmp_path / "play.yml"))


def test_debian_packages_at_the_hosts_version_and_nvidia_smi_runs_inside(tmp_path):
    with systemd_container("op-nvus") as host:
        assert _converge(tmp_path, host, "").changed(host) == 0
        assert _converge(tmp_path, host, BOOKWORM).changed(host) >= 2
        assert sh(host, "dpkg-query -W -f '${Version}' libnvidia-ml1").startswith(f"{BOOKWORM}-")
        smi = sh(host, "nvidia-smi; echo rc=$?", check=False)
        assert "Failed to initialize NVML: Unknown Error" in smi and "rc=255" in smi
        assert _converge(tmp_path, host, BOOKWORM).changed(host) == 0


def test_a_version_debian_does_not_offer_is_refused_with_nothing_installed(tmp_path):
    with systemd_container("op-nvus") as host:
        with pytest.raises(ApplyError) as err:
            _converge(tmp_path, host, "550.90.07")
        assert "the host runs NVIDIA driver 550.90.07 but Debian bookworm offers 535.261.03-1" in err.value.message
        assert "lxc_nvidia_installer" in err.value.message and "nothing was installed" in err.value.message
        assert sh(host, "ls /etc/apt/sources.list.d/; command -v nvidia-smi || echo none") == "none"
