"""Exposure on the native target, end to end on real components: the real Ollama server as a systemd
service in a container with systemd as PID 1, the real nginx (Debian's package) in front of it as the
TLS and token proxy, reached from this machine over the container's network.

One install is shared by every test of this module (CI time): the first run, then a second run that
must change nothing, then a rotation that revokes one token. The secrets grep reads everything the
three runs printed and wrote.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import secrets
import socket
import ssl
import subprocess
import time
import warnings
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from tests.native_host import sh, systemd_container, write_native_inventory, www_server

pytestmark = [pytest.mark.infra, pytest.mark.slow]

PORT = 8443
ALICE = secrets.token_hex(24)  # 48 characters
BOB = secrets.token_urlsafe(33)  # 44 characters, base64url


def _provision(workdir: Path, *args: str):
    from provisioner.cli import app

    before = os.getcwd()
    os.chdir(workdir)
    try:
        return CliRunner().invoke(app, [str(a) for a in args])
    finally:
        os.chdir(before)


def _inventory(directory: Path, host: str, www: str, tokens: list[dict]) -> Path:
    return write_native_inventory(directory, host, www, ollama_expose_address=f"0.0.0.0:{PORT}",
                                  ollama_expose_tokens=tokens)


def _ip(container: str) -> str:
    return subprocess.run(["docker", "inspect", "-f", "{{.NetworkSettings.IPAddress}}", container],
                          capture_output=True, text=True, check=True).stdout.strip()


@pytest.fixture(scope="module")
def exposed(tmp_path_factory):
    """One install exposed with two tokens, a re-run, and a rotation that revokes alice."""
    tmp = tmp_path_factory.mktemp("expose")
    work = tmp / "work"
    work.mkdir()
    with www_server() as www, systemd_container("op-expose") as host:
        inv = _inventory(tmp / "inv", host, www, [{"name": "alice", "token": ALICE}, {"name": "bob", "token": BOB}])
        first = _provision(work, "--target", "native", "-i", inv, "--json")
        assert first.exit_code == 0, first.output
        doc = json.loads(first.stdout)
        second = _provision(work, "--target", "native", "-i", inv)
        assert second.exit_code == 0, second.output
        target_fp = sh(host, "openssl x509 -noout -fingerprint -sha256 -in /etc/ollama-proxy/tls/cert.pem")
        key = sh(host, "cat /etc/ollama-proxy/tls/key.pem")
        yield {"host": host, "ip": _ip(host), "work": work, "inv": inv, "www": www, "first": first,
               "doc": doc, "second": second, "target_fp": target_fp.split("=", 1)[1], "key": key}


def _pinned_connection(ip: str, fingerprint: str) -> http.client.HTTPSConnection:
    """An HTTPS connection whose certificate was checked against ``fingerprint`` in the handshake."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    conn = http.client.HTTPSConnection(ip, PORT, context=context, timeout=60)
    conn.connect()
    seen = hashlib.sha256(conn.sock.getpeercert(binary_form=True)).hexdigest()
    assert seen == fingerprint.replace(":", "").lower(), "the proxy's certificate is not the pinned one"
    return conn


