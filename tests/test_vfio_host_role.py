"""Role vfio_host on a real systemd host (a container with systemd as PID 1), from files rendered for it.

What is real here: the rendered files land where the role puts them; initramfs-tools and a Debian
kernel (linux-image-cloud-amd64, which carries the vfio modules) are installed from Debian's
repository, so `update-initramfs` really builds an initramfs, which must then hold the bind script,
the modprobe.d file and vfio-pci; kmod's modprobe reads the rendered install line. The role runs
twice: the second run changes nothing, and both stop saying a reboot is needed (the container's
kernel has no IOMMU arguments and no such PCI functions), and nothing reboots. Then, in the same
container, the revert (vfio_host_state absent, `provision uninstall --target kvm --revert-host`) runs
in check mode (nothing changes), then twice for real: the project's files and the kernel arguments it
added go, a file without the project's mark and the user's own arguments stay, GRUB, the boot
partitions and the initramfs are updated once, a reboot is said to be needed (not made), and the
second revert changes nothing.

Stand-ins (said so, because they cannot run in a container): `update-grub` (grub-probe cannot find
the root device of an overlay file system) and `proxmox-boot-tool` (no Proxmox VE here) are scripts
that record their calls. The Proxmox host has no initramfs-tools, so the role's message for a host
without update-initramfs is checked there; before its revert a recording `update-initramfs` stand-in
is put in place, to count the rebuild.
"""

from __future__ import annotations

import json
import subprocess

import pytest
import yaml

from provisioner.errors import ApplyError
from provisioner.progress import Quiet
from provisioner.render import MANAGED, render
from provisioner.runner import AnsibleRunner, RunResult
from provisioner.settings import build_settings
from provisioner.targets import Target
from provisioner.workspace import Workspace
from tests import sysfs_tree as trees
from tests.conftest import ROOT
from tests.native_host import sh, systemd_container

# The container tests are infra and slow; the check of the role's mark against the templates is neither.
INFRA = [pytest.mark.infra, pytest.mark.slow]

RECORDER = "#!/bin/sh\n# stand-in (tests only): records its arguments\necho \"$0 $*\" >> /var/log/stand-in.calls\n"
PVE_STATUS = ("#!/bin/sh\necho \"$0 $*\" >> /var/log/stand-in.calls\n"
              "[ \"$1\" = status ] && echo '5A1B-2C3D is configured with: uefi (versions: 6.8.12-4-pve)'\nexit 0\n")
FILES = ["/etc/modprobe.d/ollama-provisioner-vfio.conf", "/etc/modules-load.d/ollama-provisioner-vfio.conf",
         "/usr/local/sbin/ollama-provisioner-vfio-bind", "/etc/initramfs-tools/hooks/ollama-provisioner-vfio"]
GRUB_DROPIN = "/etc/default/grub.d/ollama-provisioner-iommu.cfg"
RECORD = "/etc/ollama-provisioner/vfio-host-kernel-args"
ROLE_VARS = yaml.safe_load((ROOT / "roles/vfio_host/vars/main.yml").read_text())


def _put(container: str, path: str, text: str, mode: str = "0755") -> None:
    subprocess.run(["docker", "exec", "-i", container, "sh", "-c", f"cat > {path} && chmod {mode} {path}"],
                   input=text, text=True, check=True)


def _render_for(tmp_path, host: str, tree: trees.Host, addresses: list[str]):
    """The files and role variables `provision --target kvm` renders for ``host`` after preflight."""
    facts = trees.facts_of(tmp_path / "sysfs", tree)
    s = build_settings(host, Target.kvm, {"kvm_gpu_pci_addresses": addresses})
    checked = s.module.preflight(s, facts)
    assert checked.problems == []
    (result,) = render([s], tmp_path / "out", facts={host: facts}, checked={host: checked})
    return result.directory


def _converge(tmp_path, host: str, host_dir):
    (tmp_path / "inv.yml").write_text(
        f"all:\n  hosts:\n    {host}:\n      ansible_connection: community.docker.docker\n"
        f"      ansible_python_interpreter: /usr/bin/python3\n")
    (tmp_path / "play.yml").write_text(
        "- hosts: all\n  gather_facts: false\n  pre_tasks:\n    - ansible.builtin.include_vars:\n"
        f"        file: {host_dir}/host-vars.json\n  roles:\n    - role: vfio_host\n"
        f"      vfio_host_files_dir: {host_dir}/host\n")
    runner = AnsibleRunner(Workspace(tmp_path / "state"), tmp_path / "inv.yml", Quiet())
    with pytest.raises(ApplyError) as err:
        runner.run(str(tmp_path / "play.yml"))
    return err.value


