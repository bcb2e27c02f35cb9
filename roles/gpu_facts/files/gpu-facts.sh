# The host's raw facts, one '### name' section each; provisioner/discover.py parses them.
# Read-only. GPU_FACTS_ROOT prefixes /sys, /proc and /etc (the tests read fixture trees with it).
R=${GPU_FACTS_ROOT:-}
echo '### proc_devices'; cat "$R/proc/devices" 2>/dev/null
echo '### nodes'
for f in /dev/nvidia* /dev/nvidia-caps/*; do
  [ -c "$f" ] && echo "$f $(stat -c '%t %T' "$f")"
done
echo '### driver'; cat "$R/proc/driver/nvidia/version" 2>/dev/null
echo '### smi'
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,compute_cap,memory.total,driver_version --format=csv,noheader 2>&1
echo '### groups'; getent group video render 2>/dev/null
# One line per PCI function: address vendor device driver iommu-group class boot_vga ('-': none).
echo '### pci'
for d in "$R"/sys/bus/pci/devices/*; do
  [ -r "$d/vendor" ] || continue
  drv=$(readlink "$d/driver" 2>/dev/null); drv=${drv##*/}
  grp=$(readlink "$d/iommu_group" 2>/dev/null); grp=${grp##*/}
  cls=$(cat "$d/class" 2>/dev/null); vga=$(cat "$d/boot_vga" 2>/dev/null)
  echo "${d##*/} $(cat "$d/vendor") $(cat "$d/device") ${drv:--} ${grp:--} ${cls:--} ${vga:--}"
done
# The IOMMU is on when the kernel made IOMMU groups; the units (dmar*, ivhd*) say whose it is.
echo '### iommu'
echo "groups $(ls "$R/sys/kernel/iommu_groups" 2>/dev/null | wc -l)"
echo "units $(ls "$R/sys/class/iommu" 2>/dev/null | tr '\n' ' ')"
echo '### cmdline'; cat "$R/proc/cmdline" 2>/dev/null
# Proxmox VE booted by systemd-boot keeps its kernel arguments in /etc/kernel/cmdline.
echo '### boot'
[ -e "$R/etc/kernel/proxmox-boot-uuids" ] && echo 'proxmox-boot-uuids'
[ -e "$R/etc/kernel/cmdline" ] && echo 'kernel-cmdline'
[ -z "$R" ] && command -v proxmox-boot-tool >/dev/null && proxmox-boot-tool status 2>/dev/null | grep -i 'configured with'
[ -z "$R" ] && command -v update-grub >/dev/null && echo 'update-grub'
echo '### cpuinfo'; grep -m1 '^vendor_id' "$R/proc/cpuinfo"; grep -m1 '^flags' "$R/proc/cpuinfo"
echo '### cgroup'; stat -fc %T "$R/sys/fs/cgroup"; cat "$R/sys/fs/cgroup/cgroup.controllers" 2>/dev/null
echo '### proxmox'; command -v pveversion >/dev/null && pveversion
exit 0
