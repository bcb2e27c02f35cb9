"""Benchmark: the docker target's apply step on a Docker host in a throwaway systemd container, against a floor.

Floor: an empty play with fact gathering on the same Docker host through the same connection
(community.docker.docker), run the same way (ansible-runner). Then: a fresh apply (daemon.json,
compose project, container, model) and no-op re-converges of playbooks/docker.yml (the host play:
ownership and port checks, role docker_host, role ollama_container, the place added). Floor and
no-op runs alternate, so a load that comes and goes on the machine weighs on both alike.
Goal (issue 11): a no-op re-converge <= 1.2x the floor.
The Docker host is tests/docker_host.py's (engine installed by role docker_host), with the Ollama
image loaded into it (the registry path is what tests/test_docker.py exercises).
Needs what tests/run.sh sets up (Docker, the systemd image, the built archive).
Run: .venv/bin/python benchmarks/docker.py [--runs N]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.lxc import report  # noqa: E402
from benchmarks.native import prepare, timed  # noqa: E402
from provisioner.targets import Target  # noqa: E402
from tests.docker_host import docker_host, load_images, ollama_images  # noqa: E402
from tests.native_host import www_server  # noqa: E402
from tests.test_docker import write_docker_inventory  # noqa: E402

GOAL = 1.2
FLOOR_PLAY = "- name: Floor\n  hosts: docker\n  gather_facts: true\n  tasks: []\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="repetitions of the floor and the no-op (median)")
    args = parser.parse_args()
    images = ollama_images()
    with tempfile.TemporaryDirectory() as tmp, www_server() as www, docker_host(prefix="op-bench-dk") as host:
        load_images(host, *images)
        work = Path(tmp)
        inventory = write_docker_inventory(work / "inv", host, www)
        # Discovered facts: without them the render assumes a GPU, and its reservation cannot start here.
        subprocess.run([sys.executable, "-m", "provisioner.cli", "discover", "-t", "docker", "-i", str(inventory),
                        "--facts", str(work / "facts")], check=True, capture_output=True)
        runner, extra = prepare(work, inventory, Target.docker, work / "facts")
        floor_play = work / "floor.yml"
        floor_play.write_text(FLOOR_PLAY)
        install = timed(runner, "docker.yml", **extra)
        floors, noops = [], []
        for _ in range(args.runs):
            floors.append(timed(runner, str(floor_play)))
            noops.append(timed(runner, "docker.yml", **extra))

    report("facts on the Docker host", "engine config + Ollama", floors, install, noops, GOAL)

if __name__ == "__main__":
    main()
