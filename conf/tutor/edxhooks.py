"""edx-hooks under Tutor: shop order webhooks in, Open edX enrollments out.

One file, installed and enabled with::

    tutor plugins install /path/to/edx-hooks/conf/tutor/edxhooks.py
    tutor plugins enable edxhooks
    tutor config save

It adds:

- an ``edxhooks`` service (Docker Compose; one replica with the ``Recreate``
  strategy and a volume claim on Kubernetes): edx-hooks with its SQLite
  files in a data volume, configured from the ``EDXHOOKS_*`` settings below
  through edx-hooks' own ``EDX_HOOKS_*`` environment variables;
- its image (``tutor images build edxhooks``), built from a checkout of
  edx-hooks given with ``tutor mounts add /path/to/edx-hooks``, or from
  ``EDXHOOKS_PIP_SPEC``;
- ``/webhooks/*`` on the LMS host routed to it by Caddy;
- the LMS side (``tutor local do init --limit=edxhooks``): a global-staff
  service user, its client-credentials OAuth2 application, the web console's
  authorization-code application (callback on the LMS host), and the bulk
  enrollment view turned on.

Settings (``tutor config save --set KEY=VALUE``; values are YAML):

- ``EDXHOOKS_SHOPIFY``, ``EDXHOOKS_WOOCOMMERCE``: the shops, a list of
  tables with the keys of edx-hooks' ``[[shopify]]`` / ``[[woocommerce]]``,
  including the API credentials that let it read missed orders back
  (reconcile): ``admin_token`` and ``api_version`` for Shopify,
  ``consumer_key``, ``consumer_secret`` and ``reactivate_webhooks`` for
  WooCommerce, e.g. ``[{source: "https://shop.example/", secret: ...,
  consumer_key: ck_..., consumer_secret: cs_...}]``;
- ``EDXHOOKS_PRODUCTS``: the catalog, the keys of ``[[products]]``;
- ``EDXHOOKS_SETTINGS``: any other edx-hooks setting, by section, e.g.
  ``{lms: {max_calls_per_minute: 60, default_mode: verified}, retry: {attempts: 5},
  reconcile: {minutes: 15, first_lookback_hours: 72}}``
  (``edx-hooks settings`` lists them);
- ``EDXHOOKS_SERVICE_USERNAME``, ``EDXHOOKS_SERVICE_EMAIL``,
  ``EDXHOOKS_OAUTH2_CLIENT_ID``, ``EDXHOOKS_OAUTH2_CLIENT_SECRET`` (generated
  once): the LMS user and OAuth2 client it calls the LMS as;
- ``EDXHOOKS_CONSOLE`` (true): the staff's web console at
  ``/webhooks/console/``; ``EDXHOOKS_CONSOLE_CLIENT_ID``,
  ``EDXHOOKS_CONSOLE_CLIENT_SECRET`` and ``EDXHOOKS_CONSOLE_COOKIE_SECRET``
  (generated once); who else may sign in: ``EDXHOOKS_SETTINGS``'s
  ``{console: {staff_usernames: [...]}}``;
- ``EDXHOOKS_DOCKER_IMAGE``, ``EDXHOOKS_PIP_SPEC``: the image and what it
  installs when no checkout is mounted.

The templates are in this file, so that ``tutor plugins install`` (which
copies only the file) is enough. The two that Tutor must render as files
(the Dockerfile, and the client secret for the init task) are written to a
temporary folder while Tutor runs.
"""

from __future__ import annotations

import atexit
import json
import os
import shlex
import shutil
import tempfile
import typing as t

from tutor import exceptions, fmt, hooks
from tutor.__about__ import __version__ as TUTOR_VERSION

#: edx-hooks' version: the image's tag (the project's tests check it)
__version__ = "0.2.0.dev0"

#: the Tutor majors of the two most recent Open edX releases: Ulmo, Verawood
SUPPORTED_TUTOR = (21, 22)
#: sections of several tables: the storefronts and the catalog
LISTS = {"EDXHOOKS_SHOPIFY": "shopify", "EDXHOOKS_WOOCOMMERCE": "woocommerce",
         "EDXHOOKS_PRODUCTS": "products"}
#: the user edx-hooks runs as in its image (also the owner of its volume)
APP_UID = 1000

