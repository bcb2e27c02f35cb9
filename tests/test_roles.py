"""Every role declares its public variables twice, the same: defaults/main.yml and meta/argument_specs.yml."""

from __future__ import annotations

import pytest
import yaml

from tests.conftest import ROOT

ROLES = sorted(p for p in (ROOT / "roles").iterdir() if (p / "tasks/main.yml").exists())


@pytest.mark.parametrize("role", ROLES, ids=[r.name for r in ROLES])
def test_defaults_and_argument_specs_declare_the_same_variables(role):
    defaults = yaml.safe_load((role / "defaults/main.yml").read_text()) or {}
    specs = yaml.safe_load((role / "meta/argument_specs.yml").read_text())
    options = specs["argument_specs"]["main"].get("options") or {}
    assert set(defaults) == set(options)


@pytest.mark.parametrize("role", ROLES, ids=[r.name for r in ROLES])
def test_public_variables_start_with_the_role_name(role):
    defaults = yaml.safe_load((role / "defaults/main.yml").read_text()) or {}
    assert all(name.startswith(role.name + "_") for name in defaults), sorted(defaults)


def test_there_is_a_role():
    assert ROLES
