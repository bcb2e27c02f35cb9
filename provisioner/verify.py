"""Gather verification evidence: from any reachable Ollama server over its HTTP API, or
inside the place where each host's Ollama runs through the verification role.

`provision verify --url URL --model M` needs no Ansible and no inventory: it reads
/api/version, preloads the model, times a short fixed-seed generation, reads /api/ps,
and hands the evidence to the judge. When the server runs on this very machine (a
loopback URL), the machine's own GPU evidence is added: device nodes, nvidia-smi, the
kernel driver version and the CPU flags. A server behind the TLS and token proxy
(ollama_expose_address) is reached with `--token-env VAR` and `--ca FILE` or `--fingerprint SHA256`.

The exposure check (``check_exposure``) goes through that proxy from the controller, pinned to the
certificate read on the target: no token 401, a wrong token 401, each right token 200 and the
model answering one of them. A token is never printed, logged or written.
"""

from __future__ import annotations

import json
import re
import secrets
import time
import warnings
from dataclasses import asdict, dataclass, field
from typing import Any
from urllib.parse import urlparse

from .errors import InputError
from .evidence import Evidence, from_role, local_gpu
from .runner import Runner, host_limit, playbook_vars
from .workspace import Workspace

PROMPT = "Explain in one paragraph why the sky is blue."
GENERATE_OPTIONS = {"seed": 42, "num_predict": 64}


def _is_loopback(url: str) -> bool:
    host = urlparse(url).hostname or ""
    return host in ("localhost", "::1") or host.startswith("127.")


def fingerprint_hex(text: str) -> str:
    """A SHA-256 fingerprint as 64 lower-case hex digits (accepts AB:CD:…, abcd…, sha256:…)."""
    hexed = re.sub(r"[^0-9a-fA-F]", "", text.strip().removeprefix("sha256:").removeprefix("SHA256:")).lower()
    if len(hexed) != 64:
        raise InputError(f"--fingerprint {text!r} is not a SHA-256 fingerprint (64 hex digits, colons allowed)")
    return hexed


def fingerprint_text(hexed: str) -> str:
    """AB:CD:… as openssl prints it."""
    return ":".join(hexed[i:i + 2] for i in range(0, len(hexed), 2)).upper()


def client_session(url: str, *, token: str | None = None, ca: str | None = None, fingerprint: str | None = None):
    """A requests session for ``url``: the bearer token in every request, the TLS certificate checked
    against ``ca`` (with its host name) or pinned to ``fingerprint`` (checked in the handshake, before
    any request, so a token never reaches another certificate)."""
    import requests
    from requests.adapters import HTTPAdapter

    session = requests.Session()
    if token is not None:
        session.headers["Authorization"] = f"Bearer {token}"
    pin = fingerprint_hex(fingerprint) if fingerprint is not None else None
    if pin is None and ca is None:
        return session

    class _Tls(HTTPAdapter):
        # The check is this adapter's, whatever the environment says (REQUESTS_CA_BUNDLE would
        # otherwise replace a session's verify setting).
        def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
            if pin is not None:
                kwargs["assert_fingerprint"] = pin
            super().init_poolmanager(*args, **kwargs)

        def send(self, request: Any, **kwargs: Any):
            kwargs["verify"] = False if pin is not None else ca
            with warnings.catch_warnings():  # pinned: the fingerprint is the check, not a CA
                warnings.simplefilter("ignore")
                return super().send(request, **kwargs)

    session.mount("https://", _Tls())
    return session


def _tls_error(base: str, exc: Exception, fingerprint: str | None) -> str:
    if fingerprint is not None and "fingerprint" in str(exc).lower():
        return f"the certificate at {base} is not the one pinned by --fingerprint (nothing was sent)"
    return f"TLS with {base} failed: {type(exc).__name__}"


