"""Auth: every route but health needs a key once one exists; admin routes need an admin key;
keys are stored hashed and managed from the CLI; upstream keys are never stored or shown."""

from __future__ import annotations

import base64
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
import sqlalchemy as sa
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient
from pydantic import SecretStr
from reliability_support import sentiment_request
from starlette.routing import Route
from typer.testing import CliRunner

from understudy.cli import app as cli_app
from understudy.gateway import auth, create_app
from understudy.gateway.upstream import mask_secrets
from understudy.settings import Settings
from understudy.store import Store, open_store
from understudy.store.keys import KeyRole, create_key, list_keys, revoke_key
from understudy.testing.fake_teacher import FakeTeacher
from understudy.testing.gateway import run_gateway

UPSTREAM_SECRET = "sk-upstream-0123456789abcdef"


@pytest.fixture()
def store(settings: Settings) -> Iterator[Store]:
    opened = open_store(settings)
    yield opened
    opened.close()


@pytest.fixture()
def keys(store: Store) -> dict[str, str]:
    _, client_key = create_key(store, KeyRole.CLIENT, "svc")
    _, admin_key = create_key(store, KeyRole.ADMIN, "ops")
    return {"client": client_key, "admin": admin_key}


@pytest.fixture()
def http(settings: Settings, store: Store) -> Iterator[TestClient]:
    with TestClient(create_app(settings, store)) as client:
        yield client


def _route_table(routes: list[Any]) -> Iterator[tuple[str, set[str]]]:
    """(path template, methods) of every route, also inside included routers (FastAPI >= 0.165
    keeps those as ``_IncludedRouter`` entries that expose ``effective_route_contexts``)."""
    for route in routes:
        if isinstance(route, APIRoute | Route):
            yield route.path, set(route.methods or ())
        elif hasattr(route, "effective_route_contexts"):
            for context in route.effective_route_contexts():
                yield context.path, set(context.methods or ())


def _routes(client: TestClient) -> list[tuple[str, str]]:
    """Every (method, concrete path) the app serves, with path parameters filled in."""
    found = []
    for template, methods in _route_table(client.app.routes):  # type: ignore[attr-defined]
        path = re.sub(r"\{[^}]+\}", "x", template)
        found += [(method, path) for method in sorted(methods) if method != "HEAD"]
    return found


def _bearer(key: str) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"}


def test_without_keys_the_gateway_is_open(http: TestClient) -> None:
    assert http.get("/v1/models").status_code == 200
    assert http.get("/ui/tasks").status_code == 200


def test_every_route_rejects_a_missing_or_wrong_key(http: TestClient, keys: dict[str, str]) -> None:
    routes = _routes(http)
    paths = {path for _, path in routes}
    assert {"/v1/chat/completions", "/v1/feedback", "/ui/tasks", "/metrics", "/healthz"} <= paths
    for method, path in [*routes, ("GET", "/no/such/route")]:
        missing = http.request(method, path)
        wrong = http.request(method, path, headers=_bearer("usk_" + "x" * 43))
        if path.startswith("/health"):
            assert missing.status_code != 401, path
            continue
        for response in (missing, wrong):
            assert response.status_code == 401, (method, path)
            assert response.json()["error"]["code"] == "invalid_api_key"
            assert response.headers["x-understudy-request-id"].startswith("us-")
        assert "Bearer" in missing.headers["www-authenticate"]


def test_client_keys_call_the_api_and_admin_keys_open_the_dashboard_and_admin_api(
    http: TestClient, keys: dict[str, str], teacher: FakeTeacher
) -> None:
    client, admin = _bearer(keys["client"]), _bearer(keys["admin"])
    answer = http.post("/v1/chat/completions", json=sentiment_request("good"), headers=client)
    assert answer.status_code == 200
    assert http.get("/metrics", headers=client).status_code == 200
    admin_routes = [(m, p) for m, p in _routes(http) if p.startswith(("/ui", "/admin"))]
    assert any(p.startswith("/admin") for _, p in admin_routes)
    for method, path in admin_routes:
        forbidden = http.request(method, path, headers=client)
        assert forbidden.status_code == 403, path
        assert forbidden.json()["error"]["type"] == "permission_error"
    assert http.get("/ui/tasks", headers=admin).status_code == 200
    assert http.get("/admin/tasks", headers=admin).status_code == 200
    # A browser sends the key as HTTP Basic password (after the 401's Basic challenge).
    basic = base64.b64encode(f"ops:{keys['admin']}".encode()).decode()
    assert http.get("/ui/tasks", headers={"authorization": f"Basic {basic}"}).status_code == 200
    # The gateway's own key is not forwarded to the upstream.
    assert "authorization" not in teacher.headers[-1]


def test_admin_only_settings_for_metrics_and_feedback(
    settings: Settings, store: Store, keys: dict[str, str]
) -> None:
    strict = settings.model_copy(
        update={"metrics_require_admin": True, "feedback_require_admin": True}
    )
    with TestClient(create_app(strict, store)) as http:
        client, admin = _bearer(keys["client"]), _bearer(keys["admin"])
        assert http.get("/metrics", headers=client).status_code == 403
        assert http.get("/metrics", headers=admin).status_code == 200
        feedback = {"request_id": "nope", "labels": {"sentiment": "positive"}}
        assert http.post("/v1/feedback", json=feedback, headers=client).status_code == 403
        assert http.post("/v1/feedback", json=feedback, headers=admin).status_code == 404


