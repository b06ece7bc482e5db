"""schemathesis against the bridge's own OpenAPI document (served at
/openapi.json): generated valid and invalid requests to every operation —
never a 5xx, every status, content type and body as documented, invalid
requests rejected.

One default check is left out: "schema-valid data must be accepted". A
webhook's validity is its secret or signature, which no schema can express,
so a schema-valid but unsigned body is rightly refused with a 4xx."""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.specs.openapi.checks import positive_data_acceptance

from bridge import admin, create_app, health
from bridge.openapi import document


@pytest.fixture
def app(runtime, monkeypatch):  # type: ignore[no-untyped-def]
    (runtime.settings.mappings_dir / "t.yaml").write_text(
        "crm: hubspot\nchannels:\n  telegram: {object: deal, pipeline: p, stage: s}\n"
    )
    tenant = admin.create_tenant(
        runtime,
        slug="t",
        crm_kind="hubspot",
        mapping="t.yaml",
        credentials={"type": "private_app", "access_token": "pat-x"},
        account_id="1",
    )
    admin.add_channel_account(
        runtime, tenant, kind="telegram", credentials={"bot_token": "1:x", "secret_token": "s"}
    )
    # a worker reports in, as in a running deployment: /healthz is then 200
    # (without one it is a documented 503, which the server-error check
    # would count as a failure)
    health.beat(runtime.redis, worker_pid=1)
    return create_app(runtime=runtime)


def test_the_document_validates() -> None:
    from openapi_spec_validator import validate

    validate(document())
    assert {"/webhooks/{kind}/{key}", "/webhooks/crm/{crm}/{key}", "/api/status"} <= set(
        document()["paths"]
    )


def test_schemathesis_finds_no_failure(app) -> None:  # type: ignore[no-untyped-def]
    schema = schemathesis.openapi.from_wsgi("/openapi.json", app)
    failures: list[str] = []
    for operation in schema.get_all_operations():
        op = operation.ok()

        @settings(
            max_examples=40,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            database=None,
        )
        @given(case=op.as_strategy())
        def check(case) -> None:  # type: ignore[no-untyped-def]
            try:
                case.call_and_validate(excluded_checks=[positive_data_acceptance])
            except Exception as exc:  # noqa: BLE001 — collected with the request that caused it
                failures.append(f"{case.method} {case.formatted_path}: {exc}"[:500])

        check()
    assert failures == []
