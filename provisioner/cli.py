"""The `provision` command line: an adapter that parses options, calls the library, prints, exits.

Options shared by several commands are declared once (``Annotated`` aliases below);
choices come from the library's enums. A library error (``ProvisionError``) is caught
in one place, ``_Group.invoke``: one red line (more only when there are more problems),
the documented result on stdout for ``--json``, and the error's exit code. A user's
mistake never shows a traceback. Progress goes to stderr; reports and JSON to stdout.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from typer.core import TyperGroup

from . import __version__
from .errors import InputError, ProvisionError
from .targets import Target

HELP = """\
Install the Ollama LLM server on GPU machines and prove that models run on the GPU.

Four deployment targets, each the members of the inventory group named after it:
native (systemd service), docker (container + NVIDIA runtime), lxc (Proxmox VE or
plain LXC with the GPU nodes passed in) and kvm (libvirt VM with VFIO passthrough).

\b
Examples:
  provision render --target lxc -i inventories/example   # every file, nothing changed
  provision --target native -i inventories/homelab        # the whole flow
  provision --target native -i inventories/homelab --check --diff   # dry run
  provision --target native -i inventories/homelab --json  # one JSON document on stdout
  provision verify --target native -i inventories/homelab  # where do models run?
  provision uninstall --target native -i inventories/homelab   # models are kept
  provision preflight --target kvm -i inventories/homelab  # the checks alone, read-only
"""

VERDICTS = ("gpu", "split", "cpu", "unknown")
KV_CACHE_TYPES = ("f16", "q8_0", "q4_0")


class _Group(TyperGroup):
    """The one place where library errors become a red line, the --json result and an exit code."""

    def invoke(self, ctx: typer.Context) -> Any:
        try:
            return super().invoke(ctx)
        except ProvisionError as exc:
            result = getattr(exc, "result", None)
            if ctx.meta.get("provision.json") and result is not None:
                typer.echo(json.dumps(result.to_dict(), indent=2))
            for i, line in enumerate(exc.lines()):
                typer.secho(("error: " if i == 0 else "       ") + line, fg=typer.colors.RED, err=True)
            raise typer.Exit(exc.exit_code) from None


app = typer.Typer(
    cls=_Group,
    help=HELP,
    no_args_is_help=False,
    add_completion=True,
    context_settings={"help_option_names": ["-h", "--help"]},
    rich_markup_mode=None,
    pretty_exceptions_enable=False,
)

INVENTORY_HELP = "Ansible inventory: a hosts.yml file or a directory with hosts.yml, group_vars/, host_vars/."

MaybeTarget = Annotated[Optional[Target], typer.Option("--target", "-t", help=f"Deployment target: {', '.join(t.value for t in Target)}.")]
InventoryOpt = Annotated[Path, typer.Option("--inventory", "-i", help=INVENTORY_HELP)]
MaybeInventory = Annotated[Optional[Path], typer.Option("--inventory", "-i", help=INVENTORY_HELP)]
LimitOpt = Annotated[Optional[str], typer.Option("--limit", "-l", help="Only these hosts or groups, as Ansible's --limit (e.g. gpu1 or 'gpu*').")]
FactsOpt = Annotated[Optional[Path], typer.Option("--facts", help="Directory of discovered facts (<host>.json) to use instead of discovering.")]
OutOpt = Annotated[Path, typer.Option("--out", "-o", help="Where the rendered files are kept: OUT/<target>/<host>/...")]
CheckOpt = Annotated[bool, typer.Option("--check", help="Dry run: report what would change, change nothing.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON document on stdout (progress goes to stderr).")]
VerboseOpt = Annotated[bool, typer.Option("--verbose", "-v", help="Print every Ansible task, not only those that changed or failed.")]

STATE = Path(".provision")


def _json_mode(ctx: typer.Context, as_json: bool) -> None:
    """Tell the error handler that this command's result is printed as JSON."""
    ctx.meta["provision.json"] = as_json


def _display(ctx: typer.Context, *, quiet: bool = False, diff: bool = False, verbose: bool = False):
    """Progress on stderr: every task with -v (here or before the subcommand), else changes and failures."""
    from .progress import Display, Quiet

    verbose = verbose or bool(ctx.meta.get("provision.verbose"))
    return Quiet() if quiet else Display(sys.stderr, verbose=verbose, diff=diff)