if int(TUTOR_VERSION.split(".")[0]) not in SUPPORTED_TUTOR:
    fmt.echo_alert(f"edxhooks: made for Tutor {' and '.join(map(str, SUPPORTED_TUTOR))}; this "
                   f"is Tutor {TUTOR_VERSION}: check the rendered files before launching")

hooks.Filters.CONFIG_DEFAULTS.add_items([
    ("EDXHOOKS_VERSION", __version__),
    ("EDXHOOKS_DOCKER_IMAGE", "{{ DOCKER_REGISTRY }}edx-hooks:{{ EDXHOOKS_VERSION }}"),
    ("EDXHOOKS_PIP_SPEC", ""),
    ("EDXHOOKS_SERVICE_USERNAME", "edx-hooks"),
    ("EDXHOOKS_SERVICE_EMAIL", "edx-hooks@{{ LMS_HOST }}"),
    ("EDXHOOKS_OAUTH2_CLIENT_ID", "edx-hooks"),
    ("EDXHOOKS_SHOPIFY", []),
    ("EDXHOOKS_WOOCOMMERCE", []),
    ("EDXHOOKS_PRODUCTS", []),
    ("EDXHOOKS_SETTINGS", {}),
    # the staff's web console at /webhooks/console/, signing in with Open edX
    ("EDXHOOKS_CONSOLE", True),
    ("EDXHOOKS_CONSOLE_CLIENT_ID", "edx-hooks-console"),
])
hooks.Filters.CONFIG_UNIQUE.add_items([
    ("EDXHOOKS_OAUTH2_CLIENT_SECRET", "{{ 32|random_string }}"),
    ("EDXHOOKS_CONSOLE_CLIENT_SECRET", "{{ 32|random_string }}"),
    # kept between restarts, so that a restart does not sign the staff out
    ("EDXHOOKS_CONSOLE_COOKIE_SECRET", "{{ 32|random_string }}"),
])


#: settings the plugin sets itself: Caddy, the volume, the health check and
#: the container's log depend on them (the OAuth2 client: EDXHOOKS_OAUTH2_*)
RESERVED = {"server": {"address", "port", "xheaders"}, "database": {"url", "jobs_url"},
            "logging": {"stream", "syslog", "syslog_address"},
            "lms": {"client_id", "client_secret"},
            "console": {"client_id", "client_secret"}}
#: a stop's bound in edx-hooks: the deadline of a full batch's call,
#: lms.connect_timeout_seconds + lms.timeout_seconds + lms.seconds_per_learner
#: x lms.batch_size (5 + 10 + 1 x 20 s by default), + 5 s
DRAIN_MARGIN_SECONDS = 5
#: edx-hooks' defaults for the settings the drain's bound reads
LMS_DEFAULTS = {"connect_timeout_seconds": 5.0, "timeout_seconds": 10.0,
                "seconds_per_learner": 1.0, "batch_size": 20}
GRACE_SECONDS = 60


def environment(config: dict[str, t.Any]) -> list[tuple[str, str]]:
    """edx-hooks' environment variables for these ``EDXHOOKS_*`` settings:
    (name, value as a YAML double-quoted string) pairs. A ``$`` is doubled:
    Docker Compose and Kubernetes both read ``$$`` as a literal ``$`` (and
    would expand ``$NAME``, ``${NAME}`` or ``$(NAME)``), and WooCommerce's
    generated secrets often have one."""
    env = {
        # inside the Compose network and the Kubernetes namespace alike
        "EDX_HOOKS_LMS_BASE_URL": "http://lms:8000",
        "EDX_HOOKS_LMS_CLIENT_ID": config["EDXHOOKS_OAUTH2_CLIENT_ID"],
        "EDX_HOOKS_LMS_CLIENT_SECRET": config["EDXHOOKS_OAUTH2_CLIENT_SECRET"],
        # behind Caddy, which sets X-Real-IP to the address it sees
        "EDX_HOOKS_SERVER_XHEADERS": True,
        # what shops call, for the webhook URLs `check-config` lists
        "EDX_HOOKS_SERVER_PUBLIC_URL":
            f"{'https' if config['ENABLE_HTTPS'] else 'http'}://{config['LMS_HOST']}",
    }
    if config.get("EDXHOOKS_CONSOLE"):
        env.update({"EDX_HOOKS_CONSOLE_CLIENT_ID": config["EDXHOOKS_CONSOLE_CLIENT_ID"],
                    "EDX_HOOKS_CONSOLE_CLIENT_SECRET": config["EDXHOOKS_CONSOLE_CLIENT_SECRET"],
                    "EDX_HOOKS_CONSOLE_COOKIE_SECRET": config["EDXHOOKS_CONSOLE_COOKIE_SECRET"]})
    for key, section in LISTS.items():
        tables = config[key]
        if not isinstance(tables, list) or not all(isinstance(x, dict) for x in tables):
            raise exceptions.TutorError(
                f"{key} must be a list of tables, e.g. [{{key: value, ...}}], with the keys "
                f"of edx-hooks' [[{section}]]")
        for n, table in enumerate(tables):
            for name, value in table.items():
                env[f"EDX_HOOKS_{section}_{n}_{name}".upper()] = _value(key, name, value)
    sections = _sections(config["EDXHOOKS_SETTINGS"])
    for section, values in sections.items():
        for name, value in values.items():
            if name in RESERVED.get(section, ()):
                raise exceptions.TutorError(
                    f"EDXHOOKS_SETTINGS: {section}.{name} is the plugin's to set (the route, "
                    "the volume and the logs depend on it): remove it")
            env[f"EDX_HOOKS_{section}_{name}".upper()] = _value("EDXHOOKS_SETTINGS", name, value)
    return [(name, json.dumps(_text(value).replace("$", "$$"), ensure_ascii=False))
            for name, value in env.items()]


