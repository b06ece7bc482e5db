"""The bridge's own HTTP API as an OpenAPI 3.0 document (``GET /openapi.json``).

It describes what the bridge answers — the webhook endpoints every channel
and CRM posts to, the OAuth install endpoints, and the operator API — so
clients and the suite's schemathesis run can hold it to its word: a 4xx with a
JSON error for bad input, never a 500.
"""

from __future__ import annotations

from typing import Any

from bridge import __version__
from bridge.registry import channel_kinds, crm_kinds

__all__ = ["document"]

KEY = {"type": "string", "pattern": "^[A-Za-z0-9_-]{16,64}$"}


def _error(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
    }


def _errors(*codes: int) -> dict[str, Any]:
    texts = {
        400: "Malformed request: the JSON error names what is wrong",
        401: "Missing or wrong operator token",
        403: "Wrong secret or signature, or another account's payload",
        404: "No such webhook, CRM, channel or file",
        405: "Method not allowed",
        409: "The idempotency key was used for a different request",
        413: "Body too large",
        410: "The file's retention period is over: its bytes were dropped",
        415: "Wrong content type",
        502: "The CRM refused or failed the install",
        503: "Storage unavailable: retry later (Retry-After)",
    }
    return {str(c): _error(texts[c]) for c in codes}


def _ack() -> dict[str, Any]:
    return {
        "description": "Durably accepted (committed before this answer); redeliveries too. "
        "The body is what the provider expects (the adapter's answer): JSON, or plain text",
        "content": {
            "application/json": {"schema": {"type": "object"}},
            "text/plain": {"schema": {"type": "string"}},
        },
    }


def _handshake() -> dict[str, Any]:
    return {
        "description": "The provider's verification handshake answered (e.g. a challenge echoed)",
        "content": {
            "text/plain": {"schema": {"type": "string"}},
            "application/json": {"schema": {"type": "object"}},
        },
    }


def _path_param(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "path",
        "required": True,
        "schema": schema,
        "description": description,
    }


