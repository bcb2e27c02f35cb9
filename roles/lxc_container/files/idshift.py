#!/usr/bin/env python3
"""Shift every owner under ROOT by BASE (uid and gid), keeping modes: an unprivileged container's
root filesystem as its id map (lxc.idmap = u 0 BASE 65536) expects it. Run once on a fresh root.

root's chown clears setuid and setgid bits, so each file's mode is set again afterwards.
Usage: idshift.py ROOT BASE
"""

import os
import stat
import sys


def shift(path: str, base: int) -> None:
    st = os.lstat(path)
    if st.st_uid >= base:  # already shifted (a rerun after an interruption)
        return
    os.lchown(path, st.st_uid + base, st.st_gid + base)
    if not stat.S_ISLNK(st.st_mode):
        os.chmod(path, stat.S_IMODE(st.st_mode))


def main() -> None:
    root, base = sys.argv[1], int(sys.argv[2])
    count = 0
    for directory, dirs, files in os.walk(root):
        for name in dirs + files:
            shift(os.path.join(directory, name), base)
            count += 1
    shift(root, base)
    print(f"shifted {count + 1} owners under {root} by {base}")


if __name__ == "__main__":
    main()
