"""Role ollama_forward on a real systemd host (a container with systemd as PID 1).

The libvirt host's side of a guest's exposure: a socket unit on the exposed address and
systemd-socket-proxyd relaying to the guest's proxy. Here the "guest's proxy" is a Python HTTP
server on another loopback address of the same container (127.0.0.2, later 127.0.0.3), each serving
a file that names it, so a reply proves which backend the forward reached. Everything else is real:
the units, socket activation, the dynamic user, the sandbox and `systemd-analyze security`.

One container for the module; the tests run in order and each starts from the state the previous
one left (converged, moved, removed). The refusal of a host without systemd runs on this machine
itself, whose PID 1 is not systemd.
"""

from __future__ import annotations

import re
import subprocess
import time
from pathlib import Path

import pytest

from provisioner.errors import ApplyError
from provisioner.progress import Quiet
from provisioner.runner import AnsibleRunner, RunResult
from provisioner.workspace import Workspace
from tests.native_host import sh, systemd_container

pytestmark = [pytest.mark.infra, pytest.mark.slow]

UNITS = "/etc/systemd/system"
# The role once per VM, as a caller with several VMs on one host runs it (the loop variable must not
# be `item`: the role's own loops would shadow it).
PLAY = """\
- hosts: all
  gather_facts: false
  tasks:
    - name: Forward each VM's proxy
      ansible.builtin.include_role:
        name: ollama_forward
      vars:
        ollama_forward_name: "{{ vm.name }}"
        ollama_forward_state: "{{ vm.state | default('present') }}"
        ollama_forward_listen: "{{ vm.listen | default('0.0.0.0:8443') }}"
        ollama_forward_target: "{{ vm.target | default('') }}"
      loop: "{{ forwards }}"
      loop_control:
        loop_var: vm
"""
VM1 = {"name": "vm1", "listen": "0.0.0.0:8443", "target": "127.0.0.2:9443"}


class Host:
    """The container, and the role run against it."""

    def __init__(self, name: str, tmp: Path) -> None:
        self.name = name
        self.tmp = tmp
        (tmp / "inv.yml").write_text(
            f"all:\n  hosts:\n    {name}:\n      ansible_connection: community.docker.docker\n"
            f"      ansible_python_interpreter: /usr/bin/python3\n")
        (tmp / "play.yml").write_text(PLAY)
        self.runner = AnsibleRunner(Workspace(tmp / "state"), tmp / "inv.yml", Quiet())

    def converge(self, *forwards: dict, check: bool = False) -> RunResult:
        return self.runner.run(str(self.tmp / "play.yml"), extravars={"forwards": list(forwards)}, check=check)

    def sh(self, command: str, check: bool = True) -> str:
        return sh(self.name, command, check=check)

    def backend(self, address: str, text: str) -> None:
        """A stand-in for the guest's proxy on ``address``:9443, serving /who with ``text``."""
        directory = f"/srv/{address}"
        self.sh(f"mkdir -p {directory} && echo '{text}' > {directory}/who")
        subprocess.run(["docker", "exec", "-d", self.name, "python3", "-m", "http.server", "9443",
                        "--bind", address, "--directory", directory], check=True)
        for _ in range(50):
            if self.sh(f"curl -fsS http://{address}:9443/who", check=False) == text:
                return
            time.sleep(0.1)
        raise AssertionError(f"the backend on {address}:9443 did not answer")

    def through_forward(self, port: int = 8443) -> str:
        return self.sh(f"curl -sS --max-time 5 http://127.0.0.1:{port}/who", check=False)

    def journal(self) -> str:
        return self.sh("journalctl --no-pager -n 40 -u 'ollama-forward-*'", check=False)


@pytest.fixture(scope="module")
def host(tmp_path_factory):
    with systemd_container("op-forward") as name:
        h = Host(name, tmp_path_factory.mktemp("forward"))
        h.backend("127.0.0.2", "backend A")
        yield h


def test_the_forward_reaches_the_guest_proxy_as_a_sandboxed_dynamic_user(host):
    run = host.converge(VM1)
    assert run.changed(host.name) > 0
    assert host.sh("systemctl is-enabled ollama-forward-vm1.socket") == "enabled"
    assert host.sh("systemctl is-active ollama-forward-vm1.socket") == "active"
    # Socket activation: nothing runs before the first connection.
    assert host.sh("systemctl is-active ollama-forward-vm1.service", check=False) == "inactive"
    assert host.through_forward() == "backend A", host.journal()
    assert host.sh("systemctl is-active ollama-forward-vm1.service") == "active"
    shown = host.sh("systemctl show -p DynamicUser,CapabilityBoundingSet,NoNewPrivileges,User "
                    "ollama-forward-vm1.service").splitlines()
    assert "DynamicUser=yes" in shown and "CapabilityBoundingSet=" in shown and "NoNewPrivileges=yes" in shown
    pid = host.sh("systemctl show -p MainPID --value ollama-forward-vm1.service")
    status = host.sh(f"cat /proc/{pid}/status")
    assert re.search(r"^Uid:\s+([1-9]\d*)\s", status, re.M), status  # not root
    assert re.search(r"^CapEff:\s+0+$", status, re.M) and re.search(r"^CapBnd:\s+0+$", status, re.M), status
    # Both files are the role's templates, marked as such.
    for suffix in ("socket", "service"):
        assert "Ansible managed" in host.sh(f"head -3 {UNITS}/ollama-forward-vm1.{suffix}")
    assert "ListenStream=0.0.0.0:8443" in host.sh(f"cat {UNITS}/ollama-forward-vm1.socket")
    assert host.sh(f"systemd-analyze verify {UNITS}/ollama-forward-vm1.socket {UNITS}/ollama-forward-vm1.service "
                   "2>&1", check=False) == ""
    exposure = host.sh("systemd-analyze security --no-pager ollama-forward-vm1.service | tail -1")
    print(f"\nsystemd-analyze security ollama-forward-vm1.service: {exposure}")
    level = float(re.search(r"exposure level .*: (\d+\.\d+)", exposure).group(1))
    assert level <= 2.0, host.sh("systemd-analyze security --no-pager ollama-forward-vm1.service")


