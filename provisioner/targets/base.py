"""What a deployment target is: the protocol each module in provisioner/targets/ implements.

A target owns everything that differs between topologies, and nothing outside this
package names a target or branches on one (tests/test_seam.py checks that):

- its own settings concern (flat inventory names, its own checks, derived values);
- the files it renders, when each renders, the render context and the facts they rest on;
- checks on the rendered output and the notes printed after rendering;
- its preflight checks;
- where Ollama runs and how Ansible reaches that place (``place``);
- how the verification evidence is read inside that place (log, environment);
- the fix text for each cause the judge can name;
- what uninstall means for it.

The defaults below are those of a target whose Ollama is a systemd service (the shared
service play); a module overrides only what differs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Mapping

if TYPE_CHECKING:
    from pydantic import BaseModel

    from ..facts import HostFacts
    from ..preflight import HostPreflight
    from ..settings import HostSettings


@dataclass(frozen=True)
class FileSpec:
    """One rendered file: its template, where it lands, who reads it.

    ``scope`` is ``host`` for the machine in the inventory and ``guest`` for the
    container or VM it carries. ``method`` says how the apply step uses it:
    ``copy`` (installed as is), ``merge`` (merged into an existing JSON file),
    ``append`` (lines added to a file the target owns), ``api`` (sent to an API, never
    written on the host as is), ``define`` (handed to libvirt), ``seed`` (packed into the
    cloud-init seed image).
    """

    template: str
    scope: str
    dest: str
    method: str = "copy"
    mode: str = "0644"
    # Where it is written under OUT/<host>/<scope>/; defaults to ``dest`` without its leading /.
    out: str | None = None
    # Only render when this condition of the target (TargetModule.conditions) holds.
    when: str | None = None

    @property
    def out_path(self) -> str:
        return self.out or self.dest.lstrip("/")


UNIT_DEST = "/etc/systemd/system/ollama.service"
DROPIN_DEST = "/etc/systemd/system/ollama.service.d/override.conf"
UNIT_TEMPLATE = "common/ollama.service.j2"
DROPIN_TEMPLATE = "common/override.conf.j2"


def service_files(scope: str) -> tuple[FileSpec, ...]:
    """The systemd unit and drop-in of the shared service play, rendered for ``scope``."""
    return (FileSpec(UNIT_TEMPLATE, scope, UNIT_DEST), FileSpec(DROPIN_TEMPLATE, scope, DROPIN_DEST))


PROXY_CONFIG_DEST = "/etc/ollama-proxy/nginx.conf"
PROXY_UNIT_DEST = "/etc/systemd/system/ollama-proxy.service"
PROXY_CERT = "/etc/ollama-proxy/tls/cert.pem"
# The condition every target has (render.py sets it): ollama_expose_address is set.
EXPOSED = "exposed"


def proxy_files(scope: str) -> tuple[FileSpec, ...]:
    """The TLS and token proxy's config and unit (role ollama_proxy), rendered for ``scope`` when the
    host is exposed. A target adds them beside its service's files, in the scope where its proxy runs;
    the token list is never rendered (the role writes it from the inventory, with no_log)."""
    return (FileSpec("common/ollama-proxy.nginx.conf.j2", scope, PROXY_CONFIG_DEST, when=EXPOSED),
            FileSpec("common/ollama-proxy.service.j2", scope, PROXY_UNIT_DEST, when=EXPOSED))


@dataclass(frozen=True)
class Place:
    """Where Ollama runs for one inventory host, and how Ansible reaches it.

    ``name`` is the place's name in the run's inventory (the host itself for native);
    ``connection`` holds the Ansible connection variables that ``add_host`` gives it
    (empty: the inventory host's own). ``description`` is for people.
    """

    name: str
    description: str
    connection: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "description": self.description, **dict(self.connection)}


class TargetModule:
    """A deployment target. Subclasses set the class attributes and override hooks."""

    name: ClassVar[str]
    description: ClassVar[str]
    # Whether `provision --target T` applies it in this version (else it renders and exits 5);
    # ``applies`` may narrow it per host (a backend not built yet).
    apply_ready: ClassVar[bool] = False
    files: ClassVar[tuple[FileSpec, ...]] = ()
    # Fact topics its files may read (facts.HostFacts.assumptions): only these assumptions are reported.
    facts_used: ClassVar[tuple[str, ...]] = ()
    # The target's own settings concerns (pydantic models with flat inventory names).
    settings_models: ClassVar[tuple[type[BaseModel], ...]] = ()
    # Values derived across concerns (a docker tag from the Ollama version, a Proxmox node from the
    # host's name), read as settings.<name> for hosts of this target.
    derived: ClassVar[Mapping[str, Callable[[HostSettings], Any]]] = {}
    # Ollama runs on a virtual CPU whose flags the target chooses (the judge's AVX rule).
    virtual_cpu: ClassVar[bool] = False
    # Fix text per cause the judge names, where this target's fix differs from the generic one.
    # May use {host_driver} (the host's kernel driver version).
    fixes: ClassVar[Mapping[str, str]] = {}
    # How the verification reads, inside the place, the server's log since "@EPOCH" and its environment.
    log_command: ClassVar[str] = "journalctl -u ollama --no-pager -o cat --since"
    env_command: ClassVar[str] = "systemctl show ollama -p Environment --value"
    # Where in OUT/<host>/ the service play finds the unit and drop-in (the scope of service_files).
    service_scope: ClassVar[str] = "host"
    # Where the exposed proxy's certificate is, read inside the place by the verification (its pin).
    proxy_cert: ClassVar[str] = PROXY_CERT

    @property
    def status(self) -> str:
        """What this version does with the target, for `provision targets`."""
        return "apply ready" if self.apply_ready else "render only"

    @property
    def group(self) -> str:
        """The inventory group whose members carry this target."""
        return self.name

    @property
    def playbook(self) -> str:
        return f"{self.name}.yml"

    # --- settings ---------------------------------------------------------------------------
    def check_settings(self, settings: HostSettings) -> list[str]:
        """Checks across variables that hold for hosts of this target only; one line per problem."""
        return []

    def server_environment(self, settings: HostSettings) -> dict[str, str]:
        """Ollama's environment (OLLAMA_*), the same for the drop-in and a compose file."""
        return settings.ollama.environment(listen=settings.ollama_listen_address,
                                           models_dir=settings.ollama_models_dir)

    # --- render -----------------------------------------------------------------------------
    def context(self, settings: HostSettings, facts: HostFacts) -> dict[str, Any]:
        """Template values of this target beyond the common ones (render.base_context)."""
        return {}

    def conditions(self, settings: HostSettings, facts: HostFacts) -> dict[str, bool]:
        """The named conditions FileSpec.when refers to."""
        return {}

    def check_rendered(self, spec: FileSpec, text: str, where: str) -> None:
        """Refuse rendered output that would be unsafe to apply (raise RenderError)."""

    def render_notes(self, settings: HostSettings, facts: HostFacts, texts: Mapping[str, str]) -> list[str]:
        """Lines printed after rendering a host; ``texts`` maps each rendered template to its text."""
        return []

    def fact_topics(self, settings: HostSettings, facts: HostFacts) -> set[str]:
        """The fact topics this host's files actually rest on."""
        return set(self.facts_used)

    # --- preflight --------------------------------------------------------------------------
    def preflight(self, settings: HostSettings, facts: HostFacts) -> HostPreflight:
        """The known ways a host fails this target, from its facts; the host's NVIDIA driver by default."""
        from ..preflight import check_host_driver

        return check_host_driver(settings, facts)

    # --- apply ------------------------------------------------------------------------------
    def applies(self, settings: HostSettings) -> bool:
        """Whether this host can be applied in this version."""
        return self.apply_ready

    def place(self, settings: HostSettings) -> Place:
        """Where Ollama runs for this host and how it is reached."""
        raise NotImplementedError

    def place_vars(self, settings: HostSettings) -> dict[str, Any]:
        """The place as the playbooks' add_host reads it, with where its service files are rendered."""
        return {**self.place(settings).to_dict(), "service_scope": self.service_scope}

    def evidence_commands(self, settings: HostSettings) -> dict[str, str]:
        """How the verification reads the evidence for this host: ``log_command`` (appended "@EPOCH"),
        ``env_command``, ``exec``, a command prefix that runs a shell inside the place where the
        place is not where Ansible's commands run (empty: they run there), and ``inspect_command``,
        what the place's manager says of it as JSON (``docker inspect``; empty: nothing to ask)."""
        return {"log_command": self.log_command, "env_command": self.env_command, "exec": "",
                "inspect_command": ""}

    def pci_addresses(self, settings: HostSettings) -> list[str]:
        """The PCI functions this host's files name (their ids are read from the facts)."""
        return []

    def host_vars(self, settings: HostSettings, checked: HostPreflight | None) -> dict[str, Any]:
        """Role variables (by the roles' own names) for the play on the inventory host, read from
        OUT/<host>/host-vars.json; ``checked`` is preflight's result for the host (None: it did not run)."""
        return {"nvidia_host_install": bool(checked and checked.install_driver), **settings.driver.role_vars()}

    def service_vars(self, settings: HostSettings) -> dict[str, Any]:
        """Role variables of the shared service play at the place, read from OUT/<host>/service-vars.json.

        The unit and drop-in it installs are the files rendered under OUT/<host>/<service_scope>/, and
        so are the proxy's (role ollama_proxy) when the host is exposed.
        """
        return {**settings.ollama.role_vars(), **self.proxy_vars(settings)}

    def proxy_vars(self, settings: HostSettings) -> dict[str, Any]:
        """The ollama_proxy role's variables where the host is exposed (none otherwise: the role's default
        removes a proxy left from an earlier exposure). The proxy runs next to the service and reaches
        it at the service's own URL."""
        if not settings.expose.exposed:
            return {}
        return settings.expose.role_vars(settings.host, settings.api_url)

    def proxy_listen(self, settings: HostSettings) -> str | None:
        """The address the proxy listens on where it runs (nginx's ``listen``): the exposed address."""
        return settings.ollama_expose_address

    def expose_url(self, settings: HostSettings, place_address: str | None) -> str | None:
        """Where the controller reaches the proxy: the exposed address itself, or, for a wildcard, the
        address the place reports (its first one, read by the verification). None: not exposed."""
        if not settings.expose.exposed:
            return None
        host = settings.expose_host
        if host in ("0.0.0.0", "[::]", "::", ""):
            host = place_address or settings.address or settings.host
            host = f"[{host}]" if ":" in host else host
        return f"https://{host}:{settings.expose_port}"

    def extravars(self, settings: list[HostSettings]) -> dict[str, Any]:
        """Extra Ansible variables of this target's playbook for these hosts."""
        return {}

    # --- uninstall --------------------------------------------------------------------------
    def uninstall_vars(self, purge: bool, destroy: bool = False, revert_host: bool = False) -> dict[str, Any]:
        """Extra variables (by role names) that make the target's playbook remove Ollama; ``destroy``
        also removes the container or VM it runs in, where there is one; ``revert_host`` also reverts
        what the target prepared on the host itself. A target that prepares nothing there refuses it
        (InputError, before anything runs)."""
        if revert_host:
            from ..errors import InputError

            raise InputError(f"--revert-host reverts a host's VFIO preparation, which only --target kvm makes; "
                             f"target {self.name} prepares none: leave --revert-host out (nothing was changed)")
        return {"ollama_service_state": "absent", "ollama_service_purge": purge}

    def uninstall_kept(self, purge: bool, destroy: bool = False, revert_host: bool = False) -> str:
        """What an uninstall keeps, for the report."""
        if purge:
            return "models, the ollama user and their data were removed too"
        return "the models directory and the ollama user were kept (--purge removes them)"

    def not_built(self, what: str, rendered: str | None = None, settings: HostSettings | None = None) -> str:
        """The one line saying that a step is not built for this target (or this host of it) yet."""
        if rendered:
            return (f"applying target {self.name} is not built in this version; the files are rendered in "
                    f"{rendered} for review (nothing on any host was changed)")
        return f"{what} target {self.name} is not built in this version (nothing was changed)"