def _revert(tmp_path, host: str, host_dir, check: bool = False) -> tuple[RunResult, str]:
    """Run the role with vfio_host_state absent as playbooks/kvm.yml does on uninstall --revert-host: with
    the host's role variables and no rendered files. It must succeed; its result and the notes it passed on
    to the provisioner (set_stats of provision_notes, what provision prints after the run)."""
    (tmp_path / "revert.yml").write_text(
        "- hosts: all\n  gather_facts: false\n  pre_tasks:\n    - ansible.builtin.include_vars:\n"
        f"        file: {host_dir}/host-vars.json\n  roles:\n    - role: vfio_host\n"
        "      vfio_host_state: absent\n")
    runner = AnsibleRunner(Workspace(tmp_path / "state"), tmp_path / "inv.yml", Quiet())
    run = runner.run(str(tmp_path / "revert.yml"), check=check)
    return run, "\n".join(run.notes)


def _calls(container: str) -> list[str]:
    """The stand-ins' calls, one a line ("$0 $*": without arguments a trailing space)."""
    return [line.strip() for line in sh(container, "cat /var/log/stand-in.calls").splitlines()]


def _said(output: str, text: str) -> bool:
    """Whether the notes say ``text``."""
    return " ".join(text.split()) in " ".join(output.replace('"', " ").split())


def test_every_file_the_revert_may_remove_carries_the_roles_mark_in_its_first_three_lines():
    # The revert removes a file only when `head -n 3` shows the mark: every rendered one must carry it there,
    # the mark being the first line of render.py's MANAGED as a comment.
    mark = ROLE_VARS["__vfio_host_mark"]
    assert ("# " + MANAGED.splitlines()[0]).startswith(mark)
    paths = [f["dest"] for f in ROLE_VARS["__vfio_host_files"]] + [ROLE_VARS["__vfio_host_grub_dropin"]]
    golden = ROOT / "tests/golden/kvm/kvm-host/host"
    for path in paths:
        head = (golden / path.lstrip("/")).read_text().splitlines()[:3]
        assert any(line.startswith(mark) for line in head), path


