"""Exposure settings and rendering: every refusal (exit 2, one line, no secret), the opt-in's warning,
the proxy's files pinned by golden files, and no token in anything rendered."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from provisioner import flow
from provisioner.errors import InputError, SettingsError
from provisioner.progress import Quiet
from provisioner.render import render
from provisioner.settings import build_settings
from provisioner.targets import Target
from provisioner.verify import fingerprint_hex, fingerprint_text
from provisioner.workspace import Workspace
from tests.conftest import ROOT
from tests.test_flow import FakeRunner

GOLDEN = ROOT / "tests" / "golden" / "expose"
TOKEN_A = "a1" * 20  # 40 characters
TOKEN_B = "Zx9-_" * 8  # 40 characters
SHORT = "s3cr3t-but-too-short-0123456789"  # 31 characters
EXPOSED = {"ollama_expose_address": "0.0.0.0:8443",
           "ollama_expose_tokens": [{"name": "open-webui", "token": TOKEN_A}, {"name": "laptop", "token": TOKEN_B}]}


def _refused(target=Target.native, **variables) -> list[str]:
    with pytest.raises(SettingsError) as err:
        build_settings("gpu1", target, variables)
    return err.value.lines()


@pytest.mark.parametrize("target", [Target.native, Target.lxc])
@pytest.mark.parametrize("listen", ["0.0.0.0:11434", "[::]:11434", "192.168.1.5:11434", "gpu1.lan:11434"])
def test_a_non_loopback_listen_address_without_exposure_or_opt_in_is_refused(target, listen):
    extra = {"lxc_vmid": 120} if target is Target.lxc else {}
    (line,) = _refused(target, ollama_listen_address=listen, **extra)
    assert line.startswith(f"host 'gpu1': ollama_listen_address = '{listen}' opens Ollama's API")
    assert "set ollama_expose_address" in line and "ollama_listen_unauthenticated: true" in line


@pytest.mark.parametrize("listen", ["127.0.0.1:11434", "127.0.0.2:9000", "[::1]:11434", "localhost:11434"])
def test_loopback_listen_addresses_need_nothing(listen):
    s = build_settings("gpu1", Target.native, {"ollama_listen_address": listen})
    assert s.warnings == [] and not s.expose.exposed


def test_the_opt_in_is_accepted_and_warned_on_every_run(write_inventory, tmp_path):
    inv = write_inventory("""
        all:
          children:
            native:
              hosts:
                gpu1: {ollama_listen_address: "0.0.0.0:11434", ollama_listen_unauthenticated: true}
          vars: {ollama_version: 0.12.3, ollama_models: [smollm2]}
        """)

    class Recording(Quiet):
        lines: list[str] = []

        def line(self, text: str) -> None:
            self.lines.append(text)

    runner = FakeRunner(Workspace(tmp_path / "state"))
    runner.display = Recording()
    for _ in range(2):
        flow.run_flow(target=Target.native, inventory=inv, workspace=runner.workspace, display=runner.display,
                      runner=runner)
    warnings = [line for line in Recording.lines if line.startswith("warning: gpu1:")]
    assert len(warnings) == 2 and "0.0.0.0:11434 without authentication" in warnings[0]


@pytest.mark.parametrize(
    ("variables", "expected", "secret"),
    [
        ({"ollama_expose_address": "0.0.0.0:8443"},
         "host 'gpu1': ollama_expose_address is set but ollama_expose_tokens is empty", None),
        ({**EXPOSED, "ollama_expose_tokens": [{"name": "laptop", "token": SHORT}]},
         "host 'gpu1': ollama_expose_tokens: the token named 'laptop' has 31 characters; use at least 32", SHORT),
        ({**EXPOSED, "ollama_expose_tokens": [{"name": "x", "token": 'a"b;' + "c" * 40}]},
         "the token named 'x' has characters other than", 'a"b;' + "c" * 40),
        ({**EXPOSED, "ollama_expose_tokens": [{"name": "x", "token": TOKEN_A}, {"name": "x", "token": TOKEN_B}]},
         "the name 'x' is used twice", TOKEN_A),
        ({**EXPOSED, "ollama_expose_tokens": [{"name": "x", "token": TOKEN_A}, {"name": "y", "token": TOKEN_A}]},
         "two entries have the same token", TOKEN_A),
        ({**EXPOSED, "ollama_expose_tokens": [{"name": "x", "token": 12345678901234567890123456789012345}]},
         "ollama_expose_tokens[0].token = '********'", "12345678901234567890123456789012345"),
        ({**EXPOSED, "ollama_expose_tokens": [{"name": "x", "token": TOKEN_A, "tokn": TOKEN_B}]},
         "ollama_expose_tokens[0].tokn = '********': Extra inputs are not permitted", TOKEN_B),
        ({**EXPOSED, "ollama_expose_tls_cert": "/etc/hostname"},
         "ollama_expose_tls_cert is set without ollama_expose_tls_key; set both", None),
        ({**EXPOSED, "ollama_expose_tls_key": "/etc/hostname"},
         "ollama_expose_tls_key is set without ollama_expose_tls_cert; set both", None),
        ({**EXPOSED, "ollama_expose_tls_cert": "/nonexistent/cert.pem", "ollama_expose_tls_key": "/etc/hostname"},
         "ollama_expose_tls_cert = '/nonexistent/cert.pem': no such file on the controller", None),
        ({**EXPOSED, "ollama_listen_address": "0.0.0.0:11434"},
         "with ollama_expose_address = '0.0.0.0:8443': behind the proxy Ollama stays on loopback", None),
        ({**EXPOSED, "ollama_listen_address": "0.0.0.0:11434", "ollama_listen_unauthenticated": True},
         "behind the proxy Ollama stays on loopback", None),
        ({**EXPOSED, "ollama_expose_address": "0.0.0.0:11434"},
         "takes the port Ollama listens on (127.0.0.1:11434); give the proxy another port", None),
        ({**EXPOSED, "ollama_expose_address": "8443"}, "ollama_expose_address = '8443': must be HOST:PORT", None),
    ],
)
def test_each_refusal_exits_2_in_one_line_that_never_shows_a_token(provision, write_inventory, variables, expected,
                                                                   secret):
    inv = write_inventory(json.dumps({"all": {"children": {"native": {"hosts": {"gpu1": variables}}}}}))
    result = provision("render", "-t", "native", "-i", inv)
    assert result.exit_code == 2, result.output
    assert expected in result.output
    for value in (secret, TOKEN_A, TOKEN_B):
        if value:
            assert value not in result.output
    assert not (inv.parent / ".provision").exists() or not any((inv.parent / ".provision").rglob("manifest.json"))


def _render_exposed(target: Target, tmp_path: Path, **more) -> Path:
    extra = {"lxc_backend": "lxc", "lxc_name": "ollama-ct"} if target is Target.lxc else {}
    host = {Target.native: "gpu1", Target.lxc: "lxc1", Target.kvm: "kvm1"}[target]
    s = build_settings(host, target, {**EXPOSED, **extra, **more})
    render([s], tmp_path / "out")
    return tmp_path / "out" / host


@pytest.mark.parametrize("target", [Target.native, Target.lxc, Target.kvm])
def test_exposed_hosts_match_golden_files_and_render_no_token(target, tmp_path):
    """Set UPDATE_GOLDEN=1 to rewrite tests/golden/expose/ after an intended change, then review the diff."""
    out = _render_exposed(target, tmp_path)
    tree = {str(p.relative_to(out)): p.read_text() for p in sorted(out.rglob("*")) if p.is_file()}
    # Every concern's settings in manifest.json are pinned by tests/test_render.py's goldens; here the
    # rest of it is, so that a setting added elsewhere does not change these files.
    manifest = json.loads(tree["manifest.json"])
    tree["manifest.json"] = json.dumps({k: v for k, v in manifest.items() if k != "settings"}, indent=2) + "\n"
    scope = "host" if target is Target.native else "guest"
    assert f"{scope}/etc/ollama-proxy/nginx.conf" in tree and f"{scope}/etc/systemd/system/ollama-proxy.service" in tree
    for text in tree.values():
        assert TOKEN_A not in text and TOKEN_B not in text
    assert manifest["settings"]["ollama_expose_tokens"] == [
        {"name": "open-webui", "token": "**********"}, {"name": "laptop", "token": "**********"}]
    service = json.loads(tree["service-vars.json"])
    assert service["ollama_proxy_enabled"] is True and service["ollama_proxy_port"] == 8443
    assert service["ollama_proxy_upstream"] == "http://127.0.0.1:11434"
    conf = tree[f"{scope}/etc/ollama-proxy/nginx.conf"]
    for line in ("listen 0.0.0.0:8443 ssl;", "ssl_protocols TLSv1.2 TLSv1.3;", "proxy_buffering off;",
                 "client_max_body_size 0;", "include /etc/ollama-proxy/tokens.map;", "proxy_pass http://127.0.0.1:11434;",
                 'proxy_set_header Authorization "";'):
        assert line in conf
    assert "location = /api/version" not in conf
    golden = GOLDEN / target.value
    if os.environ.get("UPDATE_GOLDEN"):
        shutil.rmtree(golden, ignore_errors=True)
        for rel, text in tree.items():
            (golden / rel).parent.mkdir(parents=True, exist_ok=True)
            (golden / rel).write_text(text)
    assert tree == {str(p.relative_to(golden)): p.read_text() for p in sorted(golden.rglob("*")) if p.is_file()}


def test_an_open_health_check_is_a_get_of_api_version_only(tmp_path):
    out = _render_exposed(Target.native, tmp_path, ollama_expose_health_unauthenticated=True)
    conf = (out / "host/etc/ollama-proxy/nginx.conf").read_text()
    block = conf.split("location = /api/version {", 1)[1].split("\n        }\n", 1)[0]
    assert "limit_except GET" in block and "proxy_pass http://127.0.0.1:11434;" in block


def test_without_exposure_no_proxy_file_is_rendered_and_the_role_gets_nothing(tmp_path):
    s = build_settings("gpu1", Target.native, {})
    render([s], tmp_path)
    assert not list(tmp_path.rglob("*ollama-proxy*"))
    assert not any(k.startswith("ollama_proxy_") for k in json.loads((tmp_path / "gpu1/service-vars.json").read_text()))


def test_the_controller_reaches_a_wildcard_exposure_at_the_address_the_place_reports():
    s = build_settings("gpu1", Target.native, {**EXPOSED})
    assert s.module.expose_url(s, "172.17.0.5") == "https://172.17.0.5:8443"
    pinned = build_settings("gpu1", Target.native, {**EXPOSED, "ollama_expose_address": "192.168.1.20:443"})
    assert pinned.module.expose_url(pinned, "172.17.0.5") == "https://192.168.1.20:443"
    assert s.module.expose_url(build_settings("gpu1", Target.native, {}), "172.17.0.5") is None


def test_fingerprints_are_read_in_any_common_spelling():
    hexed = "ab" * 32
    assert fingerprint_hex("AB:" * 31 + "AB") == hexed == fingerprint_hex("sha256:" + hexed)
    assert fingerprint_text(hexed).startswith("AB:AB:")
    with pytest.raises(InputError):
        fingerprint_hex("AB:CD")


def test_verify_url_refuses_a_missing_token_variable_and_two_pins(provision, monkeypatch):
    monkeypatch.delenv("NO_SUCH_TOKEN_VAR", raising=False)
    missing = provision("verify", "--url", "https://127.0.0.1:9", "-m", "m", "--token-env", "NO_SUCH_TOKEN_VAR")
    assert missing.exit_code == 2 and "NO_SUCH_TOKEN_VAR is not set" in missing.output
    monkeypatch.setenv("SOME_TOKEN", TOKEN_A)
    both = provision("verify", "--url", "https://127.0.0.1:9", "-m", "m", "--token-env", "SOME_TOKEN",
                     "--ca", "/etc/hostname", "--fingerprint", "ab" * 32)
    assert both.exit_code == 2 and "not both" in both.output and TOKEN_A not in both.output


def test_the_exposure_check_fails_with_a_reason_and_exit_1_when_it_cannot_check():
    from provisioner.verify import check_exposure

    unreadable = check_exposure("gpu1", "https://127.0.0.1:9", "", [("a", TOKEN_A)], model=None)
    assert unreadable.exit_code == 1 and "gave no SHA-256 fingerprint" in unreadable.error
    closed = check_exposure("gpu1", "https://127.0.0.1:9", "ab" * 32, [("a", TOKEN_A)], model=None)
    assert closed.exit_code == 1 and closed.error.startswith("the proxy at https://127.0.0.1:9 is not reachable")
    assert all(TOKEN_A not in line for line in closed.lines())


def test_kvm_exposed_through_the_hosts_forward_runs_the_proxy_on_every_guest_address(tmp_path):
    # The exposed address is the libvirt host's: the guest's proxy listens on the same port on all of the
    # guest's addresses, checks itself on loopback, and the host's forward (role ollama_forward) relays.
    out = _render_exposed(Target.kvm, tmp_path, ollama_expose_address="192.0.2.10:8443")
    assert "listen 0.0.0.0:8443 ssl;" in (out / "guest/etc/ollama-proxy/nginx.conf").read_text()
    service = json.loads((out / "service-vars.json").read_text())
    assert service["ollama_proxy_check_host"] == "127.0.0.1"
    assert "IP:192.0.2.10" in service["ollama_proxy_tls_subject_alt_names"]
    host = json.loads((out / "host-vars.json").read_text())
    assert (host["ollama_forward_enabled"], host["ollama_forward_listen"], host["ollama_forward_port"]) == (
        True, "192.0.2.10:8443", 8443)
    s = build_settings("kvm1", Target.kvm, {**EXPOSED, "ollama_expose_address": "192.0.2.10:8443"})
    assert s.module.expose_url(s, "192.168.122.40") == "https://192.0.2.10:8443"
    wildcard = build_settings("kvm1", Target.kvm, EXPOSED)
    assert wildcard.module.expose_url(wildcard, "192.168.122.40") == "https://kvm1:8443"


def test_kvm_on_a_lan_bridge_has_no_forward_and_is_reached_at_the_guests_address(tmp_path):
    out = _render_exposed(Target.kvm, tmp_path, kvm_expose_forward=False)
    assert "listen 0.0.0.0:8443 ssl;" in (out / "guest/etc/ollama-proxy/nginx.conf").read_text()
    assert json.loads((out / "host-vars.json").read_text())["ollama_forward_enabled"] is False
    s = build_settings("kvm1", Target.kvm, {**EXPOSED, "kvm_expose_forward": False})
    assert s.module.expose_url(s, "192.168.1.77") == "https://192.168.1.77:8443"
    # Not exposed: the role gets absent (a forward left from an earlier exposure is removed).
    render([build_settings("kvm2", Target.kvm, {})], tmp_path / "plain")
    assert json.loads((tmp_path / "plain/kvm2/host-vars.json").read_text())["ollama_forward_enabled"] is False


def test_kvm_forward_needs_an_address_to_listen_on():
    (line,) = _refused(Target.kvm, **{**EXPOSED, "ollama_expose_address": "gpu1.lan:8443"})
    assert "ollama_expose_address = 'gpu1.lan:8443' names a host" in line and "kvm_expose_forward: false" in line
    build_settings("kvm1", Target.kvm, {**EXPOSED, "ollama_expose_address": "gpu1.lan:8443", "kvm_expose_forward": False})
