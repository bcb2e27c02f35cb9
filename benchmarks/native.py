"""Benchmark: the native target's apply step on a local systemd container, against a floor.

Floor: an empty play with fact gathering on the same container, run the same way (ansible-runner,
pipelining). Then: a fresh install (archive, user, unit, model, preload) and no-op re-converges of
playbooks/native.yml (the host play, the place added, the shared service play). Goal (issue 9):
a no-op re-converge stays within 1.1x the floor.
Needs what tests/run.sh sets up (Docker, the systemd image, the built archive).
Run: .venv/bin/python benchmarks/native.py [--runs N]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from provisioner import inventory as inv  # noqa: E402
from provisioner.progress import Quiet  # noqa: E402
from provisioner.render import render  # noqa: E402
from provisioner.runner import AnsibleRunner, playbook_vars  # noqa: E402
from provisioner.targets import Target  # noqa: E402
from provisioner.workspace import Workspace  # noqa: E402
from tests.native_host import systemd_container, write_native_inventory, www_server  # noqa: E402

GOAL = 1.1
FLOOR_PLAY = "- name: Floor\n  hosts: native\n  gather_facts: true\n  tasks: []\n"


def timed(runner: AnsibleRunner, playbook: str, **extravars) -> float:
    started = time.perf_counter()
    runner.run(playbook, extravars=extravars)
    return time.perf_counter() - started


def prepare(work: Path, inventory: Path, target: Target, facts: Path | None = None) -> tuple[AnsibleRunner, dict]:
    """Load and render ``inventory`` for ``target`` as `provision` would (with the discovered ``facts``
    directory, else the documented assumptions); the runner and the playbook's variables."""
    workspace = Workspace(work / "state")
    hosts = inv.load(inventory, target, None).hosts
    rendered = workspace.rendered(target.value).resolve()
    render(hosts, rendered, facts)
    return AnsibleRunner(workspace, inventory, Quiet()), playbook_vars(hosts, provision_rendered_dir=str(rendered))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="repetitions of the floor and the no-op (median)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, www_server() as www, systemd_container("op-bench") as host:
        work = Path(tmp)
        inventory = write_native_inventory(work / "inv", host, www)
        runner, extra = prepare(work, inventory, Target.native)
        floor_play = work / "floor.yml"
        floor_play.write_text(FLOOR_PLAY)

        floors = [timed(runner, str(floor_play)) for _ in range(args.runs)]
        install = timed(runner, "native.yml", **extra)
        noops = [timed(runner, "native.yml", **extra) for _ in range(args.runs)]

    floor = statistics.median(floors)
    noop = statistics.median(noops)
    print(f"floor (empty play + fact gathering): median {floor:.2f} s  (runs: {', '.join(f'{t:.2f}' for t in floors)})")
    print(f"fresh install:                       {install:.2f} s = {install / floor:.1f}x the floor")
    print(f"no-op re-converge:                   median {noop:.2f} s = {noop / floor:.2f}x the floor "
          f"(goal <= {GOAL}x: {'met' if noop / floor <= GOAL else 'NOT met'})  (runs: {', '.join(f'{t:.2f}' for t in noops)})")


if __name__ == "__main__":
    main()
