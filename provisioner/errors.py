"""Exceptions the library raises; the CLI turns each into one line and an exit code.

Exit codes follow the documented contract: 2 for bad input (nothing was touched),
3 when a step could not reach a verdict, 4 for a failed change on a host,
6 when preflight refuses a host (nothing was touched).
"""

from __future__ import annotations


class ProvisionError(Exception):
    """Base class: a message for a person and the exit code the CLI should use."""

    exit_code = 1

    def __init__(self, message: str, *, details: list[str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        # Extra lines (one per further problem) shown after the first.
        self.details = details or []
        # The flow's result so far (flow.FlowResult), when a step of the flow raised it.
        self.result = None

    def lines(self) -> list[str]:
        return [self.message, *self.details]


class InputError(ProvisionError):
    """Bad user input: inventory, settings, options. Nothing on any host changed."""

    exit_code = 2


class InventoryError(InputError):
    """The inventory cannot be read (missing path, broken YAML, no hosts for a target)."""


class SettingsError(InputError):
    """A variable of a host has a value that is not allowed."""


class RenderError(ProvisionError):
    """A template could not be rendered (a bug or a missing fact), or its output is unsafe."""

    exit_code = 2


class NotBuiltYet(ProvisionError):
    """A step of the flow is not available for this target in this version."""

    exit_code = 5


class ApplyError(ProvisionError):
    """Ansible ran and failed; the message names the task, the host and the change state.

    ``failures`` holds every failed task (host, task, message); ``run`` the run's result.
    """

    exit_code = 4

    def __init__(self, message: str, *, details: list[str] | None = None) -> None:
        super().__init__(message, details=details)
        self.failures: list = []
        self.run = None


class PreflightError(ProvisionError):
    """A host cannot carry the target as it is (e.g. a driver older than Ollama's minimum).

    Raised after discovery and before any change: nothing on any host was changed.
    """

    exit_code = 6
