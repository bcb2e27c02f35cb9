#!/usr/bin/python
"""Ansible module: a libvirt domain defined from rendered XML, started, and its guest's address.

Through libvirt-python on ``uri``. Idempotent and check-mode aware:

- ``state: running`` defines the domain when absent; when present it must carry this project's
  mark (the metadata element in namespace ``mark_ns``), else it is refused before any change. The
  rendered XML's sha256 is recorded in that element when the domain is defined: an unchanged XML
  changes nothing; a changed one is shown as a diff against the current definition and redefined,
  and a running guest is restarted only with ``allow_restart`` (otherwise the result says the new
  definition applies at its next boot). The domain is then started (and set to autostart) and its
  IPv4 address is waited for: the network's DHCP lease, else the guest agent, for ``address_timeout``
  seconds; a timeout says what was seen.
- ``state: query`` changes nothing: whether the domain exists and is ours, runs, and its address.
- ``state: absent`` stops and undefines the domain (its NVRAM too), refused as above when it is
  not ours; the disk is the role's business.

Compared with community.libvirt.virt: that module defines and starts from XML but has no ownership
check, no diff of a changed definition, no restart rule and no address lookup, so the role would
wrap it in as many tasks as this module has lines.
"""

from __future__ import annotations

import difflib
import hashlib
import time
import xml.etree.ElementTree as ET

from ansible.module_utils.basic import AnsibleModule

DOCUMENTATION = r"""
module: kvm_domain
short_description: A libvirt domain from rendered XML, marked as this project's, started, its address found
options:
  uri: {type: str, default: qemu:///system}
  name: {type: str, required: true}
  state: {type: str, choices: [running, query, absent], default: running}
  xml: {type: str, description: The rendered domain XML (state running).}
  mark_ns: {type: str, required: true, description: Namespace URI of the metadata element that marks the project's domains.}
  allow_restart: {type: bool, default: false}
  address_timeout: {type: int, default: 180}
  shutdown_timeout: {type: int, default: 60}
"""

RETURN = r"""
address: {type: str, description: The guest's IPv4 address ('' when not known).}
state: {type: str, description: 'absent, shutoff, running, ...'}
restart_needed: {type: bool, description: The definition changed while the guest ran and no restart was allowed.}
"""

try:
    import libvirt
except ImportError:  # reported by main()
    libvirt = None

STATES = {0: "nostate", 1: "running", 2: "blocked", 3: "paused", 4: "shutdown", 5: "shutoff", 6: "crashed",
          7: "pmsuspended"}


def _lookup(conn, name):
    try:
        return conn.lookupByName(name)
    except libvirt.libvirtError as exc:
        if exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
            return None
        raise


def _mark(dom, ns):
    """The project's metadata element of the domain's persistent definition, or None."""
    try:
        text = dom.metadata(libvirt.VIR_DOMAIN_METADATA_ELEMENT, ns, libvirt.VIR_DOMAIN_AFFECT_CONFIG)
    except libvirt.libvirtError:
        return None
    return ET.fromstring(text)


def _with_hash(xml, ns, digest, uuid=None):
    """The rendered XML with the rendered text's sha256 recorded in the project's metadata element, and the
    defined domain's UUID where the rendered XML has none (a redefinition keeps the domain's identity)."""
    ET.register_namespace("provisioner", ns)
    root = ET.fromstring(xml)
    if uuid and root.find("uuid") is None:
        ET.SubElement(root, "uuid").text = uuid
    element = root.find(f"metadata/{{{ns}}}*")
    if element is None:
        raise ValueError(f"the rendered domain XML has no <metadata> element in namespace {ns}")
    element.set("rendered-sha256", digest)
    return ET.tostring(root, encoding="unicode")


def _state(dom):
    return STATES.get(dom.state()[0], "unknown") if dom is not None else "absent"


def _addresses(conn, dom):
    """(IPv4 addresses, what was seen) from the network's DHCP leases, then the guest agent."""
    seen = []
    for source, label in ((libvirt.VIR_DOMAIN_INTERFACE_ADDRESSES_SRC_LEASE, "DHCP leases"),
                          (libvirt.VIR_DOMAIN_INTERFACE_ADDRESSES_SRC_AGENT, "guest agent")):
        try:
            ifaces = dom.interfaceAddresses(source, 0) or {}
        except libvirt.libvirtError as exc:
            seen.append(f"{label}: {exc.get_error_message()}")
            continue
        found = [a["addr"] for name, iface in ifaces.items() if name != "lo"
                 for a in (iface.get("addrs") or []) if a.get("type") == libvirt.VIR_IP_ADDR_TYPE_IPV4
                 and not a["addr"].startswith("127.")]
        if found:
            return found, seen
        seen.append(f"{label}: none ({', '.join(ifaces) or 'no interface'})")
    return [], seen


def _macs(xml):
    try:
        return [m.get("address") for m in ET.fromstring(xml).findall("devices/interface/mac")]
    except ET.ParseError:
        return []


