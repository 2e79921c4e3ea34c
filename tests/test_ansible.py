"""The Ansible role (conf/ansible) applied for real, by ``tox -e ansible``.

``site.yml`` runs against a Debian 12 booted with systemd as PID 1
(debootstrap + ``systemd-nspawn --boot``; the root is built once and cached
in /var/tmp, copied per run). Ansible reaches it over SSH on a loopback port;
the container shares the host's network, so its nginx, edx-hooks and sshd
listen on free loopback ports, and the stand-in LMS runs here, on another.
edx-hooks is installed from wheels of this checkout, built here, and its
dependencies from wheels downloaded here: the container needs no index.

Needs root, debootstrap and systemd-nspawn; skips, with the reason,
without them or when the container does not boot.
"""
from __future__ import annotations

import asyncio
import contextlib
import fcntl
import importlib.util
import json
import os
import re
import shutil
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

if importlib.util.find_spec("ansible") is None or not shutil.which("ansible-playbook"):
    pytest.skip("ansible-core is not installed here: run `tox -e ansible`",
                allow_module_level=True)

import yaml  # noqa: E402  (ansible-core brings it)

from .conftest import line_item, shopify_order, shopify_signature  # noqa: E402
from .standin_lms import StandinLMS  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
ANSIBLE = ROOT / "conf" / "ansible"
ROLE = ANSIBLE / "roles" / "edx_hooks"
CACHE = Path(os.environ.get("EDX_HOOKS_DEB12_CACHE", "/var/tmp/edx-hooks-deb12"))
PACKAGES = "systemd,systemd-sysv,dbus,python3,python3-venv,python3-apt,nginx,openssh-server"
COURSE = "course-v1:Ansible+DEPLOY101+2026"
SHOP = "ansible-school.myshopify.com"
# long, random-looking: the project refuses placeholders and warns on short ones
LMS_SECRET = "lms-Zq8vN3kR7tW2yP5mB9xC4hJ6"
SHOP_SECRET = "shpss-Hk4mT9wQ2rV7nZ5cX8bL3pD6"
DB = "/srv/edx-hooks/data/orders.db"  # not the unit's /var/lib/edx-hooks: the drop-in's job
INCLUDE = "/etc/nginx/lms-include/edx-hooks.conf"


# --- the documentation: README and argument_specs.yml agree ----------------

def _specs() -> dict[str, Any]:
    return yaml.safe_load((ROLE / "meta" / "argument_specs.yml").read_text())[
        "argument_specs"]["main"]["options"]


def test_every_variable_is_in_the_specs_the_defaults_and_the_readme():
    specs = _specs()
    defaults = yaml.safe_load((ROLE / "defaults" / "main.yml").read_text())
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Deploying with Ansible", 1)[1].split("\n## ", 1)[0]
    documented = re.findall(r"^\| `(edx_hooks_\w+)` \|", section, re.M)
    assert sorted(documented) == sorted(specs)
    assert sorted(defaults) == sorted(specs)
    for name, spec in specs.items():
        assert spec.get("description"), name
        if "default" in spec:  # literal defaults: the same in both files
            assert spec["default"] == defaults[name], name
    used = set(re.findall(r"\bedx_hooks_[a-z_]+\b", "\n".join(
        p.read_text() for p in ROLE.rglob("*") if p.is_file()
        and p.parent.name in ("tasks", "handlers", "templates"))))
    derived = set(yaml.safe_load((ROLE / "vars" / "main.yml").read_text()))
    registered = {"edx_hooks_venv_made", "edx_hooks_pip", "edx_hooks_check",
                  "edx_hooks_health", "edx_hooks_nginx_shipped"}
    assert used - derived - registered <= set(specs), "a variable the specs do not describe"


# --- the machine ---------------------------------------------------------------

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run(*argv: str, **kw: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, text=True, capture_output=True, **kw)