def test_a_second_converge_changes_nothing(host):
    run = host.converge(VM1)
    assert run.changed(host.name) == 0
    assert host.through_forward() == "backend A"


def test_a_new_lease_moves_the_forward_to_the_new_address_and_a_second_vm_gets_its_own_units(host):
    host.backend("127.0.0.3", "backend B")
    before = host.sh("systemctl show -p InvocationID --value ollama-forward-vm1.socket")
    relay = host.sh("systemctl show -p InvocationID --value ollama-forward-vm1.service")
    vm2 = {"name": "vm2", "listen": "127.0.0.1:8444", "target": "127.0.0.2:9443"}
    run = host.converge({**VM1, "target": "127.0.0.3:9443"}, vm2)
    assert run.changed(host.name) > 0
    # The running relay was restarted with the new target; the socket, whose address is the same, was not.
    assert host.sh("systemctl show -p InvocationID --value ollama-forward-vm1.service") not in ("", relay)
    assert host.through_forward() == "backend B", host.journal()
    assert host.sh("systemctl show -p InvocationID --value ollama-forward-vm1.socket") == before
    assert host.through_forward(8444) == "backend A", host.journal()
    assert host.converge({**VM1, "target": "127.0.0.3:9443"}, vm2).changed(host.name) == 0


def test_a_dry_run_for_a_new_vm_writes_nothing(host):
    run = host.converge({"name": "fresh", "listen": "0.0.0.0:8445", "target": "127.0.0.2:9443"}, check=True)
    assert run.changed(host.name) > 0  # it says what a real run would do
    assert host.sh(f"ls {UNITS} | grep -c '^ollama-forward-fresh' || true") == "0"
    assert host.sh("systemctl list-units --all --no-legend 'ollama-forward-fresh*'") == ""
    assert _curl_exit(host, 8445) == "7"


def test_removal_closes_the_port_and_a_new_listen_address_moves_the_other_vms_socket(host):
    before = host.sh("systemctl show -p InvocationID --value ollama-forward-vm2.socket")
    forwards = ({"name": "vm1", "state": "absent"},
                {"name": "vm2", "listen": "127.0.0.1:8446", "target": "127.0.0.2:9443"})
    run = host.converge(*forwards)
    assert run.changed(host.name) > 0
    # vm1: no unit, no file, no enablement link, the port closed.
    assert host.sh(f"ls {UNITS} {UNITS}/sockets.target.wants | grep -c '^ollama-forward-vm1' || true") == "0"
    assert host.sh("systemctl list-units --all --no-legend 'ollama-forward-vm1*'") == ""
    assert _curl_exit(host, 8443) == "7"  # connection refused
    # vm2: its socket was restarted on the new address, the old one is closed.
    assert host.sh("systemctl show -p InvocationID --value ollama-forward-vm2.socket") != before
    assert host.through_forward(8446) == "backend A", host.journal()
    assert _curl_exit(host, 8444) == "7"
    assert host.converge(*forwards).changed(host.name) == 0


def _curl_exit(host: Host, port: int) -> str:
    return host.sh(f"curl -sS --max-time 5 -o /dev/null http://127.0.0.1:{port}/who; echo $?", check=False).split()[-1]


def _run_here(tmp_path, *forwards: dict) -> ApplyError:
    """Run the role on this machine (ansible_connection local); it must fail."""
    (tmp_path / "inv.yml").write_text("all:\n  hosts:\n    localhost:\n      ansible_connection: local\n"
                                      "      ansible_python_interpreter: /usr/bin/python3\n")
    (tmp_path / "play.yml").write_text(PLAY)
    runner = AnsibleRunner(Workspace(tmp_path / "state"), tmp_path / "inv.yml", Quiet())
    with pytest.raises(ApplyError) as err:
        runner.run(str(tmp_path / "play.yml"), extravars={"forwards": list(forwards)})
    return err.value


def test_a_host_without_systemd_is_refused_before_any_change(tmp_path):
    assert not Path("/run/systemd/system").exists(), "this test needs a machine whose PID 1 is not systemd"
    err = _run_here(tmp_path, VM1)
    assert "task 'Stop when systemd is not PID 1'" in err.message
    assert "does not run systemd as PID 1 (/run/systemd/system is missing)" in err.message
    assert "put the guest on a LAN bridge instead (set kvm_network to a bridged libvirt network" in err.message
    assert "forward 0.0.0.0:8443 to 127.0.0.2:9443 yourself" in err.message
    assert err.run.changed("localhost") == 0
    assert list(Path(UNITS).glob("ollama-forward-*")) == []


def test_a_listen_address_that_is_not_addr_port_is_refused_naming_the_variable(tmp_path):
    err = _run_here(tmp_path, {**VM1, "listen": "lan.example:8443"})
    assert "task 'Assert that the listen address is ADDR:PORT'" in err.message
    assert 'ollama_forward_listen = "lan.example:8443" is not ADDR:PORT' in err.message
    assert err.run.changed("localhost") == 0
