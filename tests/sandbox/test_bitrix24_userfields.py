"""Sandbox Bitrix24: ``crm.{lead,deal,contact}.userfield.{add,list,get}``.

Against the vendor's pages (dev.1c-bitrix.ru/rest_help/crm/leads/
crm_lead_userfield_add.php, .../crm/contacts/crm_contact_userfield_add.php,
.../crm/cdeals/crm_deal_userfield_add.php and the list/get pages): FIELD_NAME
gets the prefix ``UF_CRM_``, the whole name is at most 20 characters, ``add``
answers the new field's ID which ``list`` then shows (ENTITY_ID
``CRM_LEAD``/``CRM_DEAL``/``CRM_CONTACT``), labels come with ``filter[LANG]``.
What the pages leave open (the errors for a duplicate and a too-long name,
who may call) is a config switch; both settings of each are tried here. All
calls go through the sandbox's HTTP app (Flask's test client), as
``test_bitrix24_sandbox.py`` does.
"""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from sandbox.bitrix24 import DEMO_DOMAIN, DEMO_WEBHOOK_CODE, create_app
from sandbox.bitrix24.config import DEFAULTS

KINDS = {"lead": "CRM_LEAD", "deal": "CRM_DEAL", "contact": "CRM_CONTACT"}
LABEL_KEYS = ("EDIT_FORM_LABEL", "LIST_COLUMN_LABEL", "LIST_FILTER_LABEL", "ERROR_MESSAGE",
              "HELP_MESSAGE")
SEEDED = {"lead": [{"FIELD_NAME": "UF_CRM_SEGMENT", "USER_TYPE_ID": "string",
                    "LABEL": "Segment"}],
          "contact": [{"FIELD_NAME": "UF_CRM_TAGS", "MULTIPLE": "Y"}]}


def portal(**extra: Any) -> dict[str, Any]:
    entry = copy.deepcopy(DEFAULTS["portals"][0])
    entry.update(extra)
    return entry


def make(**config: Any) -> Any:
    config.setdefault("limits", {"basic": {"drain_per_s": 1000.0, "burst": 100000}})
    return create_app(config).test_client()


@pytest.fixture
def client() -> Any:
    return make(portals=[portal(user_fields=SEEDED)])


def hook(client: Any, method: str, body: dict[str, Any] | None = None, *, user: int = 1,
         code: str = DEMO_WEBHOOK_CODE) -> Any:
    return client.post(f"/{DEMO_DOMAIN}/rest/{user}/{code}/{method}.json",
                       data=json.dumps(body or {}), content_type="application/json")


def ok(resp: Any) -> Any:
    assert resp.status_code == 200, resp.get_json()
    return resp.get_json()["result"]


def fail(resp: Any, status: int = 400) -> dict[str, Any]:
    assert resp.status_code == status, resp.get_json()
    body: dict[str, Any] = resp.get_json()
    assert set(body) == {"error", "error_description"}
    return body


def add(client: Any, kind: str, name: str, **fields: Any) -> Any:
    fields.setdefault("USER_TYPE_ID", "string")
    return hook(client, f"crm.{kind}.userfield.add", {"fields": {"FIELD_NAME": name, **fields}})


def names(client: Any, kind: str, **body: Any) -> list[str]:
    return [row["FIELD_NAME"] for row in ok(hook(client, f"crm.{kind}.userfield.list", body))]


# -- add / list / get -------------------------------------------------------------------------


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_add_answers_the_id_that_list_and_get_then_show(client: Any, kind: str) -> None:
    new_id = ok(add(client, kind, "FIRST_SOURCE", XML_ID="first", SORT=50, MANDATORY="N"))
    assert isinstance(new_id, int) and new_id > 0
    body = hook(client, f"crm.{kind}.userfield.list",
                {"filter": {"FIELD_NAME": "UF_CRM_FIRST_SOURCE"}}).get_json()
    assert body["total"] == 1 and "next" not in body
    (row,) = body["result"]
    assert row["ID"] == str(new_id)
    assert (row["ENTITY_ID"], row["FIELD_NAME"], row["USER_TYPE_ID"], row["XML_ID"],
            row["SORT"], row["MULTIPLE"], row["MANDATORY"]) == (
        KINDS[kind], "UF_CRM_FIRST_SOURCE", "string", "first", "50", "N", "N")
    assert not set(LABEL_KEYS) & set(row)  # labels only with filter[LANG]
    got = ok(hook(client, f"crm.{kind}.userfield.get", {"id": new_id}))
    assert {k: v for k, v in got.items() if k not in LABEL_KEYS} == row
    # every object has its own fields: the name is free on the others
    for other in set(KINDS) - {kind}:
        assert "UF_CRM_FIRST_SOURCE" not in names(client, other)
        missing = hook(client, f"crm.{other}.userfield.get", {"id": new_id})
        assert fail(missing)["error_description"] == "Not found"


