"""The demo tenant: installed into the sandbox HubSpot through the real
OAuth flow, with the sandbox Telegram's demo bot connected to it."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import parse_qs, urlparse

import requests

from bridge.setup import connect_channel

__all__ = ["Seeded", "banner", "seed"]

DEMO_MAPPING = "demo-hubspot.yaml"


@dataclass
class Seeded:
    tenant_id: int
    channel_account_id: int
    portal_id: str


def seed(runtime, base: str, *, sandbox: str | None = None, mapping: str = DEMO_MAPPING) -> Seeded:  # type: ignore[no-untyped-def]
    """Install the demo tenant (bridge at ``base``, sandbox at ``sandbox``,
    default ``<base>/sandbox``) and connect the sandbox's demo bot."""
    from sandbox.telegram import DEMO_BOT_TOKEN

    sandbox = sandbox or f"{base}/sandbox"
    # 1. The HubSpot admin opens the install link ...
    start = requests.get(
        f"{base}/oauth/hubspot/install",
        params={"mapping": mapping},
        allow_redirects=False,
        timeout=10,
    )
    start.raise_for_status()
    authorize = urlparse(start.headers["Location"])
    query = {k: v[0] for k, v in parse_qs(authorize.query).items()}
    # 2. ... and grants access (the sandbox's scripted consent) ...
    grant = requests.post(
        f"{sandbox}/hubspot/_install",
        json={"client_id": query["client_id"], "redirect_uri": query["redirect_uri"]},
        timeout=10,
    )
    grant.raise_for_status()
    # 3. ... HubSpot redirects back to the bridge with a code.
    done = requests.get(
        query["redirect_uri"],
        params={"code": grant.json()["code"], "state": query["state"]},
        timeout=30,
    )
    done.raise_for_status()
    tenant_id = int(done.json()["tenant"])
    account_id = connect_channel(
        runtime, tenant_id, kind="telegram", token=DEMO_BOT_TOKEN, name="Demo bot"
    )
    with runtime.transaction() as session:
        from bridge.tables import Tenant

        portal = session.get(Tenant, tenant_id).crm_account_id
    return Seeded(tenant_id, account_id, str(portal))


def banner(base: str, seeded: Seeded) -> str:
    return f"""
================================================================================
 CRM bridge demo is running (Ctrl-C stops everything)

 Try the whole loop in a browser:   {base}/sandbox/
   left:  you are a Telegram customer writing to the demo bot
   right: you are a rep in (sandbox) HubSpot portal {seeded.portal_id}

 Or with curl — a customer writes:
   curl -s -X POST {base}/sandbox/telegram/_deliver -H 'Content-Type: application/json' \\
        -d '{{"from": {{"id": 1001, "first_name": "Anna"}}, "text": "Hello! Do you deliver?"}}'

 ... see the contact, deal and timeline the bridge wrote into HubSpot:
   curl -s {base}/sandbox/hubspot/_state | python3 -m json.tool

 ... reply as a rep (contact id from _state):
   curl -s -X POST {base}/sandbox/hubspot/_reply -H 'Content-Type: application/json' \\
        -d '{{"contact_id": "<contact id>", "text": "Hi Anna, yes we do!"}}'

 ... and see what the bot sent back to the customer:
   curl -s '{base}/sandbox/telegram/_sent?chat_id=1001'

 Bridge status:   .venv/bin/bridge status     (DATABASE_URL=sqlite:///var/demo.db)
================================================================================
"""
