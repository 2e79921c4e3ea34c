"""Configuration: defaults, environment overrides, and one-line errors."""

from __future__ import annotations

import pytest

from edx_hooks import config
from edx_hooks.config import ConfigError

from .conftest import write_config

MINIMAL = {"lms": {"base_url": "https://lms.example.org/", "client_id": "c",
                   "client_secret": "s"}}


def load(tmp_path, sections, env=None):
    return config.load(str(write_config(tmp_path / "c.toml", sections)), env or {})


def error(tmp_path, sections, env=None) -> str:
    with pytest.raises(ConfigError) as e:
        load(tmp_path, sections, env)
    message = str(e.value)
    assert "\n" not in message
    return message


def test_defaults(tmp_path):
    cfg = load(tmp_path, MINIMAL)
    assert (cfg.server.address, cfg.server.port, cfg.server.xheaders) == ("127.0.0.1", 8090, False)
    assert cfg.server.max_body_size == 2 * 1024 * 1024
    assert cfg.database.url == "sqlite+aiosqlite:///edx-hooks.db"
    assert cfg.database.jobs_url == "sqlite:///edx-hooks.db.jobs.db"
    assert cfg.lms.base_url == "https://lms.example.org"  # trailing slash dropped
    assert (cfg.lms.auto_enroll, cfg.lms.email_students) == (True, True)
    assert cfg.lms.timeout_seconds == 10
    assert (cfg.retry.attempts, cfg.retry.delay_seconds) == (3, 180)
    assert cfg.shops == {"shopify": (), "woocommerce": ()} and cfg.storefronts == []


def test_environment_wins_over_the_file(tmp_path):
    sections = {**MINIMAL, "shopify": {"shop_domain": "a.myshopify.com", "secret": "file"}}
    cfg = load(tmp_path, sections, {"EDX_HOOKS_SHOPIFY_SECRET": "from-env",
                                    "EDX_HOOKS_SERVER_PORT": "9000",
                                    "EDX_HOOKS_SERVER_XHEADERS": "true"})
    assert cfg.shops["shopify"][0].secret == ["from-env"]
    assert cfg.server.port == 9000 and cfg.server.xheaders is True


def test_a_storefront_can_be_configured_from_the_environment_alone(tmp_path):
    cfg = load(tmp_path, MINIMAL, {"EDX_HOOKS_SHOPIFY_SHOP_DOMAIN": "A.myshopify.com",
                                   "EDX_HOOKS_SHOPIFY_SECRET": "x"})
    assert cfg.shops["shopify"][0].shop_domain == "a.myshopify.com"
    assert cfg.storefronts == ["shopify"]


def test_a_catalog_and_a_bundle_from_the_environment_alone(tmp_path):
    """As the Tutor plugin configures it: a bundle's courses as a JSON array."""
    cfg = load(tmp_path, MINIMAL, {
        "EDX_HOOKS_PRODUCTS_0_SKU": "PY-CERT", "EDX_HOOKS_PRODUCTS_0_MODE": "verified",
        "EDX_HOOKS_PRODUCTS_0_COURSES": "course-v1:Demo+PY101+2026",
        "EDX_HOOKS_PRODUCTS_1_SKU": "BUNDLE",
        "EDX_HOOKS_PRODUCTS_1_COURSES":
            '["course-v1:Demo+PY101+2026", "course-v1:Demo+DS201+2026"]',
        "EDX_HOOKS_LOGGING_STREAM": "stdout"})
    assert [(p.sku, p.courses, p.mode) for p in cfg.products] == [
        ("PY-CERT", ["course-v1:Demo+PY101+2026"], "verified"),
        ("BUNDLE", ["course-v1:Demo+PY101+2026", "course-v1:Demo+DS201+2026"], "")]
    assert cfg.logging.stream == "stdout"
    assert "a JSON array of course ids" in error(
        tmp_path, MINIMAL, {"EDX_HOOKS_PRODUCTS_0_SKU": "X",
                            "EDX_HOOKS_PRODUCTS_0_COURSES": '["course-v1:A+B+C",'})


def test_no_file_at_all(tmp_path):
    cfg = config.load(None, {"EDX_HOOKS_LMS_BASE_URL": "http://lms", "EDX_HOOKS_LMS_CLIENT_ID": "c",
                             "EDX_HOOKS_LMS_CLIENT_SECRET": "s"})
    assert cfg.lms.base_url == "http://lms"