def test_declared_fields_come_first_and_list_filters_orders_and_pages(client: Any) -> None:
    assert names(client, "lead") == ["UF_CRM_SEGMENT"]
    assert names(client, "deal") == []
    [tags] = ok(hook(client, "crm.contact.userfield.list"))
    assert (tags["ENTITY_ID"], tags["MULTIPLE"], tags["USER_TYPE_ID"]) == (
        "CRM_CONTACT", "Y", "string")
    for n in range(60):
        ok(add(client, "deal", f"F{n:02d}", SORT=1000 - n))
    first = hook(client, "crm.deal.userfield.list").get_json()
    # default order SORT ascending, 50 a page (list-methods-pecularities.md)
    assert (first["total"], first["next"], len(first["result"])) == (60, 50, 50)
    assert first["result"][0]["FIELD_NAME"] == "UF_CRM_F59"
    rest = ok(hook(client, "crm.deal.userfield.list", {"start": 50}))
    assert [r["FIELD_NAME"] for r in rest][-1] == "UF_CRM_F00"
    by_id = names(client, "deal", order={"ID": "DESC"}, filter={">SORT": 995})
    assert by_id == ["UF_CRM_F04", "UF_CRM_F03", "UF_CRM_F02", "UF_CRM_F01", "UF_CRM_F00"]
    assert names(client, "deal", filter={"MANDATORY": "Y"}) == []
    typed = hook(client, "crm.deal.userfield.list", {"filter": {
        "ENTITY_ID": "CRM_DEAL", "USER_TYPE_ID": "string"}}).get_json()
    assert typed["total"] == 60
    bad = hook(client, "crm.deal.userfield.list", {"filter": "FIELD_NAME"})
    assert fail(bad)["error_description"] == "Parameter 'filter' must be array."


def test_labels_with_lang_and_per_language_in_get(client: Any) -> None:
    field_id = ok(add(client, "lead", "campaign", LABEL="Campaign",
                      EDIT_FORM_LABEL={"en": "Campaign (first)", "ru": "Кампания"},
                      HELP_MESSAGE="The first touch"))
    [row] = ok(hook(client, "crm.lead.userfield.list",
                    {"filter": {"FIELD_NAME": "UF_CRM_CAMPAIGN", "LANG": "ru"}}))
    assert (row["EDIT_FORM_LABEL"], row["LIST_COLUMN_LABEL"], row["LIST_FILTER_LABEL"],
            row["ERROR_MESSAGE"], row["HELP_MESSAGE"]) == (
        "Кампания", "Campaign", "Campaign", "", "The first touch")
    [seeded] = ok(hook(client, "crm.lead.userfield.list",
                       {"filter": {"FIELD_NAME": "UF_CRM_SEGMENT", "LANG": "en"}}))
    assert seeded["LIST_COLUMN_LABEL"] == "Segment"  # a declared field's LABEL
    got = ok(hook(client, "crm.lead.userfield.get", {"id": field_id}))
    assert got["EDIT_FORM_LABEL"] == {"en": "Campaign (first)", "ru": "Кампания"}
    assert got["LIST_COLUMN_LABEL"] == {"en": "Campaign", "ru": "Campaign"}
    assert got["ERROR_MESSAGE"] == {"en": "", "ru": ""}
    # crm.lead.fields lists the field with its labels in the portal's language (en)
    described = ok(hook(client, "crm.lead.fields"))["UF_CRM_CAMPAIGN"]
    assert (described["type"], described["isMultiple"], described["formLabel"],
            described["listLabel"]) == ("string", False, "Campaign (first)", "Campaign")


def test_a_list_field_gets_its_items(client: Any) -> None:
    field_id = ok(add(client, "deal", "SIZE", USER_TYPE_ID="enumeration",
                      LIST=[{"VALUE": "Small"}, {"VALUE": "Large", "DEF": "Y", "SORT": 5},
                            {"VALUE": ""}]))
    items = ok(hook(client, "crm.deal.userfield.get", {"id": field_id}))["LIST"]
    assert [(i["VALUE"], i["DEF"], i["SORT"]) for i in items] == [
        ("Small", "N", "10"), ("Large", "Y", "5")]
    assert len({i["ID"] for i in items}) == 2