def grace_seconds(settings: t.Any) -> int:
    """Long enough for a stop's drain, whatever the LMS timeouts say."""
    lms = _sections(settings).get("lms", {})
    values = {}
    for key, default in LMS_DEFAULTS.items():
        try:
            values[key] = float(lms.get(key, default))
        except (TypeError, ValueError):
            values[key] = 0.0  # edx-hooks refuses it at start, with the key named
    drain = (values["connect_timeout_seconds"] + values["timeout_seconds"]
             + values["seconds_per_learner"] * values["batch_size"])
    return max(GRACE_SECONDS, int(drain) + DRAIN_MARGIN_SECONDS + 15)


def _sections(settings: t.Any) -> dict[str, dict[str, t.Any]]:
    if not isinstance(settings, dict) or not all(isinstance(x, dict) for x in settings.values()):
        raise exceptions.TutorError(
            "EDXHOOKS_SETTINGS must map sections to settings, e.g. "
            "{lms: {max_calls_per_minute: 60}} (`edx-hooks settings` lists them)")
    return settings


def _value(key: str, name: str, value: t.Any) -> t.Any:
    if value is None or isinstance(value, dict):
        raise exceptions.TutorError(f"{key}: {name} must be a string, a number, true/false "
                                    "or a list")
    return value


def _text(value: t.Any) -> str:
    """How edx-hooks reads a value from its environment."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return json.dumps(value, ensure_ascii=False)  # a list of secrets, a bundle's courses
    return str(value)


#: the Tutor settings environment() reads, in the order a template passes them
ENVIRONMENT_KEYS = ("LMS_HOST", "ENABLE_HTTPS", "EDXHOOKS_OAUTH2_CLIENT_ID",
                    "EDXHOOKS_OAUTH2_CLIENT_SECRET", *LISTS, "EDXHOOKS_SETTINGS",
                    "EDXHOOKS_CONSOLE", "EDXHOOKS_CONSOLE_CLIENT_ID",
                    "EDXHOOKS_CONSOLE_CLIENT_SECRET", "EDXHOOKS_CONSOLE_COOKIE_SECRET")


def _environment_of(*values: t.Any) -> list[tuple[str, str]]:
    return environment(dict(zip(ENVIRONMENT_KEYS, values, strict=True)))


hooks.Filters.ENV_TEMPLATE_VARIABLES.add_items([("edxhooks_environment", _environment_of),
                                                ("edxhooks_grace_seconds", grace_seconds)])
hooks.Filters.ENV_TEMPLATE_FILTERS.add_item(("edxhooks_shell", shlex.quote))

#: the arguments of edxhooks_environment() in a template
ENVIRONMENT_CALL = f"edxhooks_environment({', '.join(ENVIRONMENT_KEYS)})"

# ---------------------------------------------------------------- the image

DOCKERFILE = """\
# syntax=docker/dockerfile:1
# edx-hooks, as the edxhooks Tutor plugin runs it: `tutor images build edxhooks`

