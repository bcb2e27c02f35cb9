"""Benchmark: cold start of `provision --help` and rendering 100 hosts per target.

Goals (issue 2): --help <= 0.3 s; render 100 hosts <= 1 s per target.
Run: .venv/bin/python benchmarks/cli.py [--runs N]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

GOAL_HELP_S = 0.3
GOAL_RENDER_S = 1.0
HOSTS = 100


def _inventory(directory: Path) -> Path:
    lines = ["all:", "  children:"]
    for group in ("native", "docker", "lxc", "kvm"):
        lines += [f"    {group}:", "      hosts:"]
        for i in range(HOSTS):
            lines.append(f"        {group}-{i:03d}:")
            if group == "lxc":
                lines.append(f"          lxc_vmid: {100 + i}")
            if group == "kvm":
                lines.append(f"          kvm_gpu_pci_addresses: ['0000:{i % 256:02x}:00.0', '0000:{i % 256:02x}:00.1']")
            if group in ("native", "docker"):
                lines.append("          {}")
    (directory / "hosts.yml").write_text("\n".join(lines).replace(":\n          {}", ": {}") + "\n")
    return directory / "hosts.yml"


def _median_wall(cmd: list[str], runs: int) -> float:
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        subprocess.run(cmd, check=True, capture_output=True)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    provision = str(Path(sys.executable).parent / "provision")

    help_s = _median_wall([provision, "--help"], args.runs)
    print(f"provision --help cold start     median {help_s:6.3f} s  (goal <= {GOAL_HELP_S} s) "
          f"{'OK' if help_s <= GOAL_HELP_S else 'OVER'}")

    from provisioner import inventory
    from provisioner.render import render

    with tempfile.TemporaryDirectory() as tmp:
        inv = _inventory(Path(tmp))
        inventory.load(inv, "native")  # import Ansible once, as the CLI does per process
        for target in ("native", "docker", "lxc", "kvm"):
            times = []
            for run in range(args.runs):
                t = time.perf_counter()
                loaded = inventory.load(inv, target)
                render(loaded.hosts, Path(tmp) / f"out-{target}-{run}")
                times.append(time.perf_counter() - t)
            med = statistics.median(times)
            print(f"load + render {HOSTS} {target:6} hosts  median {med:6.3f} s  (goal <= {GOAL_RENDER_S} s) "
                  f"{'OK' if med <= GOAL_RENDER_S else 'OVER'}")
        cli_s = _median_wall([provision, "render", "-t", "kvm", "-i", str(inv), "-o", str(Path(tmp) / "cli")], args.runs)
        print(f"whole CLI process, {HOSTS} kvm hosts median {cli_s:6.3f} s  (includes importing ansible-core)")


if __name__ == "__main__":
    main()