def _debian_root() -> Path:
    """The cached pristine root, built by debootstrap the first time."""
    marker = CACHE / ".edx-hooks-packages"
    with open(f"{CACHE}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another run may be building it
        if marker.exists() and marker.read_text().strip() == PACKAGES:
            return CACHE
        building = Path(f"{CACHE}.building")
        shutil.rmtree(building, ignore_errors=True)
        done = _run("debootstrap", "--variant=minbase", f"--include={PACKAGES}", "bookworm",
                    str(building))
        if done.returncode != 0:
            shutil.rmtree(building, ignore_errors=True)
            pytest.skip(f"debootstrap could not build a Debian 12 root: {done.stderr[-500:]}")
        _run("chroot", str(building), "apt-get", "clean")
        (building / ".edx-hooks-packages").write_text(PACKAGES + "\n")
        shutil.rmtree(CACHE, ignore_errors=True)
        building.rename(CACHE)
        return CACHE


class Machine:
    """A booted copy of the root, and ansible-playbook against it."""

    def __init__(self, work: Path, wheels: dict[str, str]):
        self.work = work
        self.root = work / "root"
        self.wheels = wheels
        self.ssh_port, self.nginx_port, self.port = _free_port(), _free_port(), _free_port()
        self.key = work / "id_ed25519"
        self.boot: subprocess.Popen[str] | None = None
        self.outputs: list[str] = []

    def prepare(self, wheelhouse: Path) -> None:
        subprocess.run(["cp", "-a", str(_debian_root()), str(self.root)], check=True)
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(self.key)],
                       check=True)
        ssh = self.root / "root" / ".ssh"
        ssh.mkdir(mode=0o700, exist_ok=True)
        shutil.copy(f"{self.key}.pub", ssh / "authorized_keys")
        (self.root / "etc/ssh/sshd_config.d/test.conf").write_text(
            f"Port {self.ssh_port}\nListenAddress 127.0.0.1\nPasswordAuthentication no\n")
        # the LMS's site: a server block that includes a directory, as the
        # predecessor's fork does; the default site (port 80) off
        (self.root / "etc/nginx/sites-enabled/default").unlink()
        (self.root / "etc/nginx/lms-include").mkdir()
        (self.root / "etc/nginx/sites-enabled/lms").write_text(
            "server {\n"
            f"    listen 127.0.0.1:{self.nginx_port};\n"
            "    server_name lms.test;\n"
            "    include /etc/nginx/lms-include/*.conf;\n"
            "    location / { return 200 \"the LMS\\n\"; }\n"
            "}\n")
        shutil.copytree(wheelhouse, self.root / "srv/wheels")

    def start(self) -> None:
        self.log = log = open(self.work / "nspawn.log", "w")
        self.boot = subprocess.Popen(
            ["systemd-nspawn", "-D", str(self.root), "-M", f"edxhooks{self.ssh_port}",
             "--register=no", "--keep-unit", "--boot", "--console=passive"],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, text=True)
        deadline = time.monotonic() + 120  # a wait for the boot, not a timed assertion
        while time.monotonic() < deadline:
            if self.boot.poll() is not None:
                pytest.skip("a container with systemd cannot start here: "
                            + (self.work / "nspawn.log").read_text()[-800:])
            if self.ssh("systemctl is-system-running --wait", check=False).returncode in (0, 1):
                return
            time.sleep(1)
        pytest.skip("the container did not boot in 120 s: "
                    + (self.work / "nspawn.log").read_text()[-800:])

    def stop(self) -> None:
        if self.boot is not None and self.boot.poll() is None:
            self.boot.terminate()  # nspawn: an orderly poweroff of the container
            try:
                self.boot.wait(90)
            except subprocess.TimeoutExpired:
                self.boot.kill()
                self.boot.wait()
        if self.boot is not None:
            self.log.close()

    def ssh(self, command: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        done = _run("ssh", "-i", str(self.key), "-p", str(self.ssh_port), "-o", "BatchMode=yes",
                    "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
                    "-o", "ConnectTimeout=5", "-o", "LogLevel=ERROR", "root@127.0.0.1", command)
        if check:
            assert done.returncode == 0, (command, done.stdout, done.stderr)
        return done

    def playbook(self, lms_url: str, *options: str, wheel: str = "old",
                 config: dict[str, Any] | None = None) -> tuple[int, str, dict[str, int]]:
        inventory = self.work / "inventory.ini"
        inventory.write_text(
            "[edx_hooks]\n"
            f"deb12 ansible_host=127.0.0.1 ansible_port={self.ssh_port} ansible_user=root "
            f"ansible_ssh_private_key_file={self.key} ansible_become=false "
            "ansible_python_interpreter=/usr/bin/python3 "
            "ansible_ssh_common_args='-o StrictHostKeyChecking=no "
            "-o UserKnownHostsFile=/dev/null'\n")
        variables = {
            "edx_hooks_pip_spec": f"/srv/wheels/{self.wheels[wheel]}",
            "edx_hooks_pip_extra_args": ["--no-index", "--find-links", "/srv/wheels"],
            # the predecessor's switch turns the include on
            "WEBHOOK_RECEIVER_ENABLE_NGINX_INCLUDE": True,
            "edx_hooks_nginx_include_path": INCLUDE,
            "edx_hooks_config": {
                "server": {"address": "127.0.0.1", "port": self.port},
                "database": {"url": f"sqlite+aiosqlite:///{DB}"},
                "lms": {"base_url": lms_url, "client_id": "edx-hooks",
                        "connect_timeout_seconds": 5, "timeout_seconds": 10,
                        "seconds_per_learner": 1, "max_calls_per_minute": 0},
                "shopify": [{"shop_domain": SHOP}],
                **(config or {}),
            },
            "edx_hooks_secrets": {"EDX_HOOKS_LMS_CLIENT_SECRET": LMS_SECRET,
                                  "EDX_HOOKS_SHOPIFY_0_SECRET": SHOP_SECRET},
        }
        (self.work / "vars.json").write_text(json.dumps(variables))
        env = {**os.environ, "ANSIBLE_HOST_KEY_CHECKING": "False", "ANSIBLE_NOCOLOR": "1",
               "ANSIBLE_FORCE_COLOR": "0", "ANSIBLE_RETRY_FILES_ENABLED": "0"}
        done = _run("ansible-playbook", "-i", str(inventory), "-e", f"@{self.work / 'vars.json'}",
                    *options, str(ANSIBLE / "site.yml"), env=env, cwd=str(self.work))
        output = done.stdout + done.stderr
        self.outputs.append(output)
        recap = re.search(r"^deb12\s+:\s+(.*)$", output, re.M)
        counts = {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", recap.group(1))} if recap \
            else {}
        return done.returncode, output, counts

    def show(self) -> dict[str, str]:
        out = self.ssh("systemctl show edx-hooks").stdout
        return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)

    def orders(self) -> list[tuple[str, str]]:
        """(order id, its items' states) read from the database the config names."""
        path = self.root / DB.lstrip("/")
        with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as conn:
            return conn.execute(
                "SELECT o.external_id, group_concat(i.state) FROM orders o "
                "JOIN items i ON i.order_id = o.id GROUP BY o.id ORDER BY o.id").fetchall()


class LMSThread:
    """The stand-in LMS on a real loopback socket, in a thread of its own."""

    def __init__(self) -> None:
        self.lms = StandinLMS(client_secret=LMS_SECRET)
        self.ready = threading.Event()
        self.thread = threading.Thread(target=asyncio.run, args=(self._serve(),), daemon=True)

    async def _serve(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.stopping = asyncio.Event()
        await self.lms.start()
        self.ready.set()
        await self.stopping.wait()
        await self.lms.stop()

    def __enter__(self) -> StandinLMS:
        self.thread.start()
        assert self.ready.wait(30)
        return self.lms

    def __exit__(self, *exc: Any) -> None:
        self.loop.call_soon_threadsafe(self.stopping.set)
        self.thread.join(30)


def _version() -> str:
    text = (ROOT / "edx_hooks" / "__init__.py").read_text()
    return re.search(r'^__version__ = "([^"]+)"', text, re.M).group(1)


def _build_wheels(work: Path) -> tuple[Path, dict[str, str]]:
    """Two wheels of this checkout (its tracked and new files), the second a
    newer version; and the wheels of their dependencies, for an index-less
    install in the container."""
    files = _run("git", "ls-files", "-co", "--exclude-standard", cwd=ROOT).stdout.split()
    wheelhouse = work / "wheels"
    wheelhouse.mkdir()
    names = {}
    for label, local in (("old", "ansible.1"), ("new", "ansible.2")):
        src = work / f"src-{label}"
        for name in files:
            if (ROOT / name).is_file():
                (src / name).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(ROOT / name, src / name)
        init = src / "edx_hooks" / "__init__.py"
        init.write_text(init.read_text().replace(f'"{_version()}"', f'"{_version()}+{local}"'))
        done = _run(sys.executable, "-m", "pip", "wheel", "-q", "--no-deps",
                    "-w", str(wheelhouse), str(src))
        assert done.returncode == 0, done.stderr
        names[label] = next(p.name for p in wheelhouse.glob(f"*{local}*.whl"))
    done = _run(sys.executable, "-m", "pip", "download", "-q", "--only-binary=:all:",
                "-d", str(wheelhouse), str(wheelhouse / names["old"]))
    assert done.returncode == 0, done.stderr
    return wheelhouse, names


def _send_order(port: int, email: str) -> dict[str, Any]:
    order = shopify_order(line_item(COURSE, email=email))
    body = json.dumps(order).encode()
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/webhooks/shopify/order/create", data=body, method="POST",
        headers={"Content-Type": "application/json", "X-Shopify-Topic": "orders/create",
                 "X-Shopify-Shop-Domain": SHOP, "X-Shopify-API-Version": "2026-10",
                 "X-Shopify-Hmac-Sha256": shopify_signature(body, SHOP_SECRET),
                 "X-Shopify-Webhook-Id": f"wh-{order['id']}"})
    with urllib.request.urlopen(request, timeout=30) as answer:
        assert answer.status == 200
    return order


def _wait_enrolled(lms: StandinLMS, username: str) -> None:
    deadline = time.monotonic() + 120  # a wait, not a timed assertion
    while (username, COURSE) not in lms.enrollments and time.monotonic() < deadline:
        time.sleep(0.5)
    assert (username, COURSE) in lms.enrollments, lms.calls


@pytest.fixture(scope="module")
def machine():
    if os.geteuid() != 0:
        pytest.skip("needs root (debootstrap, systemd-nspawn)")
    for tool in ("debootstrap", "systemd-nspawn", "ssh", "ssh-keygen", "cp"):
        if not shutil.which(tool):
            pytest.skip(f"{tool} is not installed (.ci/run installs it)")
    work = Path(tempfile.mkdtemp(prefix="edx-hooks-ansible-", dir="/var/tmp"))
    try:
        wheelhouse, names = _build_wheels(work)
        box = Machine(work, names)
        box.prepare(wheelhouse)
        box.start()
        try:
            with LMSThread() as lms:
                lms.registered.update({"first@example.org", "second@example.org"})
                box.lms = lms
                yield box
        finally:
            box.stop()
            for output in box.outputs:  # nowhere, in any run's output
                assert LMS_SECRET not in output and SHOP_SECRET not in output
    finally:
        shutil.rmtree(work, ignore_errors=True)


# --- the runs, in this order ------------------------------------------------------

def test_first_run_deploys_a_hardened_service_behind_nginx_that_enrolls(machine):
    rc, output, counts = machine.playbook(machine.lms.url)
    assert rc == 0, output[-6000:]
    assert counts["failed"] == 0 and counts["changed"] > 0

    show = machine.show()
    assert show["ActiveState"] == "active" and show["SubState"] == "running"
    assert show["User"] == "edx-hooks"
    assert show["NoNewPrivileges"] == "yes"
    assert show["ProtectSystem"] == "strict"
    assert show["ProtectHome"] == "yes"
    assert show["PrivateTmp"] == "yes" and show["PrivateDevices"] == "yes"
    assert show["FragmentPath"] == "/etc/systemd/system/edx-hooks.service"
    assert "/srv/edx-hooks/data" in show["ReadWritePaths"]
    assert "/opt/edx-hooks/venv/bin/edx-hooks" in show["ExecStart"]
    assert show["UnitFileState"] == "enabled"
    # the project's own unit, byte for byte, from the installed package
    installed = machine.root / "etc/systemd/system/edx-hooks.service"
    assert installed.read_bytes() == (ROOT / "systemd" / "edx-hooks.service").read_bytes()

    secrets = machine.root / "etc/edx-hooks/secrets.env"
    assert secrets.stat().st_mode & 0o777 == 0o600 and secrets.stat().st_uid == 0
    toml = (machine.root / "etc/edx-hooks/edx-hooks.toml").read_text()
    assert "xheaders = true" in toml  # behind nginx
    assert LMS_SECRET not in toml and SHOP_SECRET not in toml
    include = (machine.root / INCLUDE.lstrip("/")).read_text()
    assert f"proxy_pass http://127.0.0.1:{machine.port};" in include

    order = _send_order(machine.nginx_port, "first@example.org")
    _wait_enrolled(machine.lms, "first")
    assert (machine.root / DB.lstrip("/")).is_file()  # where the config says
    assert not (machine.root / "var/lib/edx-hooks/edx-hooks.db").exists()
    assert machine.orders() == [(str(order["id"]), "enrolled")]
    journal = machine.ssh("journalctl -u edx-hooks --no-pager").stdout
    assert LMS_SECRET not in journal and SHOP_SECRET not in journal


def test_second_run_changes_nothing(machine):
    pid = machine.show()["MainPID"]
    rc, output, counts = machine.playbook(machine.lms.url)
    assert rc == 0, output[-6000:]
    assert counts["changed"] == 0, output[-6000:]
    assert machine.show()["MainPID"] == pid


def test_check_diff_on_the_converged_host_is_clean(machine):
    rc, output, counts = machine.playbook(machine.lms.url, "--check", "--diff")
    assert rc == 0, output[-6000:]
    assert counts["changed"] == 0, output[-6000:]
    assert "--- before" not in output


def test_check_diff_shows_a_change_without_making_it(machine):
    toml = (machine.root / "etc/edx-hooks/edx-hooks.toml").read_text()
    rc, output, counts = machine.playbook(machine.lms.url, "--check", "--diff",
                                          config={"retry": {"attempts": 4}})
    assert rc == 0, output[-6000:]
    assert counts["changed"] > 0 and "+attempts = 4" in output
    assert (machine.root / "etc/edx-hooks/edx-hooks.toml").read_text() == toml


def test_a_newer_pip_spec_upgrades_and_keeps_the_orders(machine):
    before = machine.orders()
    pid = machine.show()["MainPID"]
    rc, output, counts = machine.playbook(machine.lms.url, wheel="new")
    assert rc == 0, output[-6000:]
    assert counts["changed"] > 0
    version = machine.ssh("/opt/edx-hooks/venv/bin/edx-hooks --version").stdout.strip()
    assert version == f"edx-hooks {_version()}+ansible.2"
    show = machine.show()
    assert show["ActiveState"] == "active" and show["MainPID"] != pid  # restarted
    assert machine.orders() == before
    order = _send_order(machine.nginx_port, "second@example.org")
    _wait_enrolled(machine.lms, "second")
    assert machine.orders() == before + [(str(order["id"]), "enrolled")]


def test_a_bad_value_fails_before_the_restart_and_the_service_keeps_running(machine):
    toml = (machine.root / "etc/edx-hooks/edx-hooks.toml").read_bytes()
    pid = machine.show()["MainPID"]
    rc, output, counts = machine.playbook(machine.lms.url, wheel="new",
                                          config={"retry": {"attempts": "many"}})
    assert rc != 0 and counts["failed"] == 1, output[-6000:]
    assert "check-config refused the new config" in output
    assert "retry.attempts" in output  # check-config's reason reaches the operator
    assert "RUNNING HANDLER [edx_hooks : Restart edx-hooks]" not in output
    assert (machine.root / "etc/edx-hooks/edx-hooks.toml").read_bytes() == toml
    show = machine.show()
    assert show["ActiveState"] == "active" and show["MainPID"] == pid
    # and it still works
    order = _send_order(machine.nginx_port, "first@example.org")
    deadline = time.monotonic() + 120
    while machine.orders()[-1][0] != str(order["id"]) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert machine.orders()[-1][0] == str(order["id"])
