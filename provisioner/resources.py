"""Where the roles, playbooks and templates are: the one place that knows.

They ship inside the package as ``provisioner/data/{roles,playbooks,templates}``
and are found through ``importlib.resources``, never through the repository root,
so an installed ``provision`` (``pip install .``, ``pipx install .``) works from
any directory. In the repository those three entries are symlinks to the
top-level ``roles/``, ``playbooks/`` and ``templates/`` directories (the single
copy); building the wheel copies the files behind them into the package.

Standard library only, and nothing is looked up at import time: ``provision
--help`` stays fast.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

DATA = "data"
NAMES = ("roles", "playbooks", "templates")


@cache
def data_dir(name: str) -> Path:
    """The real directory ``provisioner/data/<name>`` (symlinks resolved); RuntimeError if absent."""
    if name not in NAMES:
        raise ValueError(f"unknown data directory {name!r}: expected one of {', '.join(NAMES)}")
    from importlib.resources import files  # ~10 ms: only when a path is first asked for

    package = __package__ or "provisioner"
    where = files(package) / DATA / name
    if not isinstance(where, Path):  # e.g. imported from a zip archive: Ansible needs real files
        raise RuntimeError(
            f"the {package} package is not installed as plain files ({where}): "
            f"its {name} must be a directory on disk; reinstall it with pip or pipx"
        )
    path = where.resolve()
    if not path.is_dir():
        raise RuntimeError(
            f"the {package} package is incomplete: directory {DATA}/{name} is missing "
            f"(looked for {where}); reinstall it (pip install / pipx install)"
        )
    return path


def roles_dir() -> Path:
    """Directory of the Ansible roles (ANSIBLE_ROLES_PATH)."""
    return data_dir("roles")


def playbooks_dir() -> Path:
    """Directory of the playbooks."""
    return data_dir("playbooks")


def templates_dir() -> Path:
    """Directory of the Jinja2 templates that ``provision render`` fills in."""
    return data_dir("templates")


def playbook(name: str) -> Path:
    """The playbook ``name`` (e.g. ``native.yml``): ``playbooks_dir() / name``."""
    return playbooks_dir() / name