def _request(ip: str, fp: str, method: str, path: str, token: str | None = None, body: dict | None = None):
    conn = _pinned_connection(ip, fp)
    headers = {"Content-Type": "application/json"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    conn.request(method, path, body=json.dumps(body) if body is not None else None, headers=headers)
    answer = conn.getresponse()
    data = answer.read()
    conn.close()
    return answer.status, data


def test_the_run_exposes_ollama_only_through_the_proxy_and_checks_it(exposed):
    host, doc = exposed["host"], exposed["doc"]
    (result,) = doc["hosts"]
    exposure = result["exposure"]
    assert exposure["ok"], exposure
    assert exposure["url"] == f"https://{exposed['ip']}:{PORT}"
    assert exposure["fingerprint"] == exposed["target_fp"]
    assert exposure["results"][:4] == ["no token: 401", "wrong token: 401", "token 'alice': 200", "token 'bob': 200"]
    assert exposure["results"][4].startswith("smollm2 answered through the proxy with the token 'alice'")
    assert f"certificate SHA-256 {exposed['target_fp']}" in exposed["first"].stderr
    # Ollama stays on loopback; the proxy alone listens on the network, as ollama-proxy, not root.
    listening = sh(host, "ss -Htln | awk '{print $4}'").split()
    assert "127.0.0.1:11434" in listening and f"0.0.0.0:{PORT}" in listening
    assert not any(a.endswith(":11434") and not a.startswith("127.0.0.1") for a in listening)
    users = sh(host, "for d in /proc/[0-9]*; do [ \"$(cat $d/comm 2>/dev/null)\" = nginx ] && stat -c %U $d; done; true")
    assert set(users.split()) == {"ollama-proxy"}
    assert sh(host, "systemctl is-active nginx", check=False) != "active"  # the distribution's own: not started
    for path in ("/etc/ollama-proxy/tokens.map", "/etc/ollama-proxy/tls/key.pem"):
        assert sh(host, f"stat -c '%U %a' {path}") == "ollama-proxy 400"
    assert f"changed 0 thing(s) on {host}" in exposed["second"].output
    assert "no token: 401" in exposed["second"].output
    assert sh(host, "openssl x509 -noout -fingerprint -sha256 -in /etc/ollama-proxy/tls/cert.pem").endswith(
        exposed["target_fp"])  # kept across runs


def test_tls_pinned_tokens_stream_and_openai_path_through_the_real_proxy(exposed):
    ip, fp = exposed["ip"], exposed["target_fp"]
    # A real handshake, pinned; TLS 1.1 and older are refused.
    old = ssl.create_default_context()
    old.check_hostname, old.verify_mode = False, ssl.CERT_NONE
    old.minimum_version = ssl.TLSVersion.MINIMUM_SUPPORTED
    with warnings.catch_warnings():  # TLS 1.1 is deprecated: exactly what is offered here
        warnings.simplefilter("ignore", DeprecationWarning)
        old.maximum_version = ssl.TLSVersion.TLSv1_1
    with pytest.raises(ssl.SSLError):
        with socket.create_connection((ip, PORT), timeout=10) as raw, old.wrap_socket(raw):
            pass
    conn = _pinned_connection(ip, fp)
    assert conn.sock.version() in ("TLSv1.2", "TLSv1.3")
    conn.close()

    # 401 without a token and with a wrong one, and it reaches nothing behind: the delete never happens.
    assert _request(ip, fp, "DELETE", "/api/delete", body={"model": "smollm2"})[0] == 401
    assert _request(ip, fp, "DELETE", "/api/delete", token=secrets.token_hex(24), body={"model": "smollm2"})[0] == 401
    assert _request(ip, fp, "DELETE", "/api/delete", token=ALICE.upper(), body={"model": "smollm2"})[0] == 401
    assert _request(ip, fp, "GET", "/api/version")[0] == 401  # no open health check unless asked for
    status, body = _request(ip, fp, "GET", "/api/tags", token=BOB)
    assert status == 200 and "smollm2:latest" in [m["name"] for m in json.loads(body)["models"]]

    # A streamed generation arrives in several chunks, over time, not buffered to the end.
    conn = _pinned_connection(ip, fp)
    conn.request("POST", "/api/generate", headers={"Authorization": f"Bearer {ALICE}"}, body=json.dumps(
        {"model": "smollm2", "prompt": "Count from one to fifty.", "stream": True,
         "options": {"seed": 1, "num_predict": 48, "temperature": 0}}))
    answer = conn.getresponse()
    assert answer.status == 200
    arrivals = []  # (when, bytes) of each read that returned what had arrived so far
    while chunk := answer.read1(65536):
        arrivals.append((time.monotonic(), chunk))
    conn.close()
    lines = [json.loads(line) for line in b"".join(c for _, c in arrivals).splitlines() if line.strip()]
    # (This build's stream may end without its done line: only the chunks' arrival is asserted.)
    assert len(lines) >= 10 and all("response" in line for line in lines)
    assert len(arrivals) >= 5, f"{len(lines)} lines came in {len(arrivals)} reads: the answer was buffered"
    assert arrivals[-1][0] - arrivals[0][0] > 0.05, "every chunk came at once: the answer was buffered"

    # The OpenAI-compatible path, the token as the API key (what an OpenAI client sends).
    status, body = _request(ip, fp, "POST", "/v1/chat/completions", token=BOB, body={
        "model": "smollm2", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 8, "seed": 1})
    assert status == 200, body
    assert json.loads(body)["choices"][0]["message"]["role"] == "assistant"
    status, body = _request(ip, fp, "GET", "/v1/models", token=ALICE)
    assert status == 200 and "smollm2:latest" in [m["id"] for m in json.loads(body)["data"]]

    # The access log names the client, never the token.
    log = sh(exposed["host"], "journalctl -t ollama_proxy --no-pager -o cat")
    assert "client=alice" in log and "client=bob" in log
    assert ALICE not in log and BOB not in log


def test_verify_url_through_the_proxy_takes_the_token_from_the_environment(exposed, monkeypatch):
    url = f"https://{exposed['ip']}:{PORT}"
    monkeypatch.setenv("OLLAMA_TEST_TOKEN", BOB)
    checked = _provision(exposed["work"], "verify", "--url", url, "--token-env", "OLLAMA_TEST_TOKEN",
                         "--fingerprint", exposed["target_fp"], "-m", "smollm2", "--expect", "cpu", "--json")
    assert checked.exit_code == 0, checked.output
    assert json.loads(checked.stdout)["verdict"] == "cpu"
    wrong_pin = _provision(exposed["work"], "verify", "--url", url, "--token-env", "OLLAMA_TEST_TOKEN",
                           "--fingerprint", "AA" * 32, "-m", "smollm2")
    assert wrong_pin.exit_code == 3 and "not the one pinned by --fingerprint" in wrong_pin.output
    no_token = _provision(exposed["work"], "verify", "--url", url, "--fingerprint", exposed["target_fp"], "-m", "smollm2")
    assert no_token.exit_code == 3 and "refused the request (401)" in no_token.output
    exposed["verify_outputs"] = [checked, wrong_pin, no_token]


def test_rotation_revokes_one_token_removal_removes_the_proxy_and_no_secret_is_anywhere(exposed):
    host, ip, fp = exposed["host"], exposed["ip"], exposed["target_fp"]
    _inventory(exposed["inv"], host, exposed["www"], [{"name": "bob", "token": BOB}])
    rotated = _provision(exposed["work"], "--target", "native", "-i", exposed["inv"], "--json")
    assert rotated.exit_code == 0, rotated.output
    assert json.loads(rotated.stdout)["hosts"][0]["exposure"]["results"][:3] == [
        "no token: 401", "wrong token: 401", "token 'bob': 200"]
    assert _request(ip, fp, "GET", "/api/tags", token=ALICE)[0] == 401
    assert _request(ip, fp, "GET", "/api/tags", token=BOB)[0] == 200
    manifest = next((exposed["work"] / ".provision/rendered/native").rglob("manifest.json"))
    assert json.loads(manifest.read_text())["settings"]["ollama_expose_tokens"] == [{"name": "bob", "token": "**********"}]

    rendered = {f"{p} (exposed)": p.read_text() for p in (exposed["work"] / ".provision/rendered").rglob("*") if p.is_file()}
    assert any(where.endswith("nginx.conf (exposed)") for where in rendered)

    # Exposure removed from the inventory: the proxy goes (its certificate stays, and so does the pin).
    write_native_inventory(exposed["inv"], host, exposed["www"])
    closed = _provision(exposed["work"], "--target", "native", "-i", exposed["inv"])
    assert closed.exit_code == 0, closed.output
    assert sh(host, "systemctl is-active ollama-proxy", check=False) != "active"
    assert f":{PORT}" not in sh(host, "ss -Htln")
    assert sh(host, "ls /etc/ollama-proxy").split() == ["tls"]
    assert sh(host, "ls /etc/ollama-proxy/tls").split() == ["cert.pem", "key.pem"]
    assert sh(host, "test -e /etc/systemd/system/ollama-proxy.service && echo present || echo gone") == "gone"

    # The secrets grep: every output of every run, the run directories and the rendered files.
    secret_values = [ALICE, BOB, *[line for line in exposed["key"].splitlines() if "-----" not in line]]
    outputs = [exposed["first"], exposed["second"], rotated, closed, *exposed.get("verify_outputs", [])]
    texts = {f"output of run {i}": r.stdout + r.stderr for i, r in enumerate(outputs)}
    state = exposed["work"] / ".provision"
    files = [p for p in state.rglob("*") if p.is_file()]
    assert any("artifacts" in p.parts for p in files)
    for path in files:
        texts[str(path)] = path.read_bytes().decode(errors="replace")
    texts.update(rendered)
    leaks = [(where, value[:6] + "…") for where, text in texts.items() for value in secret_values if value in text]
    assert leaks == []