@pytest.mark.parametrize("sections, env, expected", [
    ({"lms": {"client_id": "c", "client_secret": "s"}}, {},
     "lms.base_url is required"),
    ({"lms": {**MINIMAL["lms"], "base_url": "lms.example.org"}}, {},
     "lms.base_url = 'lms.example.org' must be an http(s) URL"),
    ({**MINIMAL, "server": {"port": "eighty"}}, {},
     "server.port = 'eighty' must be a whole number from 1 to 65535"),
    (MINIMAL, {"EDX_HOOKS_SERVER_PORT": "99999"},
     "server.port = '99999' (from EDX_HOOKS_SERVER_PORT) must be a whole number"),
    ({**MINIMAL, "shopify": {"shop_domain": "a.myshopify.com"}}, {},
     "shopify.secret is required"),
    ({**MINIMAL, "shopify": {"shop_domain": "a.myshopify.com", "secret": " "}}, {},
     "shopify.secret = <hidden> must not be empty"),
    ({**MINIMAL, "lms_typo": {"x": 1}}, {}, "unknown section [lms_typo]"),
    ({**MINIMAL, "server": {"prot": 80}}, {}, "unknown key server.prot"),
    (MINIMAL, {"EDX_HOOKS_LMS_CLIENTSECRET": "x"},
     "unknown environment variable EDX_HOOKS_LMS_CLIENTSECRET"),
    ({**MINIMAL, "server": {"xheaders": "maybe"}}, {},
     "server.xheaders = 'maybe' must be true or false"),
    ({**MINIMAL, "database": {"url": "sqlite:///x.db"}}, {}, "SQLite needs the async driver"),
    ({**MINIMAL, "server": {"public_url": "https://lms.example.org/webhooks"}}, {},
     "server.public_url = 'https://lms.example.org/webhooks' must be the root URL"),
])
def test_bad_values_name_the_key_and_the_fix(tmp_path, sections, env, expected):
    message = error(tmp_path, sections, env)
    assert expected in message
    key = expected.split()[0] if "." in expected.split()[0] else None
    if key and "unknown" not in expected:
        assert "EDX_HOOKS_" in message  # says where to set it


def test_secret_values_are_never_echoed(tmp_path):
    message = error(tmp_path, MINIMAL, {"EDX_HOOKS_LMS_CLIENT_SECRET": ""})
    assert "<hidden>" in message


