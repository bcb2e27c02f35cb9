#!/usr/bin/python
# -*- coding: utf-8 -*-
"""Merge the project's daemon.json fragment into the host's /etc/docker/daemon.json, never over it."""

from __future__ import annotations

DOCUMENTATION = r"""
module: docker_daemon_json
short_description: Merge a fragment into Docker's daemon.json, keeping everything the user set
description:
  - Keys the user set stay as they are, byte for byte: the project's additions are inserted into
    the user's own text (new keys after the user's, in the user's indentation; missing entries
    appended to the end of the user's lists), nothing else in the file moves.
  - A key the user set to another value keeps the user's value and is reported as a conflict
    (a warning), never overwritten. A list entry of the form C(option=value) (C(exec-opts))
    whose option the user already sets to another value is a conflict too, not an addition.
  - A file that is not valid JSON (or not a JSON object) stops the run with its path and the
    parse error (line and column); nothing is written.
  - The file is written only when the merged content differs; check mode and diff supported.
options:
  path: {type: path, default: /etc/docker/daemon.json, description: The daemon's configuration file.}
  fragment: {type: dict, required: true, description: What the project needs in it.}
  validate:
    type: str
    description: Command (with %s for a temporary file holding the merged content) that must
      exit 0 before the file is replaced, e.g. C(dockerd --validate --config-file %s).
  backup: {type: bool, default: false, description: Keep a copy of the previous file; its path is returned.}
"""

RETURN = r"""
added: {description: Dotted paths of what was added (lists name the entry), type: list, returned: always}
conflicts: {description: One line per key where the user's value was kept instead of the project's, type: list, returned: always}
changed_keys: {description: Top-level keys whose value the merge changed, type: list, returned: always}
live_restore: {description: Whether the merged file sets live-restore to true, type: bool, returned: always}
backup_file: {description: The previous file's copy, type: str, returned: when changed and backup}
"""

import os
import shlex
import tempfile

from ansible.module_utils.daemon_json_merge import DaemonJsonError, merge, read

# --- the module -----------------------------------------------------------------------------


def main() -> None:
    from ansible.module_utils.basic import AnsibleModule

    module = AnsibleModule(
        argument_spec={
            "path": {"type": "path", "default": "/etc/docker/daemon.json"},
            "fragment": {"type": "dict", "required": True},
            "validate": {"type": "str"},
            "backup": {"type": "bool", "default": False},
        },
        supports_check_mode=True,
    )
    path = module.params["path"]
    try:
        old = read(path)
    except (OSError, UnicodeDecodeError) as err:
        module.fail_json(msg=f"{path} cannot be read: {err}; nothing was changed")
    try:
        result = merge(old, module.params["fragment"], path)
    except DaemonJsonError as err:
        module.fail_json(msg=str(err))
    for line in result.conflicts:
        module.warn(f"{path}: {line}")
    out = {
        "changed": result.changed,
        "path": path,
        "added": result.added,
        "conflicts": result.conflicts,
        "changed_keys": result.changed_keys,
        "live_restore": result.live_restore,
        "diff": {"before": old or "", "after": result.text, "before_header": path, "after_header": path},
    }
    if not result.changed or module.check_mode:
        module.exit_json(**out)

    directory = os.path.dirname(path) or "."
    if not os.path.isdir(directory):
        os.makedirs(directory, mode=0o755)
    fd, tmp = tempfile.mkstemp(prefix=".daemon.json.", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(result.text)
        if old is None:
            os.chmod(tmp, 0o644)
        if module.params["validate"]:
            command = module.params["validate"] % shlex.quote(tmp)
            rc, stdout, stderr = module.run_command(command, use_unsafe_shell=True)
            if rc != 0:
                module.fail_json(msg=f"the merged {path} does not pass `{module.params['validate']}`: "
                                     f"{(stderr or stdout).strip()}; nothing was changed", **out)
        if old is not None and module.params["backup"]:
            out["backup_file"] = module.backup_local(path)
        module.atomic_move(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    module.exit_json(**out)


if __name__ == "__main__":
    main()