def _echo_json(data: object) -> None:
    typer.echo(json.dumps(data, indent=2))


def _print_renders(results: list, out: Path, as_json: bool) -> None:
    if as_json:
        _echo_json({
            "out": str(out),
            "hosts": [
                {
                    "host": r.host,
                    "target": r.target.value,
                    "directory": str(r.directory),
                    "facts": r.facts_source,
                    "files": [{"path": str(f.path), "dest": f.dest, "method": f.method} for f in r.files],
                    "assumptions": r.assumptions,
                    "notes": r.notes,
                }
                for r in results
            ],
        })
        return
    for r in results:
        typer.secho(f"{r.target.value} {r.host}: {len(r.files)} files in {r.directory}", bold=True)
        for f in r.files:
            rel = f.path.relative_to(r.directory)
            typer.echo(f"  {str(rel):58} -> {f.dest} ({f.method})")
        for note in r.notes:
            typer.echo(f"  note: {note}")
        if r.assumptions:
            typer.secho("  assumed (no facts discovered for this host yet):", fg=typer.colors.YELLOW)
            for a in r.assumptions:
                typer.secho(f"    - {a}", fg=typer.colors.YELLOW)
    if any(r.assumptions for r in results):
        typer.echo("Read the files before applying anything. To replace the assumptions with each host's real facts:\n"
                   "  provision discover -t TARGET -i INVENTORY, then render again with --facts .provision/facts")


