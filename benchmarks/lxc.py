"""Benchmark: the lxc target's apply step (plain LXC) on this machine, against a floor.

Floor: an empty play with fact gathering into the same container through the same connection
(the place's own connection variables, as the lxc target gives them: TargetModule.place), run
the same way (ansible-runner). Then: a fresh apply (container from the rootfs tarball, Ollama,
model) and no-op re-converges of playbooks/lxc.yml (the host play, the place added, the shared
service play inside). Floor and no-op runs alternate, so a load that comes and goes on the
machine weighs on both alike. Goal (issue 10): a no-op re-converge <= 1.2x the floor.
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
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.native import prepare, timed  # noqa: E402
from provisioner import resources  # noqa: E402
from provisioner.targets import Target  # noqa: E402
from tests.native_host import LXC_HOST_IP, www_server  # noqa: E402
from tests.test_lxc import write_lxc_inventory  # noqa: E402

GOAL = 1.2


def floor_play(place: dict[str, Any]) -> str:
    """An empty play with fact gathering in the place, reached with the place's own connection.

    The host is named after the container (ansible_host): ansible-runner's fact cache is a file
    per host name, and the place's name ("host/ct-NAME") would ask for a directory."""
    connection = {k: v for k, v in place.items() if k.startswith("ansible_")}
    return yaml.safe_dump([
        {"name": "Floor", "hosts": "all", "gather_facts": False, "tasks": [
            {"name": "Reach the container", "changed_when": False,
             "ansible.builtin.add_host": {"name": connection["ansible_host"], "groups": "floor", **connection}}]},
        {"name": "Floor in the container", "hosts": "floor", "gather_facts": True, "tasks": []},
    ], sort_keys=False)


def spread(times: list[float]) -> str:
    return f"median {statistics.median(times):.2f} s, {min(times):.2f}-{max(times):.2f}"


def report(floor_what: str, install_what: str, floors: list[float], install: float, noops: list[float],
           goal: float) -> None:
    """Print a benchmark's figures: the floor, the fresh apply, the no-op against the goal, pair by pair."""
    floor = statistics.median(floors)
    ratio = statistics.median(noops) / floor
    pairs = [n / f for f, n in zip(floors, noops)]
    labels = [f"floor ({floor_what}):", f"fresh apply ({install_what}):", "no-op re-converge:", "no-op / floor, run by run:"]
    width = max(map(len, labels)) + 1
    print(f"{labels[0]:<{width}}{spread(floors)}  (runs: {', '.join(f'{t:.2f}' for t in floors)})")
    print(f"{labels[1]:<{width}}{install:.2f} s = {install / floor:.1f}x the floor")
    print(f"{labels[2]:<{width}}{spread(noops)} = {ratio:.2f}x the floor "
          f"(goal <= {goal}x: {'met' if ratio <= goal else 'NOT met'})  (runs: {', '.join(f'{t:.2f}' for t in noops)})")
    print(f"{labels[3]:<{width}}median {statistics.median(pairs):.2f}x, "
          f"{min(pairs):.2f}-{max(pairs):.2f}x over {len(pairs)} pairs")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="repetitions of the floor and the no-op (median)")
    args = parser.parse_args()
    name = f"oprov-bench-{uuid.uuid4().hex[:6]}"
    try:
        with tempfile.TemporaryDirectory() as tmp, www_server(LXC_HOST_IP) as www:
            work = Path(tmp)
            inventory = write_lxc_inventory(work / "inv", name, www)
            runner, extra = prepare(work, inventory, Target.lxc)
            install = timed(runner, "lxc.yml", **extra)
            # The floor play beside the project's connection plugins, as the project's playbooks are.
            floor = work / "floor"
            floor.mkdir()
            (floor / "connection_plugins").symlink_to(resources.playbooks_dir() / "connection_plugins")
            (floor / "floor.yml").write_text(floor_play(next(iter(extra["provision_places"].values()))))
            floors, noops = [], []
            for _ in range(args.runs):
                floors.append(timed(runner, str(floor / "floor.yml")))
                noops.append(timed(runner, "lxc.yml", **extra))
    finally:
        subprocess.run(["lxc-stop", "-n", name, "-k"], capture_output=True)
        subprocess.run(["lxc-destroy", "-n", name], capture_output=True)

    report("facts in the container", "container + Ollama", floors, install, noops, GOAL)

if __name__ == "__main__":
    main()
