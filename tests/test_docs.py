"""The README stays true: every variable documented, quick start shaped as promised, CI runs it."""

from __future__ import annotations

import re

from provisioner.settings import KNOWN_VARIABLES
from tests.conftest import ROOT

README = (ROOT / "README.md").read_text()


def test_every_variable_is_in_the_inventory_reference():
    documented = set(re.findall(r"^\| `([a-z0-9_]+)` \|", README, re.MULTILINE))
    assert documented == set(KNOWN_VARIABLES)


def test_quick_start_is_exactly_two_commands_and_ci_runs_the_second():
    block = README.split("## Quick start", 1)[1].split("```sh\n", 1)[1].split("```", 1)[0]
    commands = [line for line in block.splitlines() if line.strip()]
    assert len(commands) == 2
    ci = (ROOT / ".ci/run").read_text()
    assert commands[1] in ci
