"""Exposure on the lxc target, plain LXC backend, on real components: the project creates the
container on lxcbr0, installs Ollama and the proxy (Debian's nginx) inside it next to each other,
and the proxy answers on the container's own address from this machine, the LXC host. One install,
one test (CI time): the native module tests the rest of the proxy's behaviour on the same role.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import secrets
import ssl

import pytest

from tests.test_lxc import _run, inside, name, write_lxc_inventory, www  # noqa: F401 (fixtures)

pytestmark = [pytest.mark.infra, pytest.mark.slow]

TOKEN = secrets.token_hex(20)


def _status(ip: str, fingerprint: str, token: str | None) -> int:
    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    conn = http.client.HTTPSConnection(ip, 8443, context=context, timeout=30)
    conn.connect()
    assert hashlib.sha256(conn.sock.getpeercert(binary_form=True)).hexdigest() == fingerprint.replace(":", "").lower()
    conn.request("GET", "/api/tags", headers={"Authorization": f"Bearer {token}"} if token else {})
    status = conn.getresponse().status
    conn.close()
    return status


def test_the_proxy_runs_inside_the_container_and_answers_on_its_address(name, www, tmp_path, provision):  # noqa: F811
    inv = write_lxc_inventory(tmp_path / "inv", name, www, ollama_expose_address="0.0.0.0:8443",
                              ollama_expose_tokens=[{"name": "lan-client", "token": TOKEN}])
    first = provision("--target", "lxc", "-i", inv, "--json")
    assert first.exit_code == 0, first.output
    exposure = json.loads(first.stdout)["hosts"][0]["exposure"]
    ip = _run("lxc-info", "-n", name, "-iH").stdout.split()[0]
    assert exposure["ok"] and exposure["url"] == f"https://{ip}:8443", exposure
    assert exposure["results"][:3] == ["no token: 401", "wrong token: 401", "token 'lan-client': 200"]

    # Inside the container: Ollama on loopback, the proxy on every address, as ollama-proxy.
    listening = inside(name, "ss -Htln | awk '{print $4}'").split()
    assert "127.0.0.1:11434" in listening and "0.0.0.0:8443" in listening
    assert inside(name, "systemctl is-active ollama-proxy") == "active"
    fingerprint = inside(name, "openssl x509 -noout -fingerprint -sha256 -in /etc/ollama-proxy/tls/cert.pem")
    assert fingerprint.split("=", 1)[1] == exposure["fingerprint"]

    # From this machine, pinned: no token 401, the token 200; the token is nowhere in what was printed.
    assert _status(ip, exposure["fingerprint"], None) == 401
    assert _status(ip, exposure["fingerprint"], TOKEN) == 200
    assert TOKEN not in first.stdout + first.stderr
    assert not [p for p in (tmp_path / ".provision").rglob("*") if p.is_file() and TOKEN in p.read_text(errors="replace")]