@pytest.mark.infra
@pytest.mark.slow
def test_a_grub_host_gets_the_files_grub_and_a_real_initramfs_twice_without_a_reboot(tmp_path):
    card = ["0000:01:00.0", "0000:01:00.1"]
    with systemd_container("op-vfio") as host:
        sh(host, "apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "
                 "--no-install-recommends initramfs-tools linux-image-cloud-amd64 >/dev/null 2>&1")
        _put(host, "/usr/local/sbin/update-grub", RECORDER)
        sh(host, "touch /run/not-rebooted")
        host_dir = _render_for(tmp_path, host, trees.clean_isolated(), card)
        assert json.loads((host_dir / "host-vars.json").read_text())["vfio_host_kernel_args"] == ["intel_iommu=on",
                                                                                                 "iommu=pt"]
        kernel = sh(host, "ls /lib/modules")
        initrd = f"/boot/initrd.img-{kernel}"
        before = sh(host, f"stat -c %Y {initrd}")

        first = _converge(tmp_path, host, host_dir)
        assert "task 'Stop when a reboot is needed but not allowed'" in first.message
        assert (f"a reboot is needed to apply the VFIO preparation on {host} (kernel arguments intel_iommu=on "
                f"iommu=pt are not active; vfio-pci does not drive 0000:01:00.0, 0000:01:00.1 yet): the files are in "
                f"place; reboot {host}, or set kvm_allow_reboot: true, then run again") in first.message
        # Changed tasks: the directories (/etc/default/grub.d is new), the four files, the GRUB drop-in,
        # update-grub and update-initramfs.
        assert first.run.changed(host) == 5
        for dest in [*FILES, "/etc/default/grub.d/ollama-provisioner-iommu.cfg"]:
            assert sh(host, f"cat {dest}") == (host_dir / "host" / dest.lstrip("/")).read_text().strip(), dest
        assert sh(host, "stat -c %a /usr/local/sbin/ollama-provisioner-vfio-bind") == "755"
        assert sh(host, "cat /var/log/stand-in.calls") == "/usr/local/sbin/update-grub"
        # The real initramfs now binds by address: the script, the install line and the modules are in it.
        assert sh(host, f"stat -c %Y {initrd}") != before
        inside = sh(host, f"lsinitramfs {initrd}").splitlines()
        for path in ("usr/local/sbin/ollama-provisioner-vfio-bind", "etc/modprobe.d/ollama-provisioner-vfio.conf"):
            assert path in inside, path
        assert any(p.endswith("/vfio/pci/vfio-pci.ko") for p in inside)
        # kmod reads the rendered file: loading vfio-pci runs the bind script (with the module's options,
        # which the script hands on to `modprobe --ignore-install vfio-pci`).
        assert sh(host, f"modprobe -n -v -S {kernel} vfio-pci").splitlines()[-1].strip() == \
            "install /usr/local/sbin/ollama-provisioner-vfio-bind disable_vga=1"
        assert "softdep snd_hda_intel pre: vfio-pci" in sh(host, f"modprobe -c -S {kernel} | grep '^softdep'")

        built = sh(host, f"stat -c %Y {initrd}")
        second = _converge(tmp_path, host, host_dir)
        assert "a reboot is needed to apply the VFIO preparation" in second.message
        assert second.run.changed(host) == 0
        assert sh(host, f"stat -c %Y {initrd}") == built  # not rebuilt
        assert sh(host, "cat /var/log/stand-in.calls") == "/usr/local/sbin/update-grub"  # not run again
        assert sh(host, "test -e /run/not-rebooted && echo yes") == "yes"

        # --- the revert -----------------------------------------------------------------------
        # Someone replaced one of the files by their own (no mark): the revert must leave it alone.
        own = "# my own VFIO modules\nvfio\nvfio_pci\n"
        _put(host, "/etc/modules-load.d/ollama-provisioner-vfio.conf", own, mode="0644")
        dry, _ = _revert(tmp_path, host, host_dir, check=True)
        assert dry.changed(host) > 0
        for dest in [FILES[0], *FILES[2:], GRUB_DROPIN]:
            assert sh(host, f"test -f {dest} && echo present") == "present", dest
        assert sh(host, f"stat -c %Y {initrd}") == built
        assert sh(host, "cat /var/log/stand-in.calls") == "/usr/local/sbin/update-grub"

        reverted, output = _revert(tmp_path, host, host_dir)
        # Changed tasks: the marked files removed (one loop), update-grub, update-initramfs.
        assert reverted.changed(host) == 3
        for dest in [FILES[0], *FILES[2:], GRUB_DROPIN]:
            assert sh(host, f"test -e {dest} || echo absent") == "absent", dest
        assert sh(host, f"cat {FILES[1]}") == own.strip()
        assert _said(output, f"kept {FILES[1]} on {host}: not written by ollama-provisioner")
        assert _said(output, f"a reboot is needed to finish reverting the VFIO preparation on {host} (the VFIO files "
                             "are removed; the IOMMU kernel arguments are removed)")
        assert _calls(host) == ["/usr/local/sbin/update-grub"] * 2
        # The real initramfs was rebuilt without the bind script and the install line.
        assert sh(host, f"stat -c %Y {initrd}") != built
        inside = sh(host, f"lsinitramfs {initrd}").splitlines()
        assert not [p for p in inside if "ollama-provisioner" in p], inside
        assert sh(host, "test -e /run/not-rebooted && echo yes") == "yes"

        rebuilt = sh(host, f"stat -c %Y {initrd}")
        again, output = _revert(tmp_path, host, host_dir)
        assert again.changed(host) == 0
        assert sh(host, f"stat -c %Y {initrd}") == rebuilt
        assert _calls(host) == ["/usr/local/sbin/update-grub"] * 2
        assert sh(host, f"cat {FILES[1]}") == own.strip()
        assert _said(output, f"kept {FILES[1]} on {host}")  # still named
        assert "a reboot is needed to finish reverting" not in output


