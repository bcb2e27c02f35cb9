"""Benchmark: the kvm target's apply step on this machine's libvirtd, against a floor.

Floor: an empty play with fact gathering in the guest over the same SSH connection (the place's own
connection variables, as the kvm target gives them: TargetModule.place, at the address of the guest's
DHCP lease), run the same way (ansible-runner). Then: a fresh apply (overlay disk, seed, domain defined
and booted, cloud-init, Ollama and the model inside) and no-op re-converges of playbooks/kvm.yml (the
host play: domain, disk and seed checks, the address; the service play inside the guest). Floor and
no-op runs alternate, so a load that comes and goes on the machine weighs on both alike.
Goal (issue 12): a no-op re-converge <= 1.2x the floor.
The VM is the tests' (tests/test_kvm.py's recipe, unexposed): the guest image tests/infra/guest-image.sh
builds, emulated CPU (kvm_domain_type qemu), so every module run in the guest costs seconds here.
Needs what tests/run.sh sets up (libvirtd and its default network, the guest image, the built archive).
Run: .venv/bin/python benchmarks/kvm.py [--runs N]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.lxc import floor_play, report  # noqa: E402
from benchmarks.native import prepare, timed  # noqa: E402
from provisioner.targets import Target  # noqa: E402
from tests.native_host import www_server  # noqa: E402
from tests.test_kvm import KVM_HOST_IP, Vm, _remove, virsh  # noqa: E402

GOAL = 1.2


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3, help="repetitions of the floor and the no-op (median)")
    args = parser.parse_args()
    built = subprocess.run(["bash", str(ROOT / "tests/infra/guest-image.sh")], capture_output=True, text=True,
                           check=True)
    image = Path(built.stdout.strip().splitlines()[-1])
    name = f"oprov-bench-{uuid.uuid4().hex[:6]}"
    try:
        with tempfile.TemporaryDirectory() as tmp, www_server(KVM_HOST_IP) as www:
            work = Path(tmp)
            key = work / "id_ed25519"
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
            vm = Vm(work, name, image, key, www)
            # The target alone: no proxy in the guest.
            inventory = vm.write_inventory("inv-bench", ollama_expose_address=None, ollama_expose_tokens=[])
            runner, extra = prepare(work, inventory, Target.kvm)
            install = timed(runner, "kvm.yml", **extra)
            lease = virsh("domifaddr", name, "--source", "lease").split()
            place = {**next(iter(extra["provision_places"].values())), "ansible_host": lease[-1].split("/")[0]}
            (work / "floor.yml").write_text(floor_play(place))
            floors, noops = [], []
            for _ in range(args.runs):
                floors.append(timed(runner, str(work / "floor.yml")))
                noops.append(timed(runner, "kvm.yml", **extra))
    finally:
        _remove(name)

    report("facts in the guest", "VM boot + Ollama", floors, install, noops, GOAL)


if __name__ == "__main__":
    main()
