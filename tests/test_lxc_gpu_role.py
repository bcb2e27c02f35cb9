"""Role lxc_gpu on a real systemd host (a container with systemd as PID 1): the oneshot unit that
makes the nvidia-uvm and nvidia-caps nodes at every boot is installed, enabled and run, and a
second converge changes nothing.

`nvidia-modprobe` here is a stand-in (no NVIDIA driver on this machine): a script that records
how it was called. What this cannot prove: that the real nvidia-modprobe makes the nodes;
the unit only runs it, as NVIDIA documents (`nvidia-modprobe -u -c=0`).
"""

from __future__ import annotations

import pytest

from provisioner.progress import Quiet
from provisioner.runner import AnsibleRunner
from provisioner.workspace import Workspace
from tests.native_host import sh, systemd_container

pytestmark = [pytest.mark.infra, pytest.mark.slow]

UNIT = "ollama-provisioner-nvidia-nodes.service"
STAND_IN = "#!/bin/sh\n# stand-in for nvidia-modprobe (tests only): records its arguments\necho \"$@\" >> /var/log/nvidia-modprobe.calls\n"


def _converge(tmp_path, host: str, enabled: bool):
    (tmp_path / "inv.yml").write_text(
        f"all:\n  hosts:\n    {host}:\n      ansible_connection: community.docker.docker\n"
        f"      ansible_python_interpreter: /usr/bin/python3\n")
    (tmp_path / "play.yml").write_text(
        f"- hosts: all\n  gather_facts: false\n  roles:\n    - role: lxc_gpu\n      lxc_gpu_enabled: {enabled}\n")
    runner = AnsibleRunner(Workspace(tmp_path / "state"), tmp_path / "inv.yml", Quiet())
    return runner.run(str(tmp_path / "play.yml"))


def test_the_nodes_unit_is_installed_enabled_run_and_idempotent(tmp_path):
    with systemd_container("op-lxcgpu") as host:
        assert _converge(tmp_path, host, enabled=False).changed(host) == 0
        assert sh(host, f"test -e /etc/systemd/system/{UNIT} && echo yes || echo no") == "no"

        sh(host, f"printf '{STAND_IN}' > /usr/bin/nvidia-modprobe && chmod +x /usr/bin/nvidia-modprobe")
        first = _converge(tmp_path, host, enabled=True)
        assert first.changed(host) >= 2
        assert sh(host, f"systemctl is-enabled {UNIT}") == "enabled"
        assert sh(host, f"systemctl is-active {UNIT}") == "active"
        assert sh(host, "cat /var/log/nvidia-modprobe.calls") == "-u -c=0"
        assert "ExecStart=/usr/bin/nvidia-modprobe -u -c=0" in sh(host, f"cat /etc/systemd/system/{UNIT}")

        assert _converge(tmp_path, host, enabled=True).changed(host) == 0
        assert sh(host, "cat /var/log/nvidia-modprobe.calls") == "-u -c=0"  # not run again


def test_a_gpu_host_without_nvidia_modprobe_is_told_how_to_get_it(tmp_path):
    from provisioner.errors import ApplyError

    with systemd_container("op-lxcgpu") as host:
        with pytest.raises(ApplyError) as err:
            _converge(tmp_path, host, enabled=True)
        assert "nvidia-modprobe is not installed" in err.value.message
        assert "nothing was changed" in err.value.details[0]