def gather_http(url: str, model: str, *, timeout: float = 300.0, token: str | None = None,
                ca: str | None = None, fingerprint: str | None = None) -> Evidence:
    """Evidence from the server at ``url`` for ``model``; ``error`` set when no verdict is possible.

    Behind the proxy: ``token`` (sent as a bearer token), ``ca`` or ``fingerprint`` for its certificate.
    """
    import requests

    if not urlparse(url).scheme or not urlparse(url).hostname:
        raise InputError(f"--url {url!r} is not a URL; use e.g. http://127.0.0.1:11434")
    base = url.rstrip("/")
    found: dict[str, Any] = {"host": urlparse(url).netloc, "target": "url", "url": base, "model": model}
    session = client_session(base, token=token, ca=ca, fingerprint=fingerprint)
    try:
        answer = session.get(f"{base}/api/version", timeout=10)
        if answer.status_code == 401:
            return Evidence(**found, error=f"the proxy at {base} refused the request (401): "
                                           + ("the token is not one of its tokens" if token else
                                              "give the token with --token-env VAR"))
        found["version"] = answer.json().get("version")
    except requests.exceptions.SSLError as exc:
        return Evidence(**found, error=_tls_error(base, exc, fingerprint))
    except (requests.RequestException, ValueError) as exc:
        return Evidence(**found, error=f"server unreachable at {base}: {type(exc).__name__}")
    try:
        preload = session.post(f"{base}/api/generate", json={"model": model}, timeout=timeout)
        if preload.status_code == 404:
            return Evidence(**found, error=f"model {model} is not on the server at {base}; pull it first "
                                           f"(`ollama pull {model}`)")
        preload.raise_for_status()
        gen = session.post(f"{base}/api/generate", timeout=timeout, json={
            "model": model, "prompt": PROMPT, "stream": False, "options": GENERATE_OPTIONS,
        })
        gen.raise_for_status()
        found["generate"] = {k: v for k, v in gen.json().items() if k not in ("response", "context")}
        started = time.perf_counter()
        found["ps"] = session.get(f"{base}/api/ps", timeout=10).json()
        found["timings"] = {"ps_seconds": time.perf_counter() - started}
    except requests.RequestException as exc:
        return Evidence(**found, error=f"the server at {base} failed while loading {model}: {exc}")
    if _is_loopback(base):  # this machine's own devices are the server's
        found.update(local_gpu())
    return Evidence(**found)


def gather_ansible(workspace: Workspace, runner: Runner, hosts: list, plan: dict[str, dict[str, str]], *,
                   limit: str | None, proxies: dict[str, dict[str, Any]] | None = None) -> dict[str, Evidence]:
    """Run playbooks/verify.yml on the hosts in ``plan`` ({host: {model, api_url}}); evidence per host.

    Each host's place (TargetModule.place) is reached the way the target's playbook reaches
    it, and the evidence is read there with the target's log and environment commands. For an
    exposed host the proxy's certificate fingerprint and the place's addresses are read there
    too, into ``proxies`` ({host: {fingerprint, addresses, error}}) when given.
    """
    by_host = {s.host: s for s in hosts}
    evidence_dir = workspace.new_run_dir("evidence")
    per_host = {}
    for host, p in plan.items():
        s = by_host[host]
        per_host[host] = {**p, **s.module.evidence_commands(s)}
        if s.expose.exposed:
            per_host[host]["proxy_cert"] = s.module.proxy_cert
    runner.run("verify.yml", limit=host_limit(hosts, limit), extravars=playbook_vars(
        hosts, provision_verify=per_host, provision_evidence_dir=str(evidence_dir)))
    found = {}
    for host in plan:
        path = evidence_dir / f"{host}.json"
        if path.exists():
            doc = json.loads(path.read_text())
            if proxies is not None and doc.get("proxy"):
                proxies[host] = doc["proxy"]
            ev = from_role(doc, by_host[host].target.value)
            path.with_suffix(".evidence.json").write_text(ev.model_dump_json(indent=2) + "\n")
            found[host] = ev
    runner.display.line(f"evidence: {evidence_dir}")
    return found