# -- the name rules -----------------------------------------------------------------------------


def test_prefix_is_added_and_the_whole_name_is_at_most_20_characters(client: Any) -> None:
    ok(add(client, "lead", "abcdefghijklm"))  # 13 after the prefix: the most there is
    assert "UF_CRM_ABCDEFGHIJKLM" in names(client, "lead")  # upper-cased, prefixed
    long = fail(add(client, "lead", "ABCDEFGHIJKLMN"))
    assert long == {"error": "ERROR_CORE", "error_description":
                    'The field name "UF_CRM_ABCDEFGHIJKLMN" is longer than 20 characters.'}
    assert "UF_CRM_ABCDEFGHIJKLMN" not in names(client, "lead")
    # the pages: the prefix is always added, so a prefixed name gets it twice
    ok(add(client, "lead", "UF_CRM_X"))
    assert "UF_CRM_UF_CRM_X" in names(client, "lead")
    assert fail(add(client, "lead", "UF_CRM_LONGERX"))["error"] == "ERROR_CORE"  # 21 in all
    for bad in ("", "first-source", "имя"):
        assert fail(add(client, "lead", bad))["error"] == "ERROR_CORE"
    assert fail(add(client, "lead", "OK", USER_TYPE_ID="colour"))["error_description"] == (
        'Unknown user field type "colour".')
    assert fail(add(client, "lead", "OK", USER_TYPE_ID=""))["error"] == "ERROR_CORE"
    no_fields = hook(client, "crm.lead.userfield.add", {"fields": "FIELD_NAME=X"})
    assert fail(no_fields)["error_description"] == "Parameter 'fields' must be array."


def test_name_switches_truncate_and_keep_a_present_prefix() -> None:
    client = make(userfield_name_too_long="truncate", userfield_prefix="unless_present")
    field_id = ok(add(client, "contact", "consent_version_text"))
    [row] = ok(hook(client, "crm.contact.userfield.list", {"filter": {"ID": field_id}}))
    assert row["FIELD_NAME"] == "UF_CRM_CONSENT_VERSI"  # cut to 20
    ok(add(client, "contact", "UF_CRM_CONSENT_AT"))
    assert "UF_CRM_CONSENT_AT" in names(client, "contact")


def test_a_duplicate_name_is_the_configured_error(client: Any) -> None:
    ok(add(client, "contact", "consent_at"))
    again = fail(add(client, "contact", "CONSENT_AT"))
    assert again == {"error": "ERROR_CORE", "error_description":
                     'A user field with the code "UF_CRM_CONSENT_AT" already exists for '
                     '"CRM_CONTACT".'}
    assert fail(add(client, "lead", "SEGMENT"))["error"] == "ERROR_CORE"  # a declared one
    assert names(client, "contact").count("UF_CRM_CONSENT_AT") == 1
    ok(add(client, "lead", "consent_at"))  # another object: fine
    resp = client.post("/_config", json={"userfield_duplicate_error": {
        "status": 409, "error": "DUPLICATE", "description": "{entity}:{field}"}})
    assert resp.status_code == 200, resp.get_json()
    ok(add(client, "deal", "SAME"))
    assert fail(add(client, "deal", "SAME"), 409) == {
        "error": "DUPLICATE", "error_description": "CRM_DEAL:UF_CRM_SAME"}


def test_bad_switch_values_and_declarations_are_refused() -> None:
    for config in ({"userfield_name_too_long": "cut"}, {"userfield_prefix": "never"},
                   {"userfield_admin_only": "yes"}, {"undeclared_user_fields": "keep"},
                   {"userfield_duplicate_error": {"status": 200}},
                   {"portals": [portal(user_fields={"company": []})]},
                   {"portals": [portal(user_fields={"lead": [{"FIELD_NAME": "SEGMENT"}]})]},
                   {"portals": [portal(user_fields={"lead": [
                       {"FIELD_NAME": "UF_CRM_ABCDEFGHIJKLMN"}]})]},
                   {"portals": [portal(user_fields={"lead": [{"FIELD_NAME": "UF_CRM_A"},
                                                             {"FIELD_NAME": "UF_CRM_A"}]})]}):
        with pytest.raises(ValueError):
            create_app(config)


# -- batch, auth, scope -------------------------------------------------------------------------