@pytest.mark.infra
@pytest.mark.slow
def test_a_proxmox_host_on_systemd_boot_gets_its_kernel_cmdline_extended_and_refreshed(tmp_path):
    card = ["0000:0a:00.0", "0000:0a:00.1"]
    with systemd_container("op-vfio") as host:
        _put(host, "/usr/local/sbin/proxmox-boot-tool", PVE_STATUS)
        # The user's own line: iommu=pt is theirs (the revert must keep it), a double space must survive too.
        sh(host, "mkdir -p /etc/kernel && echo 5A1B-2C3D > /etc/kernel/proxmox-boot-uuids && "
                 "echo 'root=ZFS=rpool/ROOT/pve-1 boot=zfs  iommu=pt' > /etc/kernel/cmdline")
        users_line = sh(host, "sha256sum < /etc/kernel/cmdline")
        host_dir = _render_for(tmp_path, host, trees.amd_host(), card)
        assert not (host_dir / "host/etc/default/grub.d").exists()

        first = _converge(tmp_path, host, host_dir)
        assert "a reboot is needed to apply the VFIO preparation" in first.message
        assert "kernel arguments amd_iommu=on iommu=pt are not active" in first.message
        # The arguments already there are kept, in their order; only the missing one is added.
        assert sh(host, "cat /etc/kernel/cmdline") == "root=ZFS=rpool/ROOT/pve-1 boot=zfs  iommu=pt amd_iommu=on"
        # What the role added, and only that, is recorded for the revert.
        assert sh(host, f"grep -v '^#' {RECORD}") == "amd_iommu=on"
        assert sh(host, "cat /var/log/stand-in.calls").splitlines() == [
            "/usr/local/sbin/proxmox-boot-tool status", "/usr/local/sbin/proxmox-boot-tool refresh"]
        assert sh(host, "test -e /etc/default/grub.d/ollama-provisioner-iommu.cfg || echo absent") == "absent"
        for dest in FILES:
            assert sh(host, f"cat {dest}") == (host_dir / "host" / dest.lstrip("/")).read_text().strip(), dest
        stdout = (sorted((tmp_path / "state/runs").iterdir())[-1] / "artifacts").rglob("stdout")
        assert any("update-initramfs is not installed" in p.read_text() for p in stdout)

        second = _converge(tmp_path, host, host_dir)
        assert second.run.changed(host) == 0
        assert sh(host, "grep -c refresh /var/log/stand-in.calls") == "1"
        assert sh(host, f"grep -v '^#' {RECORD}") == "amd_iommu=on"  # the record kept its argument

        # --- the revert -----------------------------------------------------------------------
        _put(host, "/usr/local/sbin/update-initramfs", RECORDER)
        before = _calls(host)
        reverted, output = _revert(tmp_path, host, host_dir)
        # Changed tasks: the files removed (one loop), /etc/kernel/cmdline, proxmox-boot-tool refresh, the
        # record and its directory removed, update-initramfs.
        assert reverted.changed(host) == 6
        # The project's amd_iommu=on is gone; the user's line, iommu=pt and the double space included, is
        # back byte for byte.
        assert sh(host, "cat /etc/kernel/cmdline") == "root=ZFS=rpool/ROOT/pve-1 boot=zfs  iommu=pt"
        assert sh(host, "sha256sum < /etc/kernel/cmdline") == users_line
        for dest in [*FILES, RECORD, "/etc/ollama-provisioner"]:
            assert sh(host, f"test -e {dest} || echo absent") == "absent", dest
        # Once each; the revert needs no `proxmox-boot-tool status` (it goes by the record, not the boot loader).
        calls = [*before, "/usr/local/sbin/proxmox-boot-tool refresh", "/usr/local/sbin/update-initramfs -u -k all"]
        assert _calls(host) == calls
        assert _said(output, f"a reboot is needed to finish reverting the VFIO preparation on {host}")
        assert "not written by ollama-provisioner" not in output  # every file at the project's paths was its own

        again, output = _revert(tmp_path, host, host_dir)
        assert again.changed(host) == 0
        assert _calls(host) == calls
        assert sh(host, "sha256sum < /etc/kernel/cmdline") == users_line
        assert "a reboot is needed to finish reverting" not in output