def test_unreadable_toml(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text("[lms\nbase_url = 1")
    with pytest.raises(ConfigError, match="not valid TOML"):
        config.load(str(path), {})
    with pytest.raises(ConfigError, match="not found"):
        config.load(str(tmp_path / "missing.toml"), {})


def test_example_config_documents_every_key():
    import pathlib
    example = pathlib.Path(__file__).parent.parent / "conf" / "edx-hooks.example.toml"
    text = example.read_text()
    for setting in config.settings():
        assert f"[{setting.section}]" in text
        assert f"{setting.key} =" in text, setting.name
    # and it loads, with no shop switched on and its LMS secret a placeholder
    # that serve and check-config refuse
    cfg = config.load(str(example), {})
    assert cfg.storefronts == []
    with pytest.raises(ConfigError, match="^lms.client_secret is a placeholder"):
        config.check_secrets(cfg)


@pytest.mark.parametrize("value", ["set-me-in-EDX_HOOKS_WOOCOMMERCE_SECRET", "set-me",
                                   ["a-real-secret-of-some-length", "SET-ME-too"]])
def test_a_placeholder_secret_is_refused_naming_the_key_and_the_fix(tmp_path, value):
    cfg = load(tmp_path, {**MINIMAL, "woocommerce": {"source": "https://shop.example/",
                                                     "secret": value}})
    with pytest.raises(ConfigError) as e:
        config.check_secrets(cfg)
    message = str(e.value)
    assert message == (
        "woocommerce.secret is a placeholder, public in the example config, so anyone could "
        "sign with it: set secret in [woocommerce] or EDX_HOOKS_WOOCOMMERCE_SECRET, or "
        "remove [woocommerce] to switch woocommerce off")
    # the environment's name is said when the placeholder came from there
    cfg = load(tmp_path, MINIMAL, {"EDX_HOOKS_LMS_CLIENT_SECRET": "set-me-in-EDX_HOOKS_LMS_"
                                                                  "CLIENT_SECRET"})
    with pytest.raises(ConfigError, match=r"^lms.client_secret \(from "
                                          r"EDX_HOOKS_LMS_CLIENT_SECRET\) is a placeholder"):
        config.check_secrets(cfg)


def test_a_weak_secret_is_a_warning_not_a_refusal(tmp_path):
    cfg = load(tmp_path, {**MINIMAL, "shopify": {"shop_domain": "a.myshopify.com",
                                                 "secret": ["short", "x" * 16]}})
    config.check_secrets(cfg)  # no refusal
    assert cfg.weak_secrets == (
        "lms.client_secret is shorter than 16 characters, easy to guess: set client_secret "
        "in [lms] or EDX_HOOKS_LMS_CLIENT_SECRET to a longer one (letters and digits)",
        "shopify.secret is shorter than 16 characters, easy to guess: set secret in "
        "[shopify] or EDX_HOOKS_SHOPIFY_SECRET to a longer one (letters and digits)")


def test_several_shops_and_secret_lists(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text("""
[lms]
base_url = "https://lms.example.org"
client_id = "c"
client_secret = "s"
[[shopify]]
shop_domain = "live.myshopify.com"
secret = ["new-secret", "old-secret"]
[[shopify]]
shop_domain = "staging.myshopify.com"
secret = "staging-secret"
accept_test_orders = true
""")
    cfg = config.load(str(path), {"EDX_HOOKS_SHOPIFY_1_SECRET": "from-env",
                                  "EDX_HOOKS_SHOPIFY_0_UNENROLL_ON_REFUND": "true"})
    live, staging = cfg.shops["shopify"]
    assert live.secret == ["new-secret", "old-secret"] and live.unenroll_on_refund is True
    assert staging.secret == ["from-env"] and staging.unenroll_on_refund is False
    assert cfg.secrets_in_file == ("lms.client_secret", "shopify[0].secret")
    with pytest.raises(ConfigError, match="name one in the environment"):
        config.load(str(path), {"EDX_HOOKS_SHOPIFY_SECRET": "which one?"})
    env_list = config.load(str(path), {"EDX_HOOKS_SHOPIFY_0_SECRET": '["a", "b"]'})
    assert env_list.shops["shopify"][0].secret == ["a", "b"]


def test_two_shops_with_one_domain_are_refused(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text("""
[lms]
base_url = "https://lms.example.org"
client_id = "c"
client_secret = "s"
[[woocommerce]]
source = "https://shop.example/"
secret = "a"
[[woocommerce]]
source = "HTTPS://SHOP.EXAMPLE"
secret = "b"
""")
    with pytest.raises(ConfigError,
                       match="woocommerce\\[0\\] and woocommerce\\[1\\] have the same"):
        config.load(str(path), {})


def test_an_empty_secret_in_a_list_is_refused(tmp_path):
    message = error(tmp_path, {**MINIMAL, "shopify": {"shop_domain": "a.myshopify.com",
                                                      "secret": ["ok", ""]}})
    assert "shopify.secret = <hidden> must not be empty" in message


@pytest.mark.parametrize("name", ["EDX_HOOKS_SHOPFY_SECRET", "EDX_HOOKS_WOO_SECRET",
                                  "EDX_HOOKS_LMSCLIENT_SECRET"])
def test_a_misspelled_section_in_the_environment_is_refused(tmp_path, name):
    message = error(tmp_path, MINIMAL, {name: "a-secret-that-would-be-ignored"})
    assert message.startswith(f"unknown environment variable {name} (no section ")
    assert message.endswith("unset it or fix its spelling")
    assert "a-secret-that-would-be-ignored" not in message


def test_the_settings_in_force_say_where_each_came_from_and_hide_secrets(tmp_path):
    cfg = load(tmp_path, {**MINIMAL, "retry": {"attempts": 5},
                          "shopify": {"shop_domain": "a.myshopify.com",
                                      "secret": "file-secret-file-secret"}},
               {"EDX_HOOKS_SHOPIFY_SECRET": "env-secret-env-secret",
                "EDX_HOOKS_LMS_API_KEY": "the-lms-api-key"})
    found = {f["setting"]: (f["value"], f["source"]) for f in config.in_force(cfg)}
    assert found["retry.attempts"] == (5, "file")
    assert found["retry.delay_seconds"] == (180.0, "default")
    assert found["lms.client_secret"] == ("<hidden>", "file")
    assert found["shopify.secret"] == ("<hidden>", "environment (EDX_HOOKS_SHOPIFY_SECRET)")
    assert found["lms.api_key"] == ("<hidden>", "environment (EDX_HOOKS_LMS_API_KEY)")
    assert found["woocommerce"] == (None, "off: no section")
    assert found["products"] == (None, "no catalog")
    assert not any(secret in repr(found) for secret in (
        "file-secret", "env-secret", "the-lms-api-key"))