def test_the_setups_batch_lists_then_adds(client: Any) -> None:
    """The adapter's setup: ``userfield.list`` by FIELD_NAME in one batch, then the
    missing ones' ``userfield.add`` in another (crm_adapters/bitrix24/setup.py)."""
    first = ok(hook(client, "batch", {"halt": 0, "cmd": {
        "uf_lead_0": "crm.lead.userfield.list?filter[FIELD_NAME]=UF_CRM_FIRST_SOURCE",
        "uf_lead_1": "crm.lead.userfield.list?filter[FIELD_NAME]=UF_CRM_SEGMENT",
        "uf_contact_0": "crm.contact.userfield.list?filter[FIELD_NAME]=UF_CRM_CONSENT_AT"}}))
    assert first["result"]["uf_lead_0"] == [] and first["result"]["uf_contact_0"] == []
    assert first["result"]["uf_lead_1"][0]["FIELD_NAME"] == "UF_CRM_SEGMENT"
    assert first["result_total"] == {"uf_lead_0": 0, "uf_lead_1": 1, "uf_contact_0": 0}
    second = ok(hook(client, "batch", {"halt": 0, "cmd": {
        "add0": "crm.lead.userfield.add?fields[FIELD_NAME]=FIRST_SOURCE&"
                "fields[EDIT_FORM_LABEL]=first_source&fields[LIST_COLUMN_LABEL]=first_source&"
                "fields[USER_TYPE_ID]=string&fields[XML_ID]=UF_CRM_FIRST_SOURCE",
        "add1": "crm.contact.userfield.add?fields[FIELD_NAME]=CONSENT_AT&"
                "fields[USER_TYPE_ID]=string",
        "add2": "crm.contact.userfield.add?fields[FIELD_NAME]=CONSENT_AT&"
                "fields[USER_TYPE_ID]=string",
        "seen": "crm.lead.userfield.get?id=$result[add0]"}}))
    assert isinstance(second["result"]["add0"], int)
    assert second["result_error"] == {"add2": {
        "error": "ERROR_CORE", "error_description":
        'A user field with the code "UF_CRM_CONSENT_AT" already exists for "CRM_CONTACT".'}}
    seen = second["result"]["seen"]
    assert (seen["FIELD_NAME"], seen["XML_ID"], seen["EDIT_FORM_LABEL"]["en"]) == (
        "UF_CRM_FIRST_SOURCE", "UF_CRM_FIRST_SOURCE", "first_source")
    # what /_state shows (the contract tests' setup fingerprint reads it)
    state = client.get("/_state", query_string={"account": DEMO_DOMAIN}).get_json()
    fields = state["accounts"][0]["user_fields"]
    assert [f["FIELD_NAME"] for f in fields["lead"]] == ["UF_CRM_SEGMENT", "UF_CRM_FIRST_SOURCE"]
    assert [f["FIELD_NAME"] for f in fields["contact"]] == ["UF_CRM_TAGS", "UF_CRM_CONSENT_AT"]


def test_who_may_call_scope_admin_and_crm_rights() -> None:
    hooks = [{"user_id": u, "code": f"hookofuser{u}", "scopes": ["crm"]} for u in (1, 2, 3)]
    hooks.append({"user_id": 1, "code": "usersonly0000001", "scopes": ["user"]})
    client = make(portals=[portal(webhooks=hooks)])
    scoped = hook(client, "crm.lead.userfield.list", code="usersonly0000001")
    assert fail(scoped, 403)["error"] == "insufficient_scope"
    # by default (the newer pages): CRM administrators only
    for user in (2, 3):
        for method, body in (("crm.lead.userfield.list", {}),
                             ("crm.lead.userfield.add", {"fields": {
                                 "FIELD_NAME": "X", "USER_TYPE_ID": "string"}})):
            denied = hook(client, method, body, user=user, code=f"hookofuser{user}")
            assert fail(denied) == {"error": "", "error_description": "Access denied."}
    assert ok(hook(client, "crm.lead.userfield.list", user=1, code="hookofuser1")) == []
    # the older pages ("for everyone"): the CRM rights decide
    client.post("/_config", json={"userfield_admin_only": False})
    ok(hook(client, "crm.lead.userfield.add", {"fields": {
        "FIELD_NAME": "X", "USER_TYPE_ID": "string"}}, user=2, code="hookofuser2"))
    assert [r["FIELD_NAME"] for r in ok(hook(client, "crm.lead.userfield.list", user=3,
                                             code="hookofuser3"))] == ["UF_CRM_X"]
    read_only = hook(client, "crm.lead.userfield.add", {"fields": {
        "FIELD_NAME": "Y", "USER_TYPE_ID": "string"}}, user=3, code="hookofuser3")
    assert fail(read_only)["error_description"] == "Access denied."