# The source: a checkout of edx-hooks, given to the build by
# `tutor mounts add /path/to/edx-hooks`; without one, this empty stage stands
# in and EDXHOOKS_PIP_SPEC is installed instead.
FROM scratch AS edx-hooks-src

FROM docker.io/python:3.11-slim-bookworm
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
RUN useradd --uid {{ uid }} --user-group --create-home --home-dir /home/edx-hooks edx-hooks \\
    && install -d -o {{ uid }} -g {{ uid }} /data
RUN --mount=type=bind,from=edx-hooks-src,target=/src,rw \\
    if [ -f /src/setup.py ]; then pip install --no-cache-dir /src; \\
    elif [ -n {{ EDXHOOKS_PIP_SPEC|edxhooks_shell }} ]; then \\
        pip install --no-cache-dir {{ EDXHOOKS_PIP_SPEC|edxhooks_shell }}; \\
    else echo "edxhooks: nothing to install: run 'tutor mounts add /path/to/edx-hooks' \\
(a checkout of edx-hooks), or set EDXHOOKS_PIP_SPEC" >&2; exit 1; fi \\
    && edx-hooks --version

# The SQLite files in the volume; JSON event lines on stdout (the container's
# log); behind Caddy, on the network only.
ENV EDX_HOOKS_SERVER_ADDRESS=0.0.0.0 \\
    EDX_HOOKS_SERVER_PORT=8090 \\
    EDX_HOOKS_DATABASE_URL=sqlite+aiosqlite:////data/edx-hooks.db \\
    EDX_HOOKS_LOGGING_FORMAT=json \\
    EDX_HOOKS_LOGGING_STREAM=stdout
USER {{ uid }}
WORKDIR /data
EXPOSE 8090
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s \\
    CMD ["python", "-c", \\
         "import urllib.request as r; r.urlopen('http://127.0.0.1:8090/healthz', timeout=4)"]
CMD ["edx-hooks", "serve"]
""".replace("{{ uid }}", str(APP_UID))

#: The OAuth2 client secret, for the init task to read in the LMS's job
#: container, where Tutor mounts this folder (a ConfigMap on Kubernetes):
#: Tutor prints an init script as it runs it, so the secret is not in it.
SECRET_FILE = "apps/openedx/config/edxhooks-oauth2-client-secret"
#: the same, for the web console's authorization-code application
CONSOLE_SECRET_FILE = "apps/openedx/config/edxhooks-console-client-secret"

#: the templates, by path under their root (Tutor renders whole folders)
TEMPLATES = {
    "edxhooks/build/edxhooks/Dockerfile": DOCKERFILE,
    SECRET_FILE: "{{ EDXHOOKS_OAUTH2_CLIENT_SECRET }}\n",
    CONSOLE_SECRET_FILE: "{{ EDXHOOKS_CONSOLE_CLIENT_SECRET }}\n",
}
_templates = tempfile.mkdtemp(prefix="tutor-edxhooks-")
atexit.register(shutil.rmtree, _templates, ignore_errors=True)
for _path, _text_of in TEMPLATES.items():
    os.makedirs(os.path.dirname(os.path.join(_templates, _path)), exist_ok=True)
    with open(os.path.join(_templates, _path), "w", encoding="utf-8") as _f:
        _f.write(_text_of)
hooks.Filters.ENV_TEMPLATE_ROOTS.add_item(_templates)
# (the secret's file is under apps/, which Tutor renders into env/apps/ itself)
hooks.Filters.ENV_TEMPLATE_TARGETS.add_item(("edxhooks/build", "plugins"))

hooks.Filters.IMAGES_BUILD.add_item((
    "edxhooks", ("plugins", "edxhooks", "build", "edxhooks"), "{{ EDXHOOKS_DOCKER_IMAGE }}", ()))
# No registry has it to pull; on Kubernetes, push it to yours
# (DOCKER_REGISTRY, or EDXHOOKS_DOCKER_IMAGE): `tutor images push edxhooks`.
hooks.Filters.IMAGES_PUSH.add_item(("edxhooks", "{{ EDXHOOKS_DOCKER_IMAGE }}"))


@hooks.Filters.IMAGES_BUILD_REQUIRED.add()
def _build_required(images: list[str], context_name: str) -> list[str]:
    """`tutor local launch` builds the image: it is on no registry."""
    return [*images, "edxhooks"]


@hooks.Filters.IMAGES_BUILD_MOUNTS.add()
def _source_mount(mounts: list[tuple[str, str]], path: str) -> list[tuple[str, str]]:
    """A checkout of edx-hooks added with `tutor mounts add` is what the
    image installs (whatever its folder is called)."""
    if os.path.isfile(os.path.join(path, "edx_hooks", "__init__.py")):
        mounts.append(("edxhooks", "edx-hooks-src"))
    return mounts


# ---------------------------------------------------------------- the service

hooks.Filters.ENV_PATCHES.add_items([
    ("local-docker-compose-services", """\