@app.command()
def render(
    inventory: InventoryOpt,
    target: Annotated[Optional[Target], typer.Option("--target", "-t", help="Target to render; all targets with hosts if omitted.")] = None,
    limit: LimitOpt = None,
    out: Annotated[Path, typer.Option("--out", "-o", help="Directory to write into: OUT/<target>/<host>/...")] = Path("rendered"),
    facts: Annotated[Optional[Path], typer.Option("--facts", help="Directory of discovered facts (<host>.json); documented assumptions otherwise.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Write every configuration file per host, changing nothing on any host.

    Works offline, before any host is reachable: facts the files need (device
    majors, driver version, PCI ids, CPU vendor) are taken from --facts when
    discovered, else from documented assumptions, each one printed.

    \b
    Example:
      provision render --target kvm -i inventories/example --out /tmp/r
    """
    from . import inventory as inv
    from .render import render as render_hosts

    results = []
    for loaded in inv.load_many(inventory, [target] if target else None, limit):
        results.extend(render_hosts(loaded.hosts, out / loaded.target.value, facts))
    _print_renders(results, out, as_json)


def _print_verdicts(verdicts: list, as_json: bool) -> None:
    if as_json:
        docs = [v.to_dict() for v in verdicts]
        _echo_json(docs[0] if len(docs) == 1 else {"hosts": docs})
        return
    rows = [("HOST", "MODEL", "PROCESSOR", "TOK/S", "EFFICIENCY", "RESULT")]
    for v in verdicts:
        result = "pass" if v.exit_code == 0 else ("no verdict" if v.verdict == "error" else "fail")
        if v.exit_code == 0 and v.expected and v.verdict != "gpu":
            result += f" (expected {v.expected})"
        speed = f"{v.tokens_per_second:.1f}" if v.tokens_per_second is not None else "-"
        eff = f"{v.efficiency_percent:.0f}%" if v.efficiency_percent is not None else "-"
        for m in v.models or [None]:
            rows.append((v.host, m.name if m else "-", m.processor_text if m else v.verdict, speed, eff, result))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        typer.echo("  ".join(cell.ljust(w) for cell, w in zip(r, widths)).rstrip())
    for v in verdicts:
        color = typer.colors.GREEN if v.exit_code == 0 else (typer.colors.RED if v.verdict in ("cpu", "error") else typer.colors.YELLOW)
        typer.secho(f"{v.host}: {v.summary}", fg=color, bold=True)
        if v.tokens_per_second is not None:
            speed = f"  speed: {v.tokens_per_second:.1f} tokens/s"
            if v.efficiency_percent is not None:
                speed += f" = {v.efficiency_percent:.0f}% of the {v.bound_tokens_per_second:.0f} tokens/s bound of {v.gpu}"
            typer.echo(speed)
        for m in v.models:
            if m.predicted:
                typer.echo(f"  {m.name}: predicted {m.predicted} before loading, measured {m.processor_text}")
        for c in v.causes:
            typer.echo(f"  cause: {c.cause}")
            typer.echo(f"    fix: {c.fix}")
        if v.expected and v.exit_code == 0 and v.verdict != "gpu":
            typer.echo(f"  {v.verdict} is the expected result here (expected: {v.expected}), so this passes")


@app.command()
def verify(
    ctx: typer.Context,
    url: Annotated[Optional[str], typer.Option("--url", help="Check any reachable Ollama server over its HTTP API, e.g. http://127.0.0.1:11434.")] = None,
    model: Annotated[Optional[str], typer.Option("--model", "-m", help="Model to load and time (must be on the server).")] = None,
    target: Annotated[Optional[Target], typer.Option("--target", "-t", help="Gather evidence where the hosts of this target run Ollama (with -i).")] = None,
    inventory: MaybeInventory = None,
    limit: LimitOpt = None,
    expect: Annotated[Optional[str], typer.Option("--expect", help=f"Verdict that counts as a pass besides gpu: {', '.join(VERDICTS)}; e.g. cpu on a machine without a GPU.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON document: verdict, models, tokens_per_second, causes.")] = False,
    verbose: VerboseOpt = False,
    token_env: Annotated[Optional[str], typer.Option("--token-env", help="With --url behind the proxy: the environment variable holding the bearer token (never on the command line).")] = None,
    ca: Annotated[Optional[Path], typer.Option("--ca", help="With an https --url: the CA certificate (PEM) that signed the proxy's certificate.")] = None,
    fingerprint: Annotated[Optional[str], typer.Option("--fingerprint", help="With an https --url: the SHA-256 fingerprint the proxy's certificate must have (self-signed).")] = None,
) -> None:
    """Prove where a model runs: 100% GPU, split CPU/GPU or 100% CPU, with cause and fix.

    Loads the model, times a 64-token generation with a fixed seed, reads /api/ps
    and judges it with Ollama's own algorithm (size_vram == size is 100% GPU).

    \b
    Exit codes: 0 gpu (or the --expect verdict), 1 split, cpu or unknown,
                2 bad usage, 3 no verdict (server unreachable, model missing).
    \b
    Examples:
      provision verify --target native -i inventories/homelab      # every host, through Ansible
      provision verify --url http://127.0.0.1:11434 --model llama3.2:3b
      provision verify --url http://gpu1:11434 -m qwen3:8b --json
      provision verify --url http://127.0.0.1:11434 -m smollm2 --expect cpu   # no GPU here
      OLLAMA_TOKEN=… provision verify --url https://gpu1:8443 --token-env OLLAMA_TOKEN --fingerprint AB:CD:… -m qwen3:8b
    """
    if expect is not None and expect not in VERDICTS:
        raise InputError(f"--expect {expect!r} is not a verdict; use {', '.join(VERDICTS)}")
    if url is None:
        if target is None or inventory is None:
            raise InputError("give --url URL --model M, or --target T -i INVENTORY")
        from . import inventory as inv
        from .flow import verify_target
        from .runner import AnsibleRunner
        from .workspace import Workspace

        hosts = inv.load(inventory, target, limit).hosts
        workspace = Workspace(STATE)
        runner = AnsibleRunner(workspace, inventory, _display(ctx, quiet=as_json, verbose=verbose))
        exposures: dict = {}  # each exposed host's check through its proxy (shown as it runs)
        verdicts = verify_target(hosts, workspace, runner, limit=limit, model=model,
                                 expect={s.host: expect for s in hosts if expect}, exposures=exposures)
        _print_verdicts(verdicts, as_json)
        raise typer.Exit(max([v.exit_code for v in verdicts] + [e.exit_code for e in exposures.values()]))
    if not model:
        raise InputError("--model is required with --url (a model that is on that server)")
    from .judge import judge
    from .verify import gather_http

    token = None
    if token_env is not None:
        import os

        token = os.environ.get(token_env)
        if not token:
            raise InputError(f"--token-env {token_env}: the environment variable {token_env} is not set or empty")
    if ca is not None and fingerprint is not None:
        raise InputError("give --ca or --fingerprint, not both")
    verdict = judge(gather_http(url, model, token=token, ca=str(ca) if ca else None, fingerprint=fingerprint),
                    expect=expect)
    _print_verdicts([verdict], as_json)
    raise typer.Exit(verdict.exit_code)


@app.command()
def plan(
    ctx: typer.Context,
    vram: Annotated[Optional[float], typer.Option("--vram", help="GPU memory in GiB, e.g. 24 for an RTX 4090.")] = None,
    context: Annotated[int, typer.Option("--context", help="Context length (OLLAMA_CONTEXT_LENGTH).")] = 4096,
    parallel: Annotated[int, typer.Option("--parallel", help="Parallel requests (OLLAMA_NUM_PARALLEL).")] = 1,
    kv_cache: Annotated[str, typer.Option("--kv-cache", help=f"KV cache type: {', '.join(KV_CACHE_TYPES)}.")] = "f16",
    target: Annotated[Optional[Target], typer.Option("--target", "-t", help="Plan for the GPUs of these hosts (with -i).")] = None,
    inventory: MaybeInventory = None,
    facts: Annotated[Optional[Path], typer.Option("--facts", help="Discovered facts to read (<host>.json) instead of discovering.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON document.")] = False,
) -> None:
    """Which model sizes, quantisations and contexts fit 100% on a GPU, before downloading any.

    Memory = weights (parameters x bits per weight) + KV cache (2 x layers x KV heads x
    head size x context x parallel) + a compute allowance. An estimate; `provision
    verify` measures what really happens.

    \b
    Examples:
      provision plan --vram 24
      provision plan --vram 12 --context 32768 --kv-cache q8_0
      provision plan -t native -i inventories/homelab     # each host's discovered GPU
    """
    from dataclasses import asdict

    from .fit import GIB
    from .fit import plan as make_plan

    if context < 256 or parallel < 1 or (vram is not None and vram <= 0):
        raise InputError("--vram must be > 0, --context >= 256 and --parallel >= 1")
    if kv_cache not in KV_CACHE_TYPES:
        raise InputError(f"--kv-cache {kv_cache!r} is not allowed; use {', '.join(KV_CACHE_TYPES)}")
    if vram is not None:
        gpus = {"--vram": vram}
    elif target is not None and inventory is not None:
        from .flow import discovered_vram
        from .workspace import Workspace

        workspace = Workspace.beside(facts) if facts is not None else Workspace(STATE)
        gpus = discovered_vram(target, inventory, workspace, facts_given=facts is not None,
                               display=_display(ctx, quiet=as_json))
    else:
        raise InputError("give --vram GiB (the GPU's memory), e.g. provision plan --vram 24, or -t TARGET -i INVENTORY")
    plans = {where: make_plan(gib, context, parallel, kv_cache) if gib else [] for where, gib in gpus.items()}
    if as_json:
        docs = [{**({} if vram is not None else {"host": where}), "vram_gib": gpus[where], "context": context, "parallel": parallel,
                 "kv_cache_type": kv_cache, "fits": [{**asdict(f), "text": f.text} for f in fits]}
                for where, fits in plans.items()]
        _echo_json(docs[0] if vram is not None else {"hosts": docs})
        return
    for where, fits in plans.items():
        label = "" if vram is not None else f"{where}: "
        if not fits:
            typer.echo(f"{label}no NVIDIA GPU found (nvidia-smi reported none): models run on the CPU")
            continue
        typer.echo(f"{label}{gpus[where]:g} GiB GPU, context {context} x {parallel} parallel, KV cache {kv_cache}:")
        typer.echo(f"  {'model':14} {'quant':7} {'weights':>8} {'KV cache':>9} {'total':>8}  fit")
        for f in fits:
            color = {"gpu": typer.colors.GREEN, "split": typer.colors.YELLOW}.get(f.processor, typer.colors.RED)
            typer.echo(f"  {f.model:14} {f.quantization:7} {f.weights_bytes / GIB:7.1f}G {f.kv_bytes / GIB:8.1f}G "
                       f"{f.total_bytes / GIB:7.1f}G  " + typer.style(f.text, fg=color))


@app.command()
def discover(
    ctx: typer.Context,
    target: Annotated[Target, typer.Option("--target", "-t", help="Discover the hosts of this target.")],
    inventory: InventoryOpt,
    limit: LimitOpt = None,
    facts_dir: Annotated[Path, typer.Option("--facts", help="Where <host>.json is written.")] = STATE / "facts",
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON document.")] = False,
    verbose: VerboseOpt = False,
) -> None:
    """Read each host's GPU, driver, device-major, cgroup and CPU facts (changes nothing).

    The facts feed `provision render --facts DIR`, replacing the documented assumptions.

    \b
    Example:
      provision discover -t lxc -i inventories/homelab && provision render -t lxc -i inventories/homelab --facts .provision/facts
    """
    from . import inventory as inv
    from .discover import discover as run_discover
    from .runner import AnsibleRunner
    from .workspace import Workspace

    hosts = inv.load(inventory, target, limit).hosts  # bad input stops here, before any connection
    workspace = Workspace.beside(facts_dir)
    runner = AnsibleRunner(workspace, inventory, _display(ctx, quiet=as_json, verbose=verbose))
    found = run_discover(workspace, runner, hosts, limit=limit)
    if as_json:
        _echo_json({host: f.model_dump(mode="json", exclude={"assumptions"}) for host, f in found.items()})
        return
    for host, f in found.items():
        gpus = [d.address for d in f.pci_devices]
        typer.echo(f"{host}: {len(f.nvidia_device_nodes)} NVIDIA device nodes, driver {f.nvidia_driver_version or 'none'}, "
                   f"NVIDIA PCI functions {', '.join(gpus) or 'none'}, CPU {f.cpu_vendor}, cgroup v{f.cgroup_version} "
                   f"-> {facts_dir / (host + '.json')}")


@app.command()
def preflight(
    ctx: typer.Context,
    target: Annotated[Target, typer.Option("--target", "-t", help="Check the hosts of this target.")],
    inventory: InventoryOpt,
    limit: LimitOpt = None,
    facts: Annotated[Optional[Path], typer.Option("--facts", help="Check the facts recorded in this directory (<host>.json) without reaching the hosts.")] = None,
    as_json: JsonOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """Check the hosts against the target's known ways to fail, changing nothing.

    The checks the whole flow runs before any change, alone: the NVIDIA driver
    against Ollama's minimum; for kvm the VFIO host (IOMMU on, each listed address
    an NVIDIA function, the card alone in its IOMMU group, not the boot display,
    every function of the card listed). Hosts are discovered first (read-only),
    or their recorded facts are read with --facts. Each refusal is one line naming
    the host, what was found and the fix.

    \b
    Exit codes: 0 every host passes, 2 bad input, 6 a host is refused.
    \b
    Examples:
      provision preflight -t kvm -i inventories/homelab
      provision preflight -t kvm -i inventories/homelab --facts .provision/facts   # recorded facts, offline
      provision preflight -t native -i inventories/homelab --json
    """
    from .preflight import run_preflight
    from .workspace import Workspace

    _json_mode(ctx, as_json)
    result = run_preflight(target=target, inventory=inventory, limit=limit,
                           workspace=Workspace(STATE, facts_dir=facts), facts_given=facts is not None,
                           display=_display(ctx, quiet=as_json, verbose=verbose))
    if as_json:
        _echo_json(result.to_dict())
        return
    for host in result.hosts:
        for line in host.preflight:
            typer.echo(line)
        typer.secho(f"{host.host}: passes the {target} preflight (nothing was changed)", fg=typer.colors.GREEN)


@app.command("targets")
def list_targets() -> None:
    """List the deployment targets, their inventory groups and playbooks."""
    from .targets import MODULES

    for t in MODULES.values():
        typer.echo(f"{t.name:7} {'group ' + repr(t.group) + ',':16} playbooks/{t.playbook:11} {t.description}")
        typer.echo(f"{'':7} {t.status}")


def _version(value: bool) -> None:
    if value:
        typer.echo(f"provision {__version__}")
        raise typer.Exit()


# The options of the whole flow, and where each goes when given before a subcommand by mistake.
_FLOW_OPTIONS = {"target": "-t/--target", "inventory": "-i/--inventory", "limit": "-l/--limit", "out": "-o/--out",
                 "check": "--check", "diff": "--diff", "facts": "--facts", "as_json": "--json"}


@app.callback(invoke_without_command=True)
def main_flow(
    ctx: typer.Context,
    target: MaybeTarget = None,
    inventory: MaybeInventory = None,
    limit: LimitOpt = None,
    out: OutOpt = STATE / "rendered",
    check: CheckOpt = False,
    diff: Annotated[bool, typer.Option("--diff", help="Show the changes to each file.")] = False,
    facts: FactsOpt = None,
    as_json: JsonOpt = False,
    verbose: VerboseOpt = False,
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")] = False,
) -> None:
    """Run the whole flow for a target: validate, discover, preflight, render, apply, verify.

    \b
    With --json, stdout is one document: command, target, check, steps (in order),
    exit_code, error, run_dirs and hosts[] (host, target, validated, preflight,
    files, changes, place, answers_at, verdict, errors[] of host/task/message).
    """
    ctx.meta["provision.verbose"] = verbose
    if ctx.invoked_subcommand is not None:
        given = [flag for name, flag in _FLOW_OPTIONS.items()
                 if getattr(ctx.get_parameter_source(name), "name", None) == "COMMANDLINE"]
        if given:
            raise InputError(f"{', '.join(given)} before '{ctx.invoked_subcommand}' would be ignored: put "
                             f"{'it' if len(given) == 1 else 'them'} after the subcommand, e.g. "
                             f"provision {ctx.invoked_subcommand} -t native -i INVENTORY")
        return
    if target is None or inventory is None:
        typer.echo(ctx.get_help())
        missing = "--target" if target is None else "-i/--inventory"
        typer.secho(f"error: {missing} is required, e.g. provision --target native -i inventories/example",
                    fg=typer.colors.RED, err=True)
        raise typer.Exit(2)
    from .flow import run_flow
    from .workspace import Workspace

    _json_mode(ctx, as_json)
    workspace = Workspace(STATE, out=out, facts_dir=facts)
    result = run_flow(target=target, inventory=inventory, limit=limit, workspace=workspace, check=check, diff=diff,
                      facts_given=facts is not None, display=_display(ctx, diff=diff, verbose=verbose))
    if as_json:
        _echo_json(result.to_dict())
    elif result.verdicts:
        typer.secho("verification:", bold=True)
        _print_verdicts(result.verdicts, as_json=False)
    raise typer.Exit(result.exit_code)


@app.command()
def uninstall(
    ctx: typer.Context,
    target: Annotated[Target, typer.Option("--target", "-t", help="Remove Ollama from the hosts of this target.")],
    inventory: InventoryOpt,
    limit: LimitOpt = None,
    purge: Annotated[bool, typer.Option("--purge", help="Also delete the models directory, the home and the ollama user.")] = False,
    destroy: Annotated[bool, typer.Option("--destroy", help="Also destroy the container or VM Ollama runs in (lxc), models included.")] = False,
    revert_host: Annotated[bool, typer.Option("--revert-host", help=(
        "kvm only: also revert the host's VFIO preparation: remove the project's VFIO files (those without "
        "its mark are kept and named) and the kernel arguments it added, then update GRUB or the boot "
        "partitions and the initramfs. The GPU returns to the host's drivers at the next boot: a reboot "
        "is needed (made only with kvm_allow_reboot: true)."))] = False,
    check: Annotated[bool, typer.Option("--check", help="Dry run: report what would be removed, remove nothing.")] = False,
    as_json: JsonOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """Remove Ollama where each host runs it; keep the models.

    Without --purge the models directory and the ollama user stay, so a later
    `provision --target T` finds every model again. A container (lxc) is kept
    unless --destroy is given. A kvm host stays prepared for VFIO passthrough
    unless --revert-host is given (a reboot then hands the GPU back to the host).

    \b
    Examples:
      provision uninstall --target native -i inventories/homelab
      provision uninstall --target native -i inventories/homelab --purge   # models too
      provision uninstall --target lxc -i inventories/homelab --destroy    # the container too
      provision uninstall --target kvm -i inventories/homelab --destroy --revert-host   # VM and host prep too
    """
    from .flow import run_uninstall
    from .workspace import Workspace

    _json_mode(ctx, as_json)
    result = run_uninstall(target=target, inventory=inventory, limit=limit, workspace=Workspace(STATE), purge=purge,
                           destroy=destroy, revert_host=revert_host, check=check,
                           display=_display(ctx, verbose=verbose))
    if as_json:
        _echo_json(result.to_dict())


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        typer.secho("interrupted", fg=typer.colors.RED, err=True)
        sys.exit(130)


if __name__ == "__main__":
    main()