def document() -> dict[str, Any]:
    channels = {"type": "string", "enum": list(channel_kinds())}
    crms = {"type": "string", "enum": list(crm_kinds())}
    any_body = {
        "application/json": {"schema": {}},
        "application/x-www-form-urlencoded": {"schema": {"type": "object"}},
    }
    webhook_errors = _errors(400, 403, 404, 413, 415, 503)
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "CRM bridge",
            "version": __version__,
            "description": (
                "Webhooks from channels and CRMs, OAuth installs, and the operator API. "
                "Every error is JSON: {error, message}."
            ),
        },
        "paths": {
            "/webhooks/{kind}/{key}": {
                "post": {
                    "summary": "A channel account's webhook (the channel posts its updates here)",
                    "operationId": "channelWebhook",
                    "parameters": [
                        _path_param("kind", channels, "channel slug"),
                        _path_param("key", KEY, "the channel account's random path secret"),
                    ],
                    "requestBody": {
                        "required": True,
                        "content": {"application/json": {"schema": {}}},
                    },
                    "responses": {"200": _ack(), **webhook_errors},
                },
                "get": {
                    "summary": "The channel's verification handshake (405 where it has none)",
                    "operationId": "channelHandshake",
                    "parameters": [
                        _path_param("kind", channels, "channel slug"),
                        _path_param("key", KEY, "the channel account's random path secret"),
                    ],
                    "responses": {"200": _handshake(), **_errors(403, 404, 405)},
                },
            },
            "/webhooks/{kind}/app": {
                "post": {
                    "summary": "An app-routed channel's one URL for all its accounts",
                    "operationId": "channelAppWebhook",
                    "parameters": [_path_param("kind", channels, "channel slug")],
                    "requestBody": {"required": True, "content": any_body},
                    "responses": {"200": _ack(), **webhook_errors},
                },
                "get": {
                    "summary": "An app-routed channel's verification handshake",
                    "operationId": "channelAppHandshake",
                    "parameters": [_path_param("kind", channels, "channel slug")],
                    "responses": {"200": _handshake(), **_errors(403, 404, 405)},
                },
            },
            "/webhooks/crm/{crm}/{key}": {
                "post": {
                    "summary": "A CRM's webhook for one tenant (its random key in the path)",
                    "operationId": "crmWebhook",
                    "parameters": [
                        _path_param("crm", crms, "CRM slug"),
                        _path_param("key", KEY, "the tenant's random path secret"),
                    ],
                    "requestBody": {"required": True, "content": any_body},
                    "responses": {"200": _ack(), **webhook_errors},
                }
            },
            "/webhooks/crm/{crm}/app": {
                "post": {
                    "summary": "App-level CRM webhook: one URL for every account, the body names"
                    " each event's account",
                    "operationId": "crmAppWebhook",
                    "parameters": [_path_param("crm", crms, "CRM slug")],
                    "requestBody": {"required": True, "content": any_body},
                    "responses": {"200": _ack(), **webhook_errors},
                }
            },
            "/webhooks/crm/{crm}/route/{route_key}": {
                "post": {
                    "summary": "App-level CRM webhook: one URL for all tenants, the key names one",
                    "operationId": "crmRoutedWebhook",
                    "parameters": [
                        _path_param("crm", crms, "CRM slug"),
                        _path_param(
                            "route_key",
                            {"type": "string", "pattern": "^[A-Za-z0-9_.:-]{1,200}$"},
                            "a key the tenant's CRM setup registered (e.g. a chat scope id)",
                        ),
                    ],
                    "requestBody": {"required": True, "content": any_body},
                    "responses": {"200": _ack(), **webhook_errors},
                }
            },
            "/webhooks/crm/{crm}/install": {
                "post": {
                    "summary": "A CRM announcing an app install (an install event with its tokens)",
                    "operationId": "crmInstallEvent",
                    "parameters": [_path_param("crm", crms, "CRM slug")],
                    "requestBody": {"required": True, "content": any_body},
                    "responses": {
                        "200": _ack(),
                        **_errors(400, 403, 404, 413, 415, 502, 503),
                    },
                }
            },
            "/oauth/{crm}/install": {
                "get": {
                    "summary": "Start an OAuth install: redirects to the CRM's consent page",
                    "operationId": "oauthInstall",
                    "parameters": [
                        _path_param("crm", crms, "CRM slug"),
                        {
                            "name": "mapping",
                            "in": "query",
                            "required": False,
                            "schema": {"type": "string"},
                        },
                    ],
                    "responses": {
                        "302": {"description": "to the CRM's consent page"},
                        **_errors(400, 404),
                    },
                }
            },
            "/oauth/{crm}/callback": {
                # (amoCRM's own "integration enabled" call comes without our
                # state, with from_widget: the one variant not described here)
                "get": {
                    "summary": "The CRM's OAuth redirect: exchanges the code, creates the tenant",
                    "operationId": "oauthCallback",
                    "parameters": [
                        _path_param("crm", crms, "CRM slug"),
                        {
                            "name": "code",
                            "in": "query",
                            "required": True,
                            "schema": {"type": "string", "minLength": 1},
                        },
                        {
                            "name": "state",
                            "in": "query",
                            "required": True,
                            "schema": {"type": "string", "minLength": 1},
                        },
                    ],
                    "responses": {
                        "200": {
                            "description": "Connected",
                            "content": {"application/json": {"schema": {"type": "object"}}},
                        },
                        **_errors(400, 403, 404, 502, 503),
                    },
                }
            },
            "/files/{uid}/{token}/{name}": {
                "get": {
                    "summary": "A file the bridge keeps for the CRM (an e-mail's attachment "
                    "or original), at the link written into the CRM entry; served as a "
                    "download (nosniff, sandboxing CSP). Unknown file or wrong token: 404; "
                    "bytes dropped after BRIDGE_FILE_RETENTION_DAYS: 410",
                    "operationId": "file",
                    "parameters": [
                        {"name": n, "in": "path", "required": True, "schema": {"type": "string"}}
                        for n in ("uid", "token", "name")
                    ],
                    "responses": {
                        "200": {
                            "description": "The file",
                            "content": {
                                "application/octet-stream": {
                                    "schema": {"type": "string", "format": "binary"}
                                }
                            },
                        },
                        **_errors(404, 410),
                    },
                }
            },
            "/healthz": {
                "get": {
                    "summary": "Health: the database and Redis answer and a worker reported "
                    "in the last 30 s (503 names what is wrong)",
                    "operationId": "health",
                    "responses": {
                        "200": {
                            "description": "OK",
                            "content": {"application/json": {"schema": {"type": "object"}}},
                        },
                        "503": {
                            "description": "Something is down (see checks)",
                            "content": {"application/json": {"schema": {"type": "object"}}},
                        },
                    },
                }
            },
            "/readyz": {
                "get": {
                    "summary": "Readiness for load balancers: a webhook sent here would be "
                    "stored and queued (the database and Redis answer)",
                    "operationId": "ready",
                    "responses": {
                        "200": {
                            "description": "Ready",
                            "content": {"application/json": {"schema": {"type": "object"}}},
                        },
                        "503": {
                            "description": "Not ready (see checks)",
                            "content": {"application/json": {"schema": {"type": "object"}}},
                        },
                    },
                }
            },
            "/metrics": {
                "get": {
                    "summary": "Counters, histograms and gauges for Prometheus (bearer "
                    "BRIDGE_METRICS_TOKEN when it is set; open otherwise)",
                    "operationId": "metrics",
                    "security": [{"metrics": []}, {}],
                    "responses": {
                        "200": {
                            "description": "The text exposition format, or OpenMetrics when "
                            "the Accept header asks for it",
                            "content": {
                                "text/plain": {"schema": {"type": "string"}},
                                "application/openmetrics-text": {"schema": {"type": "string"}},
                            },
                        },
                        "401": _error("Missing or wrong BRIDGE_METRICS_TOKEN"),
                    },
                }
            },
            "/api/status": {
                "get": {
                    "summary": "Counts, parked conversations and failed messages (no message text)",
                    "operationId": "status",
                    "security": [{"operator": []}],
                    "responses": {
                        "200": {
                            "description": "Status",
                            "content": {"application/json": {"schema": {"type": "object"}}},
                        },
                        **_errors(401, 503),
                    },
                }
            },
            **_tenant_api(),
            "/openapi.json": {
                "get": {
                    "summary": "This document",
                    "operationId": "openapi",
                    "responses": {
                        "200": {
                            "description": "OpenAPI 3.0",
                            "content": {"application/json": {"schema": {"type": "object"}}},
                        }
                    },
                }
            },
        },
        "components": {
            "schemas": {
                "Error": {
                    "type": "object",
                    "required": ["error", "message"],
                    "properties": {"error": {"type": "string"}, "message": {"type": "string"}},
                },
                **_cascade_schemas(channels),
            },
            "securitySchemes": {
                "operator": {"type": "http", "scheme": "bearer"},
                "metrics": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "BRIDGE_METRICS_TOKEN (bridge.metrics_web)",
                },
                "tenant": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "A tenant's API token (brt_...): bridge.apitokens",
                },
            },
        },
    }