edxhooks:
  image: {{ EDXHOOKS_DOCKER_IMAGE }}
  restart: unless-stopped
  # SIGTERM lets LMS calls under way finish (a full batch's deadline + 5 s at most)
  stop_grace_period: {{ edxhooks_grace_seconds(EDXHOOKS_SETTINGS) }}s
  environment:
    {%- for name, value in """ + ENVIRONMENT_CALL + """ %}
    {{ name }}: {{ value }}
    {%- endfor %}
  volumes:
    - ../../data/edxhooks:/data:z
  depends_on:
    - permissions
"""),
    ("local-docker-compose-permissions-volumes", "- ../../data/edxhooks:/mounts/edxhooks:z"),
    ("local-docker-compose-permissions-command", f"setowner {APP_UID} /mounts/edxhooks"),
    ("k8s-deployments", """\
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: edxhooks
  labels:
    app.kubernetes.io/name: edxhooks
spec:
  # Exactly one: its SQLite files and its scheduler live in one process, and
  # Recreate never runs two at once on the volume.
  replicas: 1
  strategy:
    type: Recreate
  selector:
    matchLabels:
      app.kubernetes.io/name: edxhooks
  template:
    metadata:
      labels:
        app.kubernetes.io/name: edxhooks
    spec:
      # SIGTERM lets LMS calls under way finish (a full batch's deadline + 5 s at most)
      terminationGracePeriodSeconds: {{ edxhooks_grace_seconds(EDXHOOKS_SETTINGS) }}
      securityContext:
        runAsUser: """ + str(APP_UID) + """
        runAsGroup: """ + str(APP_UID) + """
        fsGroup: """ + str(APP_UID) + """
        fsGroupChangePolicy: "OnRootMismatch"
      containers:
        - name: edxhooks
          image: {{ EDXHOOKS_DOCKER_IMAGE }}
          env:
            {%- for name, value in """ + ENVIRONMENT_CALL + """ %}
            - name: {{ name }}
              value: {{ value }}
            {%- endfor %}
          ports:
            - containerPort: 8090
          readinessProbe:
            httpGet:
              path: /healthz
              port: 8090
            periodSeconds: 10
          livenessProbe:
            httpGet:
              path: /healthz
              port: 8090
            initialDelaySeconds: 30
            periodSeconds: 30
            timeoutSeconds: 5
            failureThreshold: 4
          securityContext:
            allowPrivilegeEscalation: false
          volumeMounts:
            - mountPath: /data
              name: data
      volumes:
        - name: data
          persistentVolumeClaim:
            claimName: edxhooks
"""),
    ("k8s-services", """\
---
apiVersion: v1
kind: Service
metadata:
  name: edxhooks
  labels:
    app.kubernetes.io/name: edxhooks
spec:
  type: ClusterIP
  ports:
    - port: 8090
      protocol: TCP
  selector:
    app.kubernetes.io/name: edxhooks
"""),
    ("k8s-volumes", """\
---
apiVersion: v1
kind: PersistentVolumeClaim
metadata:
  name: edxhooks
  labels:
    app.kubernetes.io/component: volume
    app.kubernetes.io/name: edxhooks
spec:
  accessModes:
    - ReadWriteOnce
  resources:
    requests:
      storage: 1Gi
"""),
    # ------------------------------------------------------------ the route
    ("caddyfile-lms", """\