# --- the exposure check, from the controller through the proxy -------------------------------


@dataclass
class ExposureCheck:
    """What the proxy of one exposed host answered from the controller; ``ok`` when all was as it must."""

    host: str
    url: str | None
    fingerprint: str | None  # AB:CD:… of the certificate read on the target
    results: list[str] = field(default_factory=list)
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def exit_code(self) -> int:
        return 0 if self.ok else 1

    def lines(self) -> list[str]:
        head = f"{self.host}: exposed at {self.url}" if self.url else f"{self.host}: exposure"
        if self.fingerprint:
            head += f", certificate SHA-256 {self.fingerprint}"
        out = [head]
        out += [f"  {r}" for r in self.results]
        if self.error:
            out.append(f"  exposure check failed: {self.error}")
        return out

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "ok": self.ok}


def check_exposure(host: str, url: str, fingerprint: str, tokens: list[tuple[str, str]], *,
                   model: str | None, health_unauthenticated: bool = False,
                   timeout: float = 300.0) -> ExposureCheck:
    """Through the proxy at ``url``, pinned to ``fingerprint`` (read on the target): without a token
    401, with a wrong token 401, each of ``tokens`` ([(name, token)]) 200, and ``model`` answering
    the first one. Results name tokens by their names only."""
    import requests

    try:
        result = ExposureCheck(host=host, url=url, fingerprint=fingerprint_text(fingerprint_hex(fingerprint)))
    except InputError:
        return ExposureCheck(host=host, url=url, fingerprint=None,
                             error=f"the proxy's certificate on {host} gave no SHA-256 fingerprint: {fingerprint!r}")
    probe = f"{url}/api/tags"

    def status(session: Any, method: str, target: str, **kw: Any) -> int:
        return session.request(method, target, timeout=kw.pop("timeout", 15), **kw).status_code

    try:
        anonymous = client_session(url, fingerprint=fingerprint)
        got = status(anonymous, "GET", probe)
        result.results.append(f"no token: {got}")
        if got != 401:
            result.error = f"a request without a token got {got}, not 401"
            return result
        got = status(client_session(url, token=secrets.token_hex(24), fingerprint=fingerprint), "GET", probe)
        result.results.append(f"wrong token: {got}")
        if got != 401:
            result.error = f"a request with a wrong token got {got}, not 401"
            return result
        for name, token in tokens:
            got = status(client_session(url, token=token, fingerprint=fingerprint), "GET", probe)
            result.results.append(f"token {name!r}: {got}")
            if got != 200:
                result.error = f"a request with the token {name!r} got {got}, not 200"
                return result
        if health_unauthenticated:
            got = status(anonymous, "GET", f"{url}/api/version")
            result.results.append(f"GET /api/version without a token (ollama_expose_health_unauthenticated): {got}")
            if got != 200:
                result.error = f"GET /api/version without a token got {got}, not 200"
                return result
        if model and tokens:
            name, token = tokens[0]
            answer = client_session(url, token=token, fingerprint=fingerprint).post(
                f"{url}/api/generate", timeout=timeout,
                json={"model": model, "prompt": "Say hello.", "stream": False, "options": {"seed": 42, "num_predict": 8}})
            if answer.status_code != 200 or "response" not in answer.json():
                result.error = f"{model} did not answer through the proxy with the token {name!r}: {answer.status_code}"
                return result
            result.results.append(f"{model} answered through the proxy with the token {name!r} "
                                  f"({answer.json().get('eval_count', '?')} tokens)")
    except requests.exceptions.SSLError as exc:
        result.error = (f"the certificate at {url} is not the one on the target (nothing was sent)"
                        if "fingerprint" in str(exc).lower() else f"TLS with {url} failed: {type(exc).__name__}")
    except (requests.RequestException, ValueError) as exc:
        result.error = f"the proxy at {url} is not reachable from here: {type(exc).__name__}"
    return result
