"""Load an Ansible inventory with ansible-core's own API and build each host's settings.

Whatever Ansible accepts is accepted: YAML or INI hosts files, ``group_vars/``,
``host_vars/``, ``{{ templated }}`` values. The hosts of a target are the members
of the group named after it; ``--limit`` narrows them as in Ansible.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .errors import InventoryError, SettingsError
from .settings import HostSettings, build_settings
from .targets import Target, get

_YAML_SUFFIXES = {".yml", ".yaml", ".json", ""}
# Variables Ansible itself sets or owns; not ours to validate or template.
_ANSIBLE_OWN = ("ansible_", "inventory_", "group_names", "groups", "omit", "playbook_dir")


class _TolerantLoader(yaml.SafeLoader):
    """A YAML loader that only checks syntax: Ansible's own tags (!vault, !unsafe) pass."""


def _any_tag(loader: yaml.Loader, suffix: str, node: yaml.Node) -> None:
    return None


_TolerantLoader.add_multi_constructor("!", _any_tag)


def _yaml_files(source: Path) -> list[Path]:
    if source.is_file():
        candidates = [source]
        base = source.parent
    else:
        candidates = [p for p in sorted(source.iterdir()) if p.is_file()]
        base = source
    for sub in ("group_vars", "host_vars"):
        d = base / sub
        if d.is_dir():
            candidates += sorted(p for p in d.rglob("*") if p.is_file())
    return [p for p in candidates if p.suffix in _YAML_SUFFIXES and not p.name.startswith(".")]


def check_yaml_syntax(source: Path) -> None:
    """Name the file and line of the first YAML syntax error in an inventory."""
    for path in _yaml_files(source):
        try:
            text = path.read_text()
        except UnicodeDecodeError:
            continue
        if path.suffix == "" and text.lstrip().startswith("["):
            continue  # an INI hosts file: Ansible's INI parser checks it
        try:
            list(yaml.load_all(text, Loader=_TolerantLoader))  # noqa: S506 - syntax check only
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark or exc.context_mark
            line = f":{mark.line + 1}" if mark else ""
            problem = exc.problem or exc.context or "invalid YAML"
            raise InventoryError(f"{path}{line}: broken YAML: {problem}; fix the file and run again") from None
        except yaml.YAMLError as exc:
            raise InventoryError(f"{path}: broken YAML: {exc}") from None


def _plain(value: Any) -> Any:
    """Ansible's tagged strings and ints as plain Python data."""
    return json.loads(json.dumps(value, default=str))


@dataclass
class LoadedInventory:
    source: Path
    target: Target
    hosts: list[HostSettings]
    # Raw connection data per host (ansible_host, ansible_user…), for reports.
    connection: dict[str, dict[str, Any]] = field(default_factory=dict)


def load(source: str | Path, target: Target | str, limit: str | None = None) -> LoadedInventory:
    """Read ``source``, pick the hosts of ``target`` (narrowed by ``limit``), validate each.

    Raises InventoryError or SettingsError with a message naming the file,
    host or variable; touches no host.
    """
    return load_many(source, [Target(target)], limit)[0]


def load_many(source: str | Path, targets: list[Target] | None, limit: str | None = None) -> list[LoadedInventory]:
    """Like :func:`load` for several targets, parsing the inventory once.

    With ``targets`` None: every target whose group has hosts (an error if none has).
    """
    opened = _open(source, limit)
    if targets is None:
        targets = [t for t in Target if opened.hosts(get(t).group)]
        if not targets:
            raise InventoryError(f"inventory {source} has no host in any target group ({', '.join(t.value for t in Target)})")
    return [_load_target(opened, t) for t in targets]


@dataclass
class _Opened:
    source: str | Path
    path: Path
    limit: str | None
    loader: Any
    inv: Any

    def hosts(self, group: str) -> list:
        return self.inv.get_hosts(pattern=group) if group in self.inv.groups else []