def _json(schema: str, description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{schema}"}}},
    }


def _tenant_api() -> dict[str, Any]:
    """The tenant's API: cascade messages (``bridge.cascade``), clients and
    their merges and links (``bridge.identity``)."""
    guarded: dict[str, Any] = {"security": [{"tenant": []}]}
    id_param = {"type": "string", "maxLength": 64}
    return {
        "/api/v1/contacts/{contact}/messages": {
            "post": {
                **guarded,
                "summary": "Send a message to a CRM contact on their channels in turn (a "
                "cascade): each only if reachable and consented, the next after a failure or "
                "wait_minutes without delivered/read, never twice on one channel",
                "operationId": "cascadeToContact",
                "parameters": [_path_param("contact", id_param, "the CRM's contact id")],
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {
                            "schema": {"$ref": "#/components/schemas/CascadeRequest"}
                        }
                    },
                },
                "responses": {
                    "202": _json("Cascade", "Accepted (the same cascade for a repeated key)"),
                    **_errors(400, 401, 404, 409, 413, 415, 503),
                },
            }
        },
        "/webhooks/crm/{crm}/{key}/cascade": {
            "post": {
                "summary": "A CRM automation asking for a cascade (a workflow's or pipeline's "
                "webhook): the contact from the CRM's body, the message from the query",
                "operationId": "cascadeFromCrm",
                "parameters": [
                    _path_param("crm", {"type": "string"}, "CRM slug"),
                    _path_param("key", KEY, "the tenant's random path secret"),
                    *(
                        {"name": n, "in": "query", "required": n == "text", "schema": schema}
                        for n, schema in (
                            ("text", {"type": "string", "minLength": 1, "maxLength": 2000}),
                            ("channels", {"type": "string", "description": "comma-separated"}),
                            ("wait_minutes", {"type": "integer", "minimum": 1}),
                            ("key", {"type": "string", "maxLength": 60}),
                        )
                    ),
                ],
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {"schema": {}},
                        "application/x-www-form-urlencoded": {"schema": {"type": "object"}},
                    },
                },
                "responses": {
                    "202": _json("Cascade", "Accepted (the same cascade for a redelivery)"),
                    "200": {
                        "description": "The CRM contact is not a client of the bridge: nothing "
                        "started (a 2xx, so the CRM does not retry)",
                        "content": {"application/json": {"schema": {"type": "object"}}},
                    },
                    **_errors(400, 403, 404, 413, 503),
                },
            }
        },
        "/api/v1/cascades/{id}": {
            "get": {
                **guarded,
                "summary": "A cascade's state: each channel's step and the outcome",
                "operationId": "cascadeState",
                "parameters": [_path_param("id", {"type": "string"}, "the cascade's id")],
                "responses": {"200": _json("Cascade", "The cascade"), **_errors(401, 404, 503)},
            }
        },
        "/api/v1/messages/cascade": {
            "post": {
                **guarded,
                "summary": "One cascade per CRM contact of a list (rate-limited per channel; "
                "unsubscribed clients are skipped)",
                "operationId": "cascadeBatch",
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {
                            "schema": {"$ref": "#/components/schemas/CascadeBatchRequest"}
                        }
                    },
                },
                "responses": {
                    "202": _json("CascadeBatch", "Accepted"),
                    **_errors(400, 401, 409, 413, 415, 503),
                },
            }
        },
        "/api/v1/contacts/{contact}": {
            "get": {
                **guarded,
                "summary": "The client behind a CRM contact: handles (verified or not, where "
                "learnt), conversations per channel, merges and links with their evidence, "
                "reachability",
                "operationId": "clientExplained",
                "parameters": [_path_param("contact", id_param, "the CRM's contact id")],
                "responses": {
                    "200": {
                        "description": "The client",
                        "content": {"application/json": {"schema": {"type": "object"}}},
                    },
                    **_errors(401, 404, 503),
                },
            }
        },
        **{
            f"/api/v1/links/{{link}}/{decision}": {
                "post": {
                    **guarded,
                    "summary": summary,
                    "operationId": f"link{decision.title()}",
                    "parameters": [_path_param("link", {"type": "integer"}, "the link's id")],
                    "responses": {
                        "200": {
                            "description": "Done",
                            "content": {"application/json": {"schema": {"type": "object"}}},
                        },
                        **_errors(401, 404, 409, 503),
                    },
                }
            }
            for decision, summary in (
                ("confirm", "'Possibly the same client': yes — the two are merged"),
                ("dismiss", "'Possibly the same client': no — never linked again"),
            )
        },
        "/api/v1/merges/{merge}/undo": {
            "post": {
                **guarded,
                "summary": "Split a merge: each conversation back to its own client",
                "operationId": "mergeUndone",
                "parameters": [_path_param("merge", {"type": "integer"}, "the merge's id")],
                "responses": {
                    "200": {
                        "description": "Undone",
                        "content": {"application/json": {"schema": {"type": "object"}}},
                    },
                    **_errors(401, 404, 409, 503),
                },
            }
        },
        "/api/v1/messages/cascade/{batch}": {
            "get": {
                **guarded,
                "summary": "A batch's cascades",
                "operationId": "cascadeBatchState",
                "parameters": [_path_param("batch", {"type": "string"}, "the batch's id")],
                "responses": {
                    "200": {
                        "description": "The batch's cascades",
                        "content": {"application/json": {"schema": {"type": "object"}}},
                    },
                    **_errors(401, 404, 503),
                },
            }
        },
    }


