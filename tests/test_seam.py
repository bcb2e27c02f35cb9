"""The target seam: a target lives in its module under provisioner/targets/, and nowhere else.

Outside that package no code names a particular target (a string literal "lxc", an
attribute Target.kvm, an import of provisioner.targets.docker) or branches on one. Every
module implements the protocol and what it declares exists (templates, playbook).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from provisioner import resources
from provisioner.settings import KNOWN_VARIABLES, build_settings
from provisioner.targets import MODULES, Target, TargetModule, get
from tests.conftest import ROOT

PACKAGE = ROOT / "provisioner"
NAMES = {t.value for t in Target}
OUTSIDE = sorted(p for p in PACKAGE.rglob("*.py") if "targets" not in p.relative_to(PACKAGE).parts)


def _violations(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found = []
    for node in ast.walk(tree):
        where = f"{path.name}:{getattr(node, 'lineno', '?')}"
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in NAMES:
            found.append(f"{where}: the literal {node.value!r}")
        elif isinstance(node, ast.Attribute) and node.attr in NAMES and \
                isinstance(node.value, ast.Name) and node.value.id == "Target":
            found.append(f"{where}: Target.{node.attr}")
        elif isinstance(node, ast.ImportFrom) and node.module and \
                any(node.module.endswith(f"targets.{name}") for name in NAMES):
            found.append(f"{where}: import from {node.module}")
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.endswith("targets") and \
                any(alias.name in NAMES for alias in node.names):
            found.append(f"{where}: import of a target module from {node.module}")
    return found


def test_the_rule_finds_what_it_forbids(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text('from .targets import Target, lxc\nfrom .targets.kvm import KvmSettings\n'
                   'def f(s):\n    if s.target is Target.docker or s.target.value == "native":\n        return 1\n')
    found = _violations(bad)
    assert [f.split(": ", 1)[1] for f in found] == [
        "import of a target module from targets", "import from targets.kvm", "Target.docker", "the literal 'native'",
    ], found


@pytest.mark.parametrize("path", OUTSIDE, ids=[str(p.relative_to(PACKAGE)) for p in OUTSIDE])
def test_no_code_outside_the_targets_package_names_a_target(path):
    assert _violations(path) == []


@pytest.mark.parametrize("target", list(Target))
def test_each_target_module_implements_the_protocol(target):
    module = get(target)
    assert isinstance(module, TargetModule) and module.name == target.value
    assert module.files, "a target renders files"
    for spec in module.files:
        assert (resources.templates_dir() / spec.template).is_file(), spec.template
    if module.apply_ready:
        assert resources.playbook(module.playbook).is_file()


def test_fix_texts_name_rules_the_judge_knows():
    from provisioner.judge import RULES

    known = {name for name, _ in RULES} | {"docker-no-nvidia-runtime"}
    for module in MODULES.values():
        assert set(module.fixes) <= known, (module.name, set(module.fixes) - known)


def test_every_concern_of_every_target_is_an_inventory_variable():
    for module in MODULES.values():
        for model in module.settings_models:
            assert set(model.model_fields) <= KNOWN_VARIABLES


def test_a_target_s_cross_checks_apply_to_its_hosts_only():
    # The kvm rule "kvm_initrd without kvm_kernel" is the kvm module's: a native host is not asked.
    native = build_settings("h", Target.native, {"kvm_initrd": "/boot/initrd.img"})
    assert native.kvm_gpu_pci_addresses == []
    assert get(Target.kvm).check_settings(native)


def test_each_place_says_where_ollama_runs():
    settings = {
        Target.native: {},
        Target.docker: {},
        Target.lxc: {"lxc_vmid": 120},
        Target.kvm: {"kvm_gpu_pci_addresses": ["0000:01:00.0"]},
    }
    places = {t: get(t).place(build_settings("gpu1", t, v)) for t, v in settings.items()}
    assert places[Target.native].name == "gpu1" and not places[Target.native].connection
    # docker: Ansible works on the host itself; what runs inside the container goes through `docker exec`.
    assert places[Target.docker].name == "gpu1" and not places[Target.docker].connection
    assert places[Target.docker].description == "container ollama on gpu1"
    assert get(Target.docker).evidence_commands(build_settings("gpu1", Target.docker, {}))["exec"] == \
        "docker exec -i ollama"
    assert get(Target.native).evidence_commands(build_settings("gpu1", Target.native, {}))["exec"] == ""
    assert len({p.name for p in places.values()}) == 3
    for target in (Target.lxc, Target.kvm):
        assert places[target].name.startswith("gpu1/") and places[target].connection