def _open(source: str | Path, limit: str | None) -> _Opened:
    path = Path(source)
    if not path.exists():
        raise InventoryError(f"inventory {source} does not exist; pass -i with a hosts.yml file or an inventory directory")
    check_yaml_syntax(path)

    # A source that parses as YAML but is no inventory must fail, not yield zero hosts.
    os.environ.setdefault("ANSIBLE_INVENTORY_UNPARSED_FAILED", "True")
    os.environ.setdefault("ANSIBLE_LOCALHOST_WARNING", "False")
    from ansible.errors import AnsibleError
    from ansible.inventory.manager import InventoryManager
    from ansible.parsing.dataloader import DataLoader

    loader = DataLoader()
    _vault_secrets(loader)
    try:
        inv = InventoryManager(loader=loader, sources=[str(path)])
    except AnsibleError as exc:
        first = str(exc).strip().splitlines()[0]
        raise InventoryError(f"inventory {source}: {first}") from None
    if limit:
        inv.subset(limit)
    return _Opened(source, path, limit, loader, inv)


def _vault_secrets(loader: Any) -> None:
    """Vaulted values open with the vault password Ansible itself would use (ANSIBLE_VAULT_PASSWORD_FILE,
    ANSIBLE_VAULT_IDENTITY_LIST or ansible.cfg); ansible-playbook, run later, reads the same."""
    from ansible import constants as C
    from ansible.cli import CLI

    files = [C.DEFAULT_VAULT_PASSWORD_FILE] if C.DEFAULT_VAULT_PASSWORD_FILE else []
    ids = list(C.DEFAULT_VAULT_IDENTITY_LIST or [])
    if files or ids:
        loader.set_vault_secrets(CLI.setup_vault_secrets(loader, vault_ids=ids, vault_password_files=files,
                                                         ask_vault_pass=False, auto_prompt=False))


def _load_target(opened: _Opened, target: Target) -> LoadedInventory:
    from ansible.errors import AnsibleError
    from ansible.template import Templar
    from ansible.vars.manager import VariableManager

    source, limit, loader = opened.source, opened.limit, opened.loader
    group = get(target).group
    if group not in opened.inv.groups:
        raise InventoryError(
            f"inventory {source} has no group '{group}': the hosts of target {target} are the members "
            f"of the group named after it; add them under all.children.{group}.hosts"
        )
    hosts = opened.hosts(group)
    if not hosts:
        narrowed = f" matching --limit {limit!r}" if limit else ""
        raise InventoryError(f"inventory {source} has no host in group '{group}'{narrowed}")

    variables = VariableManager(loader=loader, inventory=opened.inv)
    settings: list[HostSettings] = []
    connection: dict[str, dict[str, Any]] = {}
    problems: list[str] = []
    for host in hosts:
        hv = variables.get_vars(host=host, include_hostvars=False)
        ours = {k: v for k, v in hv.items() if not k.startswith(_ANSIBLE_OWN)}
        try:
            rendered = _plain(Templar(loader=loader, variables=hv).template(ours))
        except AnsibleError as exc:
            first = str(exc).strip().splitlines()[0]
            if "vault" in first.lower():
                first += " (give the vault password as Ansible takes it: ANSIBLE_VAULT_PASSWORD_FILE=FILE)"
            problems.append(f"host {host.name!r}: a variable could not be templated: {first}")
            continue
        try:
            address = hv.get("ansible_host")
            settings.append(build_settings(host.name, target, rendered, _plain(address) if address else None))
        except SettingsError as exc:  # collect across hosts: one line per problem
            problems.extend(exc.lines())
        connection[host.name] = {k: _plain(v) for k, v in hv.items() if k in ("ansible_host", "ansible_user", "ansible_connection", "ansible_port")}
    if problems:
        raise SettingsError(problems[0], details=problems[1:])
    return LoadedInventory(source=opened.path, target=target, hosts=settings, connection=connection)
