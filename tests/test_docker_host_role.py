"""Role docker_host: its daemon.json merge (pure functions, then the module through Ansible on this
machine), and the role itself on real Docker hosts (tests/docker_host.py: a Docker engine inside a
throwaway systemd container, installed by this role).

What the infra tests prove: Debian's engine installed, enabled and running containers; a user's
daemon.json kept byte for byte while the project's entries are added; dockerd restarted only when
the file changed, with the running containers that the restart stops named; a second run changes
nothing and leaves dockerd alone; the NVIDIA Container Toolkit installed from a signed apt
repository laid out like NVIDIA's, after which the engine accepts a GPU device request (driver
nvidia) and runs the container with the nvidia runtime; a file that is not JSON, a merged file
that dockerd refuses, and an engine older than 19.03 each stop the run with nothing changed.

What they cannot prove: anything about a GPU. The toolkit is a STAND-IN (tests/infra/nvidia-standins):
its hook injects no device and no library, its runtime runs runc unchanged; no GPU is ever
attached, so a container started with the GPU request sees no /dev/nvidia* node.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys

import pytest

from provisioner.errors import ApplyError
from tests.conftest import ROOT
from tests.docker_host import (
    STANDIN_LOG,
    STANDIN_TOOLKIT_VERSION,
    _wait,
    converge,
    docker_host,
    dockerd_pid,
    dockerhost_image,
    load_sleeper,
    project_fragment,
    standin_toolkit_repo,
    write_fragment,
)
from tests.native_host import sh, systemd_container

_spec = importlib.util.spec_from_file_location(
    "daemon_json_merge", ROOT / "roles" / "docker_host" / "module_utils" / "daemon_json_merge.py")
dj = importlib.util.module_from_spec(_spec)
sys.modules["daemon_json_merge"] = dj  # its dataclasses look their module up
_spec.loader.exec_module(dj)

# A homelab owner's own file: 4-space indent, some values on one line, some spread out.
USER = """{
    "log-driver": "json-file",
    "log-opts": {"max-size": "10m", "max-file": "3"},
    "registry-mirrors": ["https://mirror.example.org"],
    "insecure-registries": [
        "registry.lan:5000"
    ],
    "dns": ["192.0.2.53","192.0.2.54"]
}
"""
GPU = {"runtimes": {"nvidia": {"path": "nvidia-container-runtime", "args": []}},
       "exec-opts": ["native.cgroupdriver=cgroupfs"]}


# --- the merge, pure ---------------------------------------------------------------------------


def test_the_users_text_is_kept_byte_for_byte_and_only_the_projects_entries_are_inserted():
    merged = dj.merge(USER, {**GPU, "insecure-registries": ["172.17.0.1:5000"]})
    assert merged.changed
    # Take the insertions out again: what is left is the user's file, to the byte.
    inserted_entry = ',\n        "172.17.0.1:5000"'
    inserted_keys = (',\n    "runtimes": {\n        "nvidia": {\n            "path": "nvidia-container-runtime",\n'
                     '            "args": []\n        }\n    },\n    "exec-opts": [\n'
                     '        "native.cgroupdriver=cgroupfs"\n    ]')
    assert inserted_entry in merged.text and inserted_keys in merged.text
    assert merged.text.replace(inserted_entry, "").replace(inserted_keys, "") == USER
    doc = json.loads(merged.text)
    assert list(doc) == ["log-driver", "log-opts", "registry-mirrors", "insecure-registries", "dns",
                         "runtimes", "exec-opts"]  # the user's keys first, in the user's order
    assert doc["insecure-registries"] == ["registry.lan:5000", "172.17.0.1:5000"]
    assert merged.added == ["runtimes", "exec-opts", 'insecure-registries["172.17.0.1:5000"]']
    assert merged.changed_keys == ["insecure-registries", "runtimes", "exec-opts"]
    assert merged.conflicts == [] and merged.live_restore is False


def test_lists_get_what_is_missing_appended_in_the_users_own_spacing():
    merged = dj.merge(USER, {"dns": ["192.0.2.54", "198.51.100.1"], "registry-mirrors": ["https://m2.example.org"]})
    assert '"dns": ["192.0.2.53","192.0.2.54","198.51.100.1"]' in merged.text
    assert '"registry-mirrors": ["https://mirror.example.org", "https://m2.example.org"]' in merged.text


def test_nested_objects_get_missing_keys_and_a_one_line_file_stays_one_line():
    merged = dj.merge('{"runtimes": {"kata": {"path": "kata-runtime"}}}', GPU)
    assert merged.text == ('{"runtimes": {"kata": {"path": "kata-runtime"}, "nvidia": {"path": '
                           '"nvidia-container-runtime", "args": []}}, "exec-opts": ["native.cgroupdriver=cgroupfs"]}')


def test_nothing_changes_when_everything_is_there_whatever_its_order_or_spelling():
    text = ('{\n\t"exec-opts": ["native.cgroupdriver=cgroupfs"],\n\t"runtimes": {"nvidia": {"args": [], '
            '"path": "nvidia-container-runtime"}},\n\t"live-restore": true\n}')  # nvidia-ctk's key order, tabs
    merged = dj.merge(text, GPU)
    assert not merged.changed and merged.text == text and merged.added == [] and merged.live_restore


def test_the_users_values_win_and_each_conflict_is_reported():
    text = '{"exec-opts": ["native.cgroupdriver=systemd"], "runtimes": {"nvidia": {"path": "/opt/nv/runtime"}}}'
    merged = dj.merge(text, GPU)
    doc = json.loads(merged.text)
    assert doc["exec-opts"] == ["native.cgroupdriver=systemd"]  # not a second, contradicting driver
    assert doc["runtimes"]["nvidia"] == {"path": "/opt/nv/runtime", "args": []}
    assert merged.conflicts == [
        'runtimes.nvidia.path: kept your value "/opt/nv/runtime", the project\'s "nvidia-container-runtime" '
        'was not applied',
        'exec-opts: kept your entry "native.cgroupdriver=systemd", the project\'s '
        '"native.cgroupdriver=cgroupfs" was not added']


def test_no_file_yet_gives_the_fragment_with_two_spaces_and_an_empty_fragment_writes_nothing():
    merged = dj.merge(None, GPU)
    assert merged.changed and merged.text == json.dumps(GPU, indent=2) + "\n"
    assert dj.merge("", {}).changed is False and dj.merge(None, {}).changed is False
    assert dj.merge(USER, {}).text == USER


def test_a_file_that_is_not_json_names_the_path_line_and_column():
    with pytest.raises(dj.DaemonJsonError) as err:
        dj.merge('{\n  "log-driver": "json-file",\n}\n', GPU, "/etc/docker/daemon.json")
    assert str(err.value) == ("/etc/docker/daemon.json is not valid JSON: Expecting property name enclosed in "
                              "double quotes at line 3 column 1; fix or remove it and run again (nothing was changed)")
    with pytest.raises(dj.DaemonJsonError, match=r"/x/daemon.json is not a JSON object \(it holds a list\)"):
        dj.merge("[]", GPU, "/x/daemon.json")


# --- the module, through Ansible on this machine ----------------------------------------------


def _module(path, fragment, *flags):
    """Run docker_daemon_json on localhost with ansible (ad hoc); its result."""
    proc = subprocess.run(
        [str(ROOT / ".venv/bin/ansible"), "localhost", *flags, "-M", str(ROOT / "roles/docker_host/library"),
         "-m", "docker_daemon_json", "-a", json.dumps({"path": str(path), "fragment": fragment, "backup": True}),
         "-e", f"ansible_python_interpreter={sys.executable}"],
        capture_output=True, text=True,
        env={"PATH": "/usr/bin:/bin", "HOME": str(path.parent), "ANSIBLE_LOAD_CALLBACK_PLUGINS": "1", "ANSIBLE_STDOUT_CALLBACK": "ansible.posix.json",
             "ANSIBLE_MODULE_UTILS": str(ROOT / "roles/docker_host/module_utils"),
             "ANSIBLE_LOCALHOST_WARNING": "False", "ANSIBLE_INVENTORY_UNPARSED_WARNING": "False"})
    return json.loads(proc.stdout)["plays"][0]["tasks"][0]["hosts"]["localhost"]


def test_the_module_writes_only_when_the_content_changes_and_check_mode_writes_nothing(tmp_path):
    path = tmp_path / "daemon.json"
    path.write_text(USER)
    path.chmod(0o600)
    dry = _module(path, GPU, "--check", "--diff")
    assert dry["changed"] and path.read_text() == USER and "backup_file" not in dry
    done = _module(path, GPU)
    assert done["changed"] and path.read_text() == dry["diff"]["after"]
    assert open(done["backup_file"]).read() == USER
    assert path.stat().st_mode & 0o777 == 0o600  # the user's mode kept
    mtime = path.stat().st_mtime_ns
    again = _module(path, GPU)
    assert not again["changed"] and path.stat().st_mtime_ns == mtime
    path.write_text('{"a": 1,,}')
    broken = _module(path, GPU)
    assert broken["failed"] and broken["msg"].startswith(f"{path} is not valid JSON: ") and "line 1 column 9" in broken["msg"]
    assert path.read_text() == '{"a": 1,,}'


# --- the role on real Docker hosts -------------------------------------------------------------


@pytest.mark.infra
@pytest.mark.slow
def test_debians_engine_is_installed_enabled_running_and_a_second_run_changes_nothing():
    image = dockerhost_image()  # the role on a bare bookworm systemd container (tests/docker_host.py)
    assert image.first["engine_installed"] is True and image.first_changed >= 1
    assert image.first["engine_version"] == "20.10.24"  # bookworm's docker.io
    assert image.first["compose"] == "docker-compose" and image.first["compose_version"].startswith("1.29")
    assert (image.enabled, image.active) == ("enabled", "active")
    assert image.ran_a_container
    assert image.second_changed == 0


@pytest.mark.infra
@pytest.mark.slow
def test_a_users_daemon_json_is_merged_byte_for_byte_and_the_restart_names_the_running_containers(tmp_path):
    fragment = write_fragment(tmp_path, {"insecure-registries": ["172.17.0.1:5000"]})
    with docker_host() as host:
        sh(host, f"mkdir -p /etc/docker && cat > /etc/docker/daemon.json <<'EOF'\n{USER}EOF\nsystemctl restart docker")
        _wait(host, "docker info >/dev/null 2>&1", None, 60)
        image = load_sleeper(host)
        sh(host, f"docker run -d --name user-web --restart unless-stopped --stop-timeout 1 {image} /usr/bin/sleep infinity && "
                 f"docker run -d --name user-batch --stop-timeout 1 {image} /usr/bin/sleep infinity")
        before = dockerd_pid(host)

        dry = converge(tmp_path / "check", host, check=True, diff=True, docker_host_daemon_fragment=str(fragment))
        assert dry.changed == 1 and dry.result["dockerd"] == "would restart"
        assert sh(host, "cat /etc/docker/daemon.json") + "\n" == USER and dockerd_pid(host) == before

        run = converge(tmp_path / "apply", host, docker_host_daemon_fragment=str(fragment))
        text = sh(host, "cat /etc/docker/daemon.json") + "\n"
        assert text.replace(',\n        "172.17.0.1:5000"', "") == USER  # the user's bytes, one entry added
        assert dockerd_pid(host) != before and run.result["dockerd"] == "restarted"
        assert run.result["affected_containers"] == ["user-batch", "user-web"]
        note = " ".join(run.result["notes"])
        assert "this stopped the running containers user-batch, user-web" in note
        assert "user-web was started again (restart policy unless-stopped)" in note
        assert "user-batch stays stopped (no restart policy)" in note and "\n" not in note
        assert 'Set "live-restore": true in /etc/docker/daemon.json' in note
        info = json.loads(sh(host, "docker info --format '{{json .}}'"))
        assert "172.17.0.1:5000" in info["RegistryConfig"]["IndexConfigs"]
        assert info["RegistryConfig"]["Mirrors"] == ["https://mirror.example.org/"] and info["LoggingDriver"] == "json-file"
        assert sh(host, "docker ps --format '{{.Names}}'") == "user-web"
        assert "daemon.json." not in sh(host, "ls /etc/docker")  # the previous file's copy is gone

        after = dockerd_pid(host)
        again = converge(tmp_path / "again", host, docker_host_daemon_fragment=str(fragment))
        assert again.changed == 0 and again.result["dockerd"] == "unchanged"
        assert dockerd_pid(host) == after and sh(host, "cat /etc/docker/daemon.json") + "\n" == text


@pytest.mark.infra
@pytest.mark.slow
def test_a_gpu_host_gets_the_toolkit_from_a_signed_repository_and_the_engine_accepts_a_device_request(tmp_path):
    repo = standin_toolkit_repo()
    fragment = project_fragment(tmp_path)
    gpu = {"docker_host_gpu": True, "docker_host_toolkit_repo_url": repo.repo_url,
           "docker_host_toolkit_key_url": repo.key_url, "docker_host_daemon_fragment": str(fragment)}
    with docker_host() as host:
        before = dockerd_pid(host)
        run = converge(tmp_path / "apply", host, **gpu)
        assert run.result["toolkit_installed"] and run.result["dockerd"] == "restarted"
        assert dockerd_pid(host) != before
        assert sh(host, "dpkg-query -W -f '${Version}' nvidia-container-toolkit") == STANDIN_TOOLKIT_VERSION
        source = sh(host, "cat /etc/apt/sources.list.d/ollama-provisioner-nvidia-container-toolkit.list")
        assert (f"deb [signed-by=/etc/apt/keyrings/ollama-provisioner-nvidia-container-toolkit.asc] "
                f"{repo.repo_url} /") in source and "trusted" not in source
        assert sh(host, "cat /etc/docker/daemon.json") + "\n" == json.dumps(json.loads(fragment.read_text()), indent=2) + "\n"
        assert "nvidia" in run.result["runtimes"] and run.result["cgroup_driver"] == "cgroupfs"
        assert run.result["notes"] == ["dockerd restarted: /etc/docker/daemon.json changed (runtimes, exec-opts); "
                                       "no container was running"]

        image = load_sleeper(host)
        cid = sh(host, f"docker run -d --name gpu-probe --runtime nvidia --gpus 'driver=nvidia,count=all' {image} "
                       "/usr/bin/sleep infinity")
        inspect = json.loads(sh(host, "docker inspect gpu-probe"))[0]["HostConfig"]
        assert inspect["Runtime"] == "nvidia"
        assert inspect["DeviceRequests"] == [{"Driver": "nvidia", "Count": -1, "DeviceIDs": None,
                                              "Capabilities": [["gpu"]], "Options": {}}]
        log = sh(host, f"cat {STANDIN_LOG}")
        assert f"hook prestart container={cid}" in log  # dockerd's nvidia driver ran the (stand-in) hook
        assert "runtime --root /var/run/docker/runtime-runc/moby" in log and cid in log
        assert sh(host, "docker exec gpu-probe /usr/bin/sleep 0 && echo ran") == "ran"

        after = dockerd_pid(host)
        again = converge(tmp_path / "again", host, **gpu)
        assert again.changed == 0 and dockerd_pid(host) == after
        assert sh(host, "docker ps --format '{{.Names}}'") == "gpu-probe"


@pytest.mark.infra
@pytest.mark.slow
def test_a_daemon_json_that_is_not_json_or_that_dockerd_refuses_changes_nothing(tmp_path):
    broken = '{\n    "log-driver": "json-file",\n    "registry-mirrors": ["https://mirror.example.org"]\n    "dns": []\n}\n'
    with docker_host() as host:
        sh(host, f"mkdir -p /etc/docker && cat > /etc/docker/daemon.json <<'EOF'\n{broken}EOF")
        before = dockerd_pid(host)
        with pytest.raises(ApplyError) as err:
            converge(tmp_path / "broken", host, docker_host_daemon_fragment=str(project_fragment(tmp_path)))
        assert ("/etc/docker/daemon.json is not valid JSON: Expecting ',' delimiter at line 4 column 5; "
                "fix or remove it and run again (nothing was changed)") in err.value.message
        assert sh(host, "cat /etc/docker/daemon.json") + "\n" == broken and dockerd_pid(host) == before

        # Valid JSON that dockerd itself refuses: the previous file comes back and dockerd runs with it.
        sh(host, f"cat > /etc/docker/daemon.json <<'EOF'\n{USER}EOF\nsystemctl restart docker")
        _wait(host, "docker info >/dev/null 2>&1", None, 60)
        with pytest.raises(ApplyError) as err:
            converge(tmp_path / "refused", host,
                     docker_host_daemon_fragment=str(write_fragment(tmp_path, {"no-such-option": True})))
        assert "dockerd did not come back after /etc/docker/daemon.json changed (no-such-option)" in err.value.message
        assert "the previous file was put back and dockerd runs again with it" in err.value.message
        assert "the following directives don't match any configuration option: no-such-option" in err.value.message
        assert sh(host, "cat /etc/docker/daemon.json") + "\n" == USER
        assert sh(host, "systemctl is-active docker") == "active" and "daemon.json." not in sh(host, "ls /etc/docker")


@pytest.mark.infra
@pytest.mark.slow
def test_an_engine_older_than_19_03_is_refused_before_any_change(tmp_path):
    # A stand-in dockerd that answers like 18.09's (no old engine can be installed here).
    with systemd_container("op-dkh-old") as host:
        sh(host, "printf '#!/bin/sh\\necho \"Docker version 18.09.1, build 4c52b90\"\\n' > /usr/sbin/dockerd && "
                 "chmod +x /usr/sbin/dockerd")
        with pytest.raises(ApplyError) as err:
            converge(tmp_path, host, docker_host_gpu=True, docker_host_daemon_fragment=str(project_fragment(tmp_path)))
        assert (f"Docker Engine 18.09.1 on {host} is too old: GPU device requests need 19.03 or newer; "
                "upgrade the engine (or remove it and set docker_host_source: docker), nothing was changed"
                ) in err.value.message
        assert sh(host, "ls /etc/docker /etc/apt/sources.list.d 2>&1; dpkg-query -W nvidia-container-toolkit 2>&1",
                  check=False).count("No such file") == 1
        assert err.value.details[0] == "changes made before the failure: nothing was changed"


@pytest.mark.infra
@pytest.mark.slow
def test_a_dry_run_on_a_bare_host_says_what_it_would_do_and_changes_nothing(tmp_path):
    repo = standin_toolkit_repo()
    with systemd_container("op-dkh-dry") as host:
        dry = converge(tmp_path, host, check=True, diff=True, docker_host_gpu=True,
                       docker_host_toolkit_repo_url=repo.repo_url, docker_host_toolkit_key_url=repo.key_url,
                       docker_host_daemon_fragment=str(project_fragment(tmp_path)))
        assert dry.changed >= 4 and dry.result["dockerd"] == "would restart"
        assert dry.result["daemon_json_added"] == ["runtimes", "exec-opts"]
        assert sh(host, "ls /etc/docker /etc/apt/keyrings /etc/apt/sources.list.d 2>&1; command -v dockerd",
                  check=False) == ("ls: cannot access '/etc/docker': No such file or directory\n"
                                   "/etc/apt/keyrings:\n\n/etc/apt/sources.list.d:")