# edx-hooks (the edxhooks plugin): shops' webhooks, on the LMS's own host
# (WooCommerce calls only ports 80, 443 and 8080)
handle /webhooks/* {
    # Bodies over 3 MiB are refused here with 413, as the nginx include
    # refuses them: at once when Content-Length says so, else when the body
    # grows past it. Up to that, edx-hooks answers (and records) a body over
    # its own limit (server.max_body_size, 2 MiB) itself.
    @edxhooks_too_large expression `{http.request.header.Content-Length}.matches("^[0-9]+$")
        && int({http.request.header.Content-Length}) > 3145728`
    respond @edxhooks_too_large 413
    request_body {
        max_size 3MiB
    }
    reverse_proxy edxhooks:8090 {
        # the address Caddy sees, never one the client claims
        header_up X-Real-IP {remote_host}
        transport http {
            dial_timeout 2s
            response_header_timeout 10s
        }
    }
}
"""),
    # ------------------------------------------------------------ the LMS side
    ("openedx-lms-common-settings", """\
# edx-hooks: the bulk enrollment view it calls (Ulmo reads FEATURES, Verawood the setting)
FEATURES["ENABLE_BULK_ENROLLMENT_VIEW"] = True
ENABLE_BULK_ENROLLMENT_VIEW = True
"""),
])

INIT_LMS = """\
# edx-hooks: its LMS user (global staff, which bulk enrollment needs; no
# password) and its client-credentials OAuth2 application; both idempotent.
# manage_user sets the flags and groups to exactly these: the user is
# edx-hooks' alone.
./manage.py lms manage_user {{ EDXHOOKS_SERVICE_USERNAME|edxhooks_shell }} \\
    {{ EDXHOOKS_SERVICE_EMAIL|edxhooks_shell }} --staff --unusable-password
# create_dot_application logs the client secret (or its hash): neither gets
# into this output, nor does the secret anywhere else (a traceback, say).
edxhooks_hide() {
    EDXHOOKS_HIDE="$edxhooks_secret" awk '{
        s = ENVIRON["EDXHOOKS_HIDE"]; rest = $0; out = ""
        while (s != "" && (i = index(rest, s)) > 0) {
            out = out substr(rest, 1, i - 1) "<hidden>"; rest = substr(rest, i + length(s))
        }
        print out rest }' \
    | sed -E 's/(client_secret:? *)[^ ,]+/\\1<hidden>/g'
}
edxhooks_secret=$(cat /openedx/config/""" + SECRET_FILE.rsplit("/", 1)[1] + """)
edxhooks_status=0
edxhooks_output=$(./manage.py lms create_dot_application --update \\
    --grant-type client-credentials \\
    --client-id {{ EDXHOOKS_OAUTH2_CLIENT_ID|edxhooks_shell }} \\
    --client-secret "$edxhooks_secret" \\
    edx-hooks {{ EDXHOOKS_SERVICE_USERNAME|edxhooks_shell }} 2>&1) || edxhooks_status=$?
printf '%s\\n' "$edxhooks_output" | edxhooks_hide
if [ "$edxhooks_status" -ne 0 ]; then exit "$edxhooks_status"; fi
echo "edx-hooks: its LMS user and OAuth2 client are ready"
{% if EDXHOOKS_CONSOLE %}
# The web console's sign-in: an authorization-code application whose
# callback is on the LMS host; a signed-in user is not asked to approve.
edxhooks_secret=$(cat /openedx/config/""" + CONSOLE_SECRET_FILE.rsplit("/", 1)[1] + """)
edxhooks_status=0
edxhooks_output=$(./manage.py lms create_dot_application --update \\
    --grant-type authorization-code --skip-authorization \\
    --redirect-uris {{ (("https" if ENABLE_HTTPS else "http") ~ "://" ~ LMS_HOST
                        ~ "/webhooks/console/signed-in")|edxhooks_shell }} \\
    --client-id {{ EDXHOOKS_CONSOLE_CLIENT_ID|edxhooks_shell }} \\
    --client-secret "$edxhooks_secret" \\
    edx-hooks-console {{ EDXHOOKS_SERVICE_USERNAME|edxhooks_shell }} 2>&1) \\
    || edxhooks_status=$?
printf '%s\\n' "$edxhooks_output" | edxhooks_hide
if [ "$edxhooks_status" -ne 0 ]; then exit "$edxhooks_status"; fi
echo "edx-hooks: the web console's OAuth2 application is ready"
{% endif %}
"""
hooks.Filters.CLI_DO_INIT_TASKS.add_item(("lms", INIT_LMS))
