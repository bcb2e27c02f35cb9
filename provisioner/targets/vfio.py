"""VFIO host checks: can these PCI functions be handed to a VM, safely, as they are?

Pure functions of discovered facts (the sysfs tree discovery reads: every PCI function's
vendor, device, class, boot_vga, driver and IOMMU group, whether the kernel made IOMMU
groups, and its command line). Each problem is one line naming the host, the variable
or address and the fix; nothing here touches a host.
"""

from __future__ import annotations

from ..facts import NVIDIA_VENDOR_ID, HostFacts, PciDevice

VARIABLE = "kvm_gpu_pci_addresses"


def kernel_args(iommu: str) -> list[str]:
    """The kernel arguments that turn the IOMMU on in passthrough mode (iommu: intel or amd)."""
    return [f"{iommu}_iommu=on", "iommu=pt"]


def firmware_switch(iommu: str) -> str:
    return "VT-d" if iommu == "intel" else "AMD-Vi (IOMMU, with SVM)"


def iommu_problem(host: str, facts: HostFacts, iommu: str) -> str | None:
    """The IOMMU is off or absent: which kernel arguments to add, and the firmware switch."""
    if facts.iommu_enabled is not False:
        return None
    args = kernel_args(iommu)
    cmdline = (facts.kernel_cmdline or "").split()
    missing = [a for a in args if a not in cmdline]
    firmware = firmware_switch(iommu)
    if args[0] in cmdline:
        return (f"{host}: the IOMMU is off (no IOMMU groups in /sys/kernel/iommu_groups) although the kernel "
                f"command line has {args[0]}: turn {firmware} on in the firmware (BIOS/UEFI) setup and reboot")
    return (f"{host}: the IOMMU is off (no IOMMU groups in /sys/kernel/iommu_groups): add {' '.join(missing)} to "
            f"the kernel command line (GRUB_CMDLINE_LINUX_DEFAULT in /etc/default/grub, or /etc/kernel/cmdline "
            f"and `proxmox-boot-tool refresh` on Proxmox VE booted by systemd-boot), make sure {firmware} is on "
            f"in the firmware (BIOS/UEFI) setup, and reboot")


def check(host: str, addresses: list[str], facts: HostFacts, *, iommu: str,
          allow_boot_gpu: bool = False) -> list[str]:
    """Every reason the listed functions cannot be passed through, one line each (empty: they can)."""
    if not addresses:
        return []
    if facts.source != "discovered":
        return [f"{host}: no discovered facts for this host, and the VFIO checks read the host's PCI devices and "
                f"IOMMU groups: run `provision discover -t kvm -i INVENTORY` (or `provision preflight` without "
                f"--facts)"]
    if facts.iommu_enabled is None or facts.kernel_cmdline is None:
        return [f"{host}: the facts file records no IOMMU state (written by an older discovery): run "
                f"`provision discover -t kvm -i INVENTORY` again"]
    problems = []
    found = iommu_problem(host, facts, iommu)
    if found:
        problems.append(found)

    listed: list[PciDevice] = []
    for address in addresses:
        dev = facts.pci_device(address)
        if dev is None or dev.assumed:
            there = ", ".join(facts.nvidia_pci_addresses) or "none"
            problems.append(f"{host}: {VARIABLE}: {address} does not exist on the host (its NVIDIA functions: "
                            f"{there}); list the card's functions as `lspci -D -d 10de:` prints them")
        elif dev.vendor_id != NVIDIA_VENDOR_ID:
            problems.append(f"{host}: {VARIABLE}: {address} is not an NVIDIA function but {dev.describe()}; "
                            f"list only the NVIDIA card's functions (`lspci -D -d 10de:`)")
        else:
            listed.append(dev)

    for dev in listed:
        if dev.boot_vga and not allow_boot_gpu:
            problems.append(f"{host}: {dev.address} is the host's boot display (boot_vga 1): bound to vfio-pci it "
                            f"takes the host's console with it; make another GPU the primary display in the "
                            f"firmware setup, or set kvm_allow_boot_gpu: true (the host then has no local console)")

    for slot in sorted({d.slot for d in listed}):
        functions = facts.card_functions(slot)
        missing = [f for f in functions if f.address not in addresses]
        if missing:
            given = ", ".join(a for a in addresses if a.startswith(slot + "."))
            problems.append(f"{host}: {VARIABLE} lists {given} of the card at {slot} but not "
                            f"{', '.join(f.describe() for f in missing)}: a card passes to a VM with all its "
                            f"functions; add {', '.join(repr(f.address) for f in missing)}")

    if facts.iommu_enabled:
        slots = {d.slot for d in listed}
        for group in sorted({d.iommu_group for d in listed if d.iommu_group is not None}):
            others = [m for m in facts.iommu_group_members(group) if m.slot not in slots and not m.is_bridge]
            if others:
                cards = ", ".join(sorted(slots))
                problems.append(
                    f"{host}: IOMMU group {group} of the card at {cards} also holds "
                    f"{', '.join(m.describe() for m in others)}: a VM takes an IOMMU group whole, so they would "
                    f"leave the host too; put the card in a PCIe slot with a group of its own (a CPU-attached "
                    f"slot; list the groups with `find /sys/kernel/iommu_groups/ -type l`), or turn ACS on in the "
                    f"firmware setup")
        for dev in listed:
            if dev.iommu_group is None:
                problems.append(f"{host}: {dev.address} has no IOMMU group although the IOMMU is on: the card "
                                f"cannot be passed through; check `dmesg | grep -e DMAR -e AMD-Vi`")
    return problems


def describe_ok(host: str, addresses: list[str], facts: HostFacts) -> str:
    """The note for a card that passes every check."""
    devs = [d for d in (facts.pci_device(a) for a in addresses) if d is not None]
    groups = sorted({d.iommu_group for d in devs if d.iommu_group is not None})
    drivers = sorted({d.driver or "none" for d in devs})
    return (f"{host}: VFIO: {', '.join(d.describe() for d in devs)} in IOMMU group "
            f"{', '.join(map(str, groups))} (nothing else but PCI bridges); bound to vfio-pci by address at boot "
            f"(driver now: {', '.join(drivers)})")


def bound(addresses: list[str], facts: HostFacts) -> bool:
    """Every listed function is driven by vfio-pci now (after the host's reboot)."""
    devs = [facts.pci_device(a) for a in addresses]
    return bool(devs) and all(d is not None and d.driver == "vfio-pci" for d in devs)