def _cascade_schemas(channels: dict[str, Any]) -> dict[str, Any]:
    request: dict[str, Any] = {
        "type": "object",
        "required": ["text", "channels", "key"],
        "additionalProperties": False,
        "properties": {
            "text": {"type": "string", "minLength": 1, "maxLength": 10000},
            "channels": {
                "type": "array",
                "items": channels,
                "minItems": 1,
                "maxItems": 10,
                "uniqueItems": True,
                "description": "channel kinds in the order to try",
            },
            "wait_minutes": {
                "type": "integer",
                "minimum": 1,
                "maximum": 10080,
                "default": 30,
                "description": "how long a channel may take to say delivered or read",
            },
            "key": {
                "type": "string",
                "minLength": 1,
                "maxLength": 200,
                "description": "idempotency key: a repeated request returns the same cascade",
            },
        },
    }
    batch = {
        **request,
        "required": ["text", "channels", "key", "contacts"],
        "properties": {
            **request["properties"],
            "key": {"type": "string", "minLength": 1, "maxLength": 120},
            "contacts": {
                "type": "array",
                "items": {"type": "string", "minLength": 1, "maxLength": 64},
                "minItems": 1,
                "maxItems": 1000,
            },
        },
    }
    step = {
        "type": "object",
        "properties": {
            "channel": {"type": "string"},
            "state": {
                "type": "string",
                "enum": ["waiting", "sending", "delivered", "failed", "timed_out", "skipped"],
            },
            "reason": {"type": "string", "nullable": True},
            "detail": {"type": "string", "nullable": True},
        },
    }
    return {
        "CascadeRequest": request,
        "CascadeBatchRequest": batch,
        "Cascade": {
            "type": "object",
            "required": ["id", "state", "steps"],
            "properties": {
                "id": {"type": "string"},
                "state": {"type": "string", "enum": ["running", "delivered", "undelivered"]},
                "contact": {"type": "string"},
                "steps": {"type": "array", "items": step},
            },
        },
        "CascadeBatch": {
            "type": "object",
            "required": ["batch", "cascades", "unknown_contacts"],
            "properties": {
                "batch": {"type": "string"},
                "cascades": {"type": "array", "items": {"type": "object"}},
                "unknown_contacts": {"type": "array", "items": {"type": "string"}},
            },
        },
    }