def test_an_app_token_works_too(client: Any) -> None:
    installed = client.post("/_install", json={})
    assert installed.status_code == 200, installed.get_json()
    token = installed.get_json()["access_token"]
    resp = client.post(f"/{DEMO_DOMAIN}/rest/crm.deal.userfield.add", data=json.dumps({
        "auth": token, "fields": {"FIELD_NAME": "GCLID", "USER_TYPE_ID": "string"}}),
        content_type="application/json")
    assert isinstance(ok(resp), int)
    assert names(client, "deal") == ["UF_CRM_GCLID"]


# -- values through crm.<type>.add/update/get/list -------------------------------------------


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_a_user_fields_value_round_trips(client: Any, kind: str) -> None:
    ok(add(client, kind, "FIRST_SOURCE"))
    base = {"TITLE": "x"} if kind != "contact" else {"NAME": "x"}
    rec_id = ok(hook(client, f"crm.{kind}.add", {"fields": {
        **base, "UF_CRM_FIRST_SOURCE": "google"}}))
    got = ok(hook(client, f"crm.{kind}.get", {"id": rec_id}))
    assert got["UF_CRM_FIRST_SOURCE"] == "google"
    other = ok(hook(client, f"crm.{kind}.add", {"fields": base}))
    assert ok(hook(client, f"crm.{kind}.get", {"id": other}))["UF_CRM_FIRST_SOURCE"] is None
    ok(hook(client, f"crm.{kind}.update", {"id": rec_id, "fields": {
        "UF_CRM_FIRST_SOURCE": "yandex"}}))
    listed = ok(hook(client, f"crm.{kind}.list", {
        "filter": {"UF_CRM_FIRST_SOURCE": "yandex"}, "select": ["ID", "UF_*"]}))
    assert [(r["ID"], r["UF_CRM_FIRST_SOURCE"]) for r in listed] == [(str(rec_id), "yandex")]
    plain = ok(hook(client, f"crm.{kind}.list", {"filter": {"ID": rec_id}}))
    assert "UF_CRM_FIRST_SOURCE" not in plain[0]  # "*" leaves user fields out


def test_a_multiple_fields_values_and_undeclared_keys(client: Any) -> None:
    contact = ok(hook(client, "crm.contact.add", {"fields": {
        "NAME": "Ann", "UF_CRM_TAGS": ["vip", "webchat"], "UF_CRM_NOWHERE": "kept"}}))
    got = ok(hook(client, "crm.contact.get", {"id": contact}))
    assert got["UF_CRM_TAGS"] == ["vip", "webchat"]
    assert got["UF_CRM_NOWHERE"] == "kept"  # the lenient default
    ok(hook(client, "crm.contact.update", {"id": contact, "fields": {"UF_CRM_TAGS": ["vip"]}}))
    assert ok(hook(client, "crm.contact.get", {"id": contact}))["UF_CRM_TAGS"] == ["vip"]
    strict = make(portals=[portal(user_fields=SEEDED)], undeclared_user_fields="drop")
    lead = ok(hook(strict, "crm.lead.add", {"fields": {
        "TITLE": "x", "UF_CRM_SEGMENT": "b2b", "UF_CRM_FIRST_SOURCE": "google"}}))
    got = ok(hook(strict, "crm.lead.get", {"id": lead}))
    assert got["UF_CRM_SEGMENT"] == "b2b" and "UF_CRM_FIRST_SOURCE" not in got
    ok(add(strict, "lead", "FIRST_SOURCE"))  # created: now it is written
    ok(hook(strict, "crm.lead.update", {"id": lead, "fields": {"UF_CRM_FIRST_SOURCE": "g"}}))
    assert ok(hook(strict, "crm.lead.get", {"id": lead}))["UF_CRM_FIRST_SOURCE"] == "g"


def test_ids_are_per_portal() -> None:
    other = {"domain": "other.bitrix24.com", "member_id": "d897063e1ce7c5eb9f04b9751eef5915",
             "users": [{"ID": 1, "NAME": "Olga", "ADMIN": True}],
             "webhooks": [{"user_id": 1, "code": "otherportalcode1", "scopes": ["crm"]}]}
    client = make(portals=[portal(), other])
    mine = ok(add(client, "lead", "A"))
    theirs = ok(client.post("/other.bitrix24.com/rest/1/otherportalcode1/crm.lead.userfield.add",
                            json={"fields": {"FIELD_NAME": "A", "USER_TYPE_ID": "string"}}))
    assert mine == theirs  # each portal numbers its own
    assert names(client, "lead") == ["UF_CRM_A"]