def test_revoked_keys_stop_working_and_auth_stays_on(
    http: TestClient, store: Store, keys: dict[str, str]
) -> None:
    client = _bearer(keys["client"])
    assert http.get("/v1/models", headers=client).status_code == 200
    revoke_key(store, "svc")
    assert http.get("/v1/models", headers=client).status_code == 401
    revoke_key(store, "ops")
    # Revoking every key must not open the gateway.
    assert http.get("/v1/models").status_code == 401


def test_a_failing_database_keeps_the_keys_read_before_and_never_opens_the_gateway(
    settings: Settings,
    store: Store,
    keys: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    client = _bearer(keys["client"])
    with TestClient(create_app(settings, store)) as http:
        assert http.get("/v1/models", headers=client).status_code == 200

        def database_fails(store: Store) -> None:
            raise sa.exc.OperationalError("SELECT", {}, Exception("disk I/O error"))

        monkeypatch.setattr(auth, "key_snapshot", database_fails)
        assert http.get("/v1/models", headers=client).status_code == 200
        assert http.get("/v1/models", headers=_bearer("us-wrong")).status_code == 401
        assert "using the last ones read" in caplog.text
    with TestClient(create_app(settings, store)) as http:  # started while the database fails
        refused = http.get("/v1/models", headers=client)
        assert refused.status_code == 503
        assert refused.json()["error"]["code"] == "keys_unavailable"
        assert http.get("/v1/models").status_code == 503
        assert http.get("/healthz").status_code == 200  # health never needs the keys


def test_keys_are_stored_as_digests_only(store: Store, keys: dict[str, str]) -> None:
    listed = list_keys(store)
    assert [(k.name, k.role) for k in listed] == [("svc", KeyRole.CLIENT), ("ops", KeyRole.ADMIN)]
    assert all(
        keys["client"].startswith(k.prefix) or keys["admin"].startswith(k.prefix) for k in listed
    )
    database = Path(store.engine.url.database or "")
    store.close()
    raw = b"".join(p.read_bytes() for p in database.parent.glob(database.name + "*"))
    assert keys["client"].encode() not in raw and keys["admin"].encode() not in raw


def test_keys_cli_creates_lists_and_revokes(settings: Settings) -> None:
    runner = CliRunner()
    env = {"UNDERSTUDY_DATA_DIR": str(settings.data_dir)}
    created = runner.invoke(cli_app, ["keys", "create", "--admin", "--name", "ops"], env=env)
    assert created.exit_code == 0, created.output
    key = created.stdout.strip().splitlines()[0]
    assert key.startswith("usk_") and len(key) == 47
    listed = runner.invoke(cli_app, ["keys", "list"], env=env)
    assert "ops" in listed.stdout and "admin" in listed.stdout and key not in listed.stdout
    revoked = runner.invoke(cli_app, ["keys", "revoke", "ops"], env=env)
    assert revoked.exit_code == 0 and "revoked admin key 1" in revoked.stdout
    again = runner.invoke(cli_app, ["keys", "revoke", "ops"], env=env)
    assert again.exit_code == 1


def test_pass_through_forwards_the_callers_key_and_stores_no_key(
    settings: Settings, store: Store, keys: dict[str, str], teacher: FakeTeacher
) -> None:
    """No upstream key configured: the caller's own key goes upstream, the gateway key rides in
    ``x-understudy-key``, and neither is stored."""
    with run_gateway(settings, store) as url:
        client = openai.OpenAI(
            base_url=url,
            api_key=UPSTREAM_SECRET,
            default_headers={"x-understudy-key": keys["client"]},
            max_retries=0,
        )
        raw = client.chat.completions.with_raw_response.create(**sentiment_request("good"))
        assert raw.parse().choices[0].message.content == '{"sentiment": "positive"}'
        assert teacher.headers[-1]["authorization"] == f"Bearer {UPSTREAM_SECRET}"
        plain = openai.OpenAI(base_url=url, api_key=UPSTREAM_SECRET, max_retries=0)
        with pytest.raises(openai.AuthenticationError):
            plain.models.list()
    call = store.get_call(raw.headers["x-understudy-request-id"])
    assert call.request is not None and call.request["messages"][0]["content"] == "good"
    database = Path(store.engine.url.database or "")
    store.close()
    raw_db = b"".join(p.read_bytes() for p in database.parent.glob(database.name + "*"))
    assert UPSTREAM_SECRET.encode() not in raw_db
    assert keys["client"].encode() not in raw_db


def test_the_configured_upstream_key_is_never_shown(
    settings: Settings, teacher: FakeTeacher
) -> None:
    secret = settings.model_copy(update={"upstream_api_key": SecretStr(UPSTREAM_SECRET)})
    with run_gateway(secret) as url:
        client = openai.OpenAI(base_url=url, api_key="caller-key", max_retries=0)
        client.chat.completions.create(**sentiment_request("good"))
        assert teacher.headers[-1]["authorization"] == f"Bearer {UPSTREAM_SECRET}"
        teacher.fail_status = 500
        with pytest.raises(openai.APIStatusError) as failed:
            client.chat.completions.create(**sentiment_request("bad"))
        assert UPSTREAM_SECRET not in str(failed.value.body)
    shown = CliRunner().invoke(
        cli_app, ["settings"], env={"UNDERSTUDY_UPSTREAM_API_KEY": UPSTREAM_SECRET}
    )
    assert shown.exit_code == 0 and UPSTREAM_SECRET not in shown.stdout
    assert "UNDERSTUDY_UPSTREAM_API_KEY" in shown.stdout


def test_upstream_messages_are_masked() -> None:
    text = f"Incorrect API key provided: {UPSTREAM_SECRET}; header Bearer abc.def"
    masked = mask_secrets(text)
    assert UPSTREAM_SECRET not in masked and "abc.def" not in masked
    assert masked.startswith("Incorrect API key provided: ****")
