"""Benchmark: the lxc target's apply step (plain LXC) on this machine, against a floor.

Floor: an empty play with fact gathering into the same container through the same connection
(Ansible's LXC connection, no pipelining), run the same way (ansible-runner). Then: a fresh
apply (container from the rootfs tarball, Ollama, model) and no-op re-converges of
playbooks/lxc.yml (the host play, the place added, the shared service play inside).
Goal (issue 10): a no-op re-converge <= 1.2x the floor.
Needs what tests/run.sh sets up (LXC, lxcbr0, the rootfs tarball, the built archive).
Run: .venv/bin/python benchmarks/lxc.py [--runs N]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.native import timed  # noqa: E402
from provisioner import inventory as inv  # noqa: E402
from provisioner.progress import Quiet  # noqa: E402
from provisioner.render import render  # noqa: E402
from provisioner.runner import AnsibleRunner, playbook_vars  # noqa: E402
from provisioner.targets import Target  # noqa: E402
from provisioner.workspace import Workspace  # noqa: E402
from tests.native_host import LXC_HOST_IP, www_server  # noqa: E402
from tests.test_lxc import write_lxc_inventory  # noqa: E402

GOAL = 1.2


def floor_play(name: str) -> str:
    return (f"- name: Floor\n  hosts: all\n  gather_facts: false\n  tasks:\n"
            f"    - name: Reach the container\n      ansible.builtin.add_host:\n        name: {name}\n"
            f"        groups: floor\n        ansible_connection: community.general.lxc\n"
            f"        ansible_python_interpreter: /usr/bin/python3\n        ansible_pipelining: false\n"
            f"      changed_when: false\n"
            f"- name: Floor in the container\n  hosts: floor\n  gather_facts: true\n  tasks: []\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="repetitions of the floor and the no-op (median)")
    args = parser.parse_args()
    name = f"oprov-bench-{uuid.uuid4().hex[:6]}"
    try:
        with tempfile.TemporaryDirectory() as tmp, www_server(LXC_HOST_IP) as www:
            work = Path(tmp)
            inventory = write_lxc_inventory(work / "inv", name, www)
            workspace = Workspace(work / "state")
            hosts = inv.load(inventory, Target.lxc, None).hosts
            rendered = workspace.rendered("lxc").resolve()
            render(hosts, rendered, None)
            extra = playbook_vars(hosts, provision_rendered_dir=str(rendered))
            runner = AnsibleRunner(workspace, inventory, Quiet())
            install = timed(runner, "lxc.yml", **extra)
            (work / "floor.yml").write_text(floor_play(name))
            floors = [timed(runner, str(work / "floor.yml")) for _ in range(args.runs)]
            noops = [timed(runner, "lxc.yml", **extra) for _ in range(args.runs)]
    finally:
        subprocess.run(["lxc-stop", "-n", name, "-k"], capture_output=True)
        subprocess.run(["lxc-destroy", "-n", name], capture_output=True)

    floor = statistics.median(floors)
    noop = statistics.median(noops)
    print(f"floor (facts in the container):  median {floor:.2f} s  (runs: {', '.join(f'{t:.2f}' for t in floors)})")
    print(f"fresh apply (container + Ollama): {install:.2f} s = {install / floor:.1f}x the floor")
    print(f"no-op re-converge:               median {noop:.2f} s = {noop / floor:.2f}x the floor "
          f"(goal <= {GOAL}x: {'met' if noop / floor <= GOAL else 'NOT met'})  (runs: {', '.join(f'{t:.2f}' for t in noops)})")


if __name__ == "__main__":
    main()