def _wait_address(module, conn, dom, timeout):
    deadline = time.monotonic() + timeout
    seen = []
    while True:
        state = _state(dom)
        if state != "running":
            module.fail_json(msg=f"VM {module.params['name']} is {state} while its address was awaited; "
                                 f"see `virsh -c {module.params['uri']} console {module.params['name']}`")
        found, seen = _addresses(conn, dom)
        if found:
            return found[0]
        if time.monotonic() >= deadline:
            macs = ", ".join(m for m in _macs(dom.XMLDesc(0)) if m) or "none"
            module.fail_json(msg=(
                f"VM {module.params['name']} got no IPv4 address in {timeout} s (running; MAC {macs}; "
                + "; ".join(seen) + "): check its network's DHCP (`virsh net-dhcp-leases NETWORK`) and the guest's "
                f"console (`virsh console {module.params['name']}`), or raise kvm_address_timeout"))
        time.sleep(2)


def _stop(dom, timeout):
    try:
        dom.shutdown()
    except libvirt.libvirtError:
        pass
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and _state(dom) not in ("shutoff", "absent"):
        time.sleep(1)
    if _state(dom) not in ("shutoff", "absent"):
        dom.destroy()


def run(module):
    p = module.params
    name, ns = p["name"], p["mark_ns"]
    result = {"changed": False, "address": "", "state": "absent", "restart_needed": False, "defined": False}
    try:
        conn = libvirt.open(p["uri"])
    except libvirt.libvirtError as exc:
        module.fail_json(msg=f"libvirt_uri {p['uri']} cannot be opened: {exc.get_error_message()}; is libvirtd "
                             "running and may this user use it?")
    dom = _lookup(conn, name)
    result["state"] = _state(dom)
    if dom is not None and _mark(dom, ns) is None:
        module.fail_json(msg=f"a domain named {name} exists on {p['uri']} that ollama-provisioner did not define "
                             f"(no <metadata> element in {ns}); nothing was changed: pick another kvm_name or "
                             f"remove that domain yourself (`virsh undefine {name}`)", **result)

    if p["state"] == "query":
        result["defined"] = dom is not None
        if result["state"] == "running":
            found, _ = _addresses(conn, dom)
            result["address"] = found[0] if found else ""
        return result

    if p["state"] == "absent":
        if dom is None:
            return result
        result["changed"] = True
        if not module.check_mode:
            if dom.isActive():
                dom.destroy()
            flags = libvirt.VIR_DOMAIN_UNDEFINE_MANAGED_SAVE
            if "<nvram" in dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE):
                flags |= libvirt.VIR_DOMAIN_UNDEFINE_NVRAM
            dom.undefineFlags(flags)
            result["state"] = "absent"
        return result

    xml = p["xml"]
    if not xml:
        module.fail_json(msg="state running needs xml: the rendered domain XML")
    digest = hashlib.sha256(xml.encode()).hexdigest()
    try:
        marked = _with_hash(xml, ns, digest, dom.UUIDString() if dom is not None else None)
    except (ET.ParseError, ValueError) as exc:
        module.fail_json(msg=f"the rendered domain XML of {name} cannot be used: {exc}")
    diff = None
    if dom is None:
        result["changed"] = True
        diff = {"before": "", "after": xml, "before_header": f"libvirt:{name} (absent)",
                "after_header": f"libvirt:{name} (rendered)"}
    elif _mark(dom, ns).get("rendered-sha256") != digest:
        result["changed"] = True
        before = dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)
        diff = {"before": before, "after": xml, "before_header": f"libvirt:{name} (defined)",
                "after_header": f"libvirt:{name} (rendered)"}
        result["xml_diff"] = "".join(difflib.unified_diff(before.splitlines(True), xml.splitlines(True),
                                                           f"libvirt:{name} (defined)", f"libvirt:{name} (rendered)"))
    if diff is not None and module._diff:
        result["diff"] = diff
    running = result["state"] == "running"
    if module.check_mode:
        if running and not result["changed"]:
            found, _ = _addresses(conn, dom)
            result["address"] = found[0] if found else ""
        result["changed"] = result["changed"] or not running
        return result

    if result["changed"]:
        try:
            dom = conn.defineXML(marked)
        except libvirt.libvirtError as exc:
            module.fail_json(msg=f"libvirt refused the rendered domain XML of {name}: {exc.get_error_message()}",
                             **result)
        if running:
            if p["allow_restart"]:
                _stop(dom, p["shutdown_timeout"])
                running = False
            else:
                result["restart_needed"] = True
    if not dom.autostart():
        dom.setAutostart(1)
        result["changed"] = True
    if not running:
        try:
            dom.create()
        except libvirt.libvirtError as exc:
            module.fail_json(msg=f"VM {name} did not start: {exc.get_error_message()}", **result)
        result["changed"] = True
    result["state"] = _state(dom)
    result["address"] = _wait_address(module, conn, dom, p["address_timeout"])
    return result


def main():
    module = AnsibleModule(
        argument_spec={
            "uri": {"type": "str", "default": "qemu:///system"},
            "name": {"type": "str", "required": True},
            "state": {"type": "str", "choices": ["running", "query", "absent"], "default": "running"},
            "xml": {"type": "str"},
            "mark_ns": {"type": "str", "required": True},
            "allow_restart": {"type": "bool", "default": False},
            "address_timeout": {"type": "int", "default": 180},
            "shutdown_timeout": {"type": "int", "default": 60},
        },
        supports_check_mode=True,
    )
    if libvirt is None:
        module.fail_json(msg="the libvirt Python bindings are missing where this module runs: install python3-libvirt "
                             "(Debian) or libvirt-python for the host's ansible_python_interpreter")
    module.exit_json(**run(module))


if __name__ == "__main__":
    main()
