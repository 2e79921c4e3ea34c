"""One place per storefront: routes, settings, the command line and the
README follow from the storefront modules' declarations. A storefront made
here, in the test, is served, configured and enrolled through without any
other module knowing it."""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import pytest

from edx_hooks import config
from edx_hooks.cli import parser
from edx_hooks.store import NewOrder
from edx_hooks.storefronts import (
    STOREFRONTS,
    Endpoint,
    Outcome,
    Storefront,
    line_items,
    parse_json_object,
    rejected,
    signature_valid,
)

from .conftest import shopify_signature, until

README = (Path(__file__).parent.parent / "README.md").read_text()


# -- a storefront of our own, as a new module would declare it

@dataclasses.dataclass(frozen=True, kw_only=True)
class DemoShop:
    shop: str = config.setting(config.REQUIRED, config.nonempty, "the shop's name")
    secret: list[str] = config.setting(config.REQUIRED, config.secrets, "its signing secret")


def demo_receive(headers: Mapping[str, str], body: bytes, shops: Sequence[DemoShop],
                 endpoint: Endpoint) -> Outcome:
    shop = next((s for s in shops if s.shop == headers.get("X-Demo-Shop")), None)
    if shop is None:
        return rejected(403, "unknown-shop")
    if not signature_valid(body, shop.secret, headers.get("X-Demo-Signature", "")):
        return rejected(403, "bad-signature", shop.shop)
    doc = parse_json_object(body)
    if doc is None or "id" not in doc:
        return rejected(400, "body-not-json-object", shop.shop)
    order = NewOrder(provider="demo", shop=shop.shop, external_id=str(doc["id"]),
                     name=f"D-{doc['id']}",
                     items=line_items(doc.get("lines"), lambda line: line.get("learner"),
                                      "the line's learner"))
    return Outcome(200, "accepted", shop.shop, order)


def demo_verified(headers: Mapping[str, str], body: bytes, shops: Sequence[DemoShop]) -> bool:
    shop = next((s for s in shops if s.shop == headers.get("X-Demo-Shop")), None)
    return shop is not None and signature_valid(body, shop.secret,
                                                headers.get("X-Demo-Signature", ""))


DEMO = Storefront(name="demo", receive=demo_receive, verified=demo_verified, settings=DemoShop,
                  shop_key="shop",
                  endpoints=(Endpoint("order", ("order",), "enrolls"),))


@pytest.mark.gen_test
async def test_a_storefront_is_one_declaration(harness, lms, monkeypatch):
    monkeypatch.setitem(STOREFRONTS, "demo", DEMO)
    await harness.start(demo={"shop": "demo-shop", "secret": "demo-secret"})
    body = json.dumps({"id": 7, "lines": [{"id": 1, "sku": "course-v1:Demo+PY101+2026",
                                           "learner": "demo@example.org"}]}).encode()
    response = await harness.request("/webhooks/demo/order/", body=body, headers={
        "X-Demo-Shop": "demo-shop", "X-Demo-Signature": shopify_signature(body, "demo-secret")})
    assert response.code == 200
    await until(lambda: harness.items() and harness.items()[0]["state"] == "enrolled")
    assert lms.learners()[0].email == "demo@example.org"
    assert harness.db("SELECT provider, name FROM orders") == [("demo", "D-7")]
    # its settings are settings like any other
    assert "demo.secret" in config.describe()
    assert parser().parse_args(["order", "demo", "7"]).provider == "demo"


def test_a_storefront_section_is_validated_like_the_others(tmp_path, monkeypatch):
    monkeypatch.setitem(STOREFRONTS, "demo", DEMO)
    lms = '[lms]\nbase_url = "https://lms.example.org"\nclient_id = "c"\nclient_secret = "s"\n'
    path = tmp_path / "c.toml"
    path.write_text(lms + '[[demo]]\nshop = "a"\nsecret = "x"\n[[demo]]\nshop = "a"\n'
                          'secret = "y"\n')
    with pytest.raises(config.ConfigError, match=r"demo\[0\] and demo\[1\] have the same shop"):
        config.load(str(path), {})
    path.write_text(lms + '[demo]\nshop = "a"\n')
    with pytest.raises(config.ConfigError, match="demo.secret is required"):
        config.load(str(path), {})
    cfg = config.load(str(path), {"EDX_HOOKS_DEMO_SECRET": "from-env"})
    assert cfg.shops["demo"] == (DemoShop(shop="a", secret=["from-env"]),)
    assert "from-env" not in repr(cfg)  # secrets stay out of every repr


# -- the README's tables follow the registry

def test_the_readme_names_every_endpoint_and_no_other():
    declared = {f"/webhooks/{name}/{e.path}" for name, sf in STOREFRONTS.items()
                for e in sf.endpoints}
    # (the web console's pages, under /webhooks/console/, are no storefront's)
    mentioned = set(re.findall(r"/webhooks/(?!console/)[a-z]+/[a-z/]*[a-z]", README))
    assert mentioned == declared
    for storefront in STOREFRONTS.values():
        for endpoint in storefront.endpoints:
            for topic in endpoint.topics:
                assert f"`{topic}`" in README, topic


def test_the_readme_names_every_setting():
    missing = [s.name for s in config.settings() if f"`{s.name}`" not in README]
    assert missing == []


def test_settings_are_typed_and_frozen(tmp_path):
    cfg = config.load(None, {"EDX_HOOKS_LMS_BASE_URL": "https://lms.example.org",
                             "EDX_HOOKS_LMS_CLIENT_ID": "c",
                             "EDX_HOOKS_LMS_CLIENT_SECRET": "s3cr3t"})
    assert isinstance(cfg.lms, config.LMS) and isinstance(cfg.lms.timeout_seconds, float)
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.lms.timeout_seconds = 1.0  # type: ignore[misc]
    with pytest.raises(AttributeError):
        cfg.lms.timeout  # a typo is an error at once  # noqa: B018
    assert "s3cr3t" not in repr(cfg.lms)
    # every field is a declared setting, every declared setting a field
    for name, cls in config.SECTIONS.items():
        assert [s.key for s in config.declared(name, cls)] == [
            f.name for f in dataclasses.fields(cls)]


@pytest.mark.parametrize("key, url", [
    ("URL", "postgresql+asyncpg://db/edx"), ("URL", "sqlite+aiosqlite://"),
    ("URL", "sqlite+aiosqlite:///:memory:"), ("JOBS_URL", "postgresql://db/jobs"),
    ("JOBS_URL", "sqlite://")])
def test_only_an_sqlite_file_will_do(key, url):
    with pytest.raises(config.ConfigError, match="must name an SQLite file"):
        config.load(None, {"EDX_HOOKS_LMS_BASE_URL": "https://lms.example.org",
                           "EDX_HOOKS_LMS_CLIENT_ID": "c", "EDX_HOOKS_LMS_CLIENT_SECRET": "s",
                           f"EDX_HOOKS_DATABASE_{key}": url})
