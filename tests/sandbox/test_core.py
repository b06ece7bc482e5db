"""The sandbox core (``sandbox/core``): its pieces on their own, and the one
control API every vendor sandbox serves, asserted across all four vendors.

The vendor suites (``test_<vendor>_sandbox.py``) check each vendor's behaviour
against its contract; here the shared machinery is checked directly (OAuth
codes and token rotation, rate-limit windows and buckets, webhook dispatch
with retries and its record, configuration merging, statistics) and the
common control shape is checked by iterating over the vendors.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from flask import Flask, jsonify, request

from sandbox import amocrm, bitrix24, hubspot, telegram
from sandbox.core.clock import Clock
from sandbox.core.config import Settings, merge, require_bools, require_positive_ints
from sandbox.core.faults import FaultPlan
from sandbox.core.oauth import RefreshPolicy, Rejected, TokenFormat, TokenServer
from sandbox.core.ratelimit import RollingWindow, TokenBucket
from sandbox.core.stats import RequestStats
from sandbox.core.webhooks import (
    Backoff,
    DeliveryLog,
    Dispatcher,
    Job,
    RetrySchedule,
    send,
)
from tests.sandbox import test_amocrm_sandbox as amo_suite
from tests.sandbox import test_bitrix24_sandbox as b24_suite
from tests.sandbox import test_hubspot_sandbox as hs_suite
from tests.support.servers import serve_wsgi

# -- helpers ----------------------------------------------------------------------------


def frozen_clock() -> Clock:
    clock = Clock()
    clock.freeze(True)
    return clock


@pytest.fixture
def receiver() -> Iterator[dict[str, Any]]:
    """A real HTTP receiver: records each request, answers the queued statuses
    (then 200)."""
    got: list[dict[str, Any]] = []
    statuses: list[int] = []
    app = Flask("core-receiver")

    @app.route("/<path:path>", methods=["GET", "POST"])
    def hook(path: str) -> Any:
        got.append({"path": "/" + path, "method": request.method,
                    "headers": dict(request.headers), "body": request.get_data(as_text=True)})
        return jsonify({"ok": True, "n": len(got)}), statuses.pop(0) if statuses else 200

    with serve_wsgi(app) as srv:
        yield {"url": srv.url, "got": got, "statuses": statuses}


def wait_for(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.02)
    raise AssertionError("condition not met in time")


# -- the OAuth server ---------------------------------------------------------------------


def _server(clock: Clock, *, keep_used_codes: bool = True) -> TokenServer:
    counter = iter(range(1, 10_000))
    return TokenServer(clock.now, TokenFormat(
        code=lambda: f"code-{next(counter)}",
        access=lambda account, user, expires, grant: f"at-{account}-{user}-{next(counter)}",
        refresh=lambda: f"rt-{next(counter)}"), keep_used_codes=keep_used_codes)


def test_codes_are_single_use_bound_to_account_and_redirect_and_short_lived() -> None:
    clock = frozen_clock()
    oauth = _server(clock)
    code = oauth.issue_code("acct-1", 7, "client", ["crm"], "https://b.test/cb", ttl=30)
    with pytest.raises(Rejected) as wrong:
        oauth.redeem(code.value, account="acct-2")
    assert wrong.value.reason == "wrong_account"
    with pytest.raises(Rejected) as moved:
        oauth.redeem(code.value, redirect_uri="https://evil.test/cb")
    assert moved.value.reason == "redirect_mismatch"
    redeemed = oauth.redeem(code.value, account="acct-1", redirect_uri="https://b.test/cb")
    assert (redeemed.user_id, redeemed.scopes, redeemed.used) == (7, ["crm"], True)
    with pytest.raises(Rejected) as again:
        oauth.redeem(code.value)
    assert again.value.reason == "used"
    late = oauth.issue_code("acct-1", 7, "client", [], "", ttl=30)
    clock.advance(30)  # a code lives exactly ttl seconds
    with pytest.raises(Rejected) as expired:
        oauth.redeem(late.value)
    assert expired.value.reason == "expired"
    with pytest.raises(Rejected) as unknown:
        oauth.redeem("nope")
    assert unknown.value.reason == "unknown"


def test_used_and_expired_codes_can_be_forgotten() -> None:
    clock = frozen_clock()
    oauth = _server(clock, keep_used_codes=False)
    code = oauth.issue_code("a", 1, "c", [], "", ttl=10)
    oauth.redeem(code.value)
    assert code.value not in oauth.codes
    with pytest.raises(Rejected) as gone:
        oauth.redeem(code.value)
    assert gone.value.reason == "unknown"  # not "used": the vendor forgot it


def test_refresh_rotation_retires_the_old_token_and_reuse_can_revoke_the_family() -> None:
    clock = frozen_clock()
    oauth = _server(clock)
    access, refresh = oauth.issue("a", 1, "c", ["crm"], access_ttl=60, refresh_ttl=3600,
                                  redirect_uri="https://b.test/cb")
    assert access.expires_at == clock.now() + 60 and access.refresh == refresh.token
    with pytest.raises(Rejected) as wrong:
        oauth.refresh_grant(refresh.token, RefreshPolicy(), access_ttl=60, refresh_ttl=3600,
                            account="other")
    assert wrong.value.reason == "wrong_account"
    with pytest.raises(Rejected) as moved:
        oauth.refresh_grant(refresh.token, RefreshPolicy(), access_ttl=60, refresh_ttl=3600,
                            redirect_uri="https://evil.test/cb")
    assert moved.value.reason == "redirect_mismatch"
    access2, refresh2 = oauth.refresh_grant(refresh.token, RefreshPolicy(), access_ttl=60,
                                            refresh_ttl=3600, redirect_uri="https://b.test/cb")
    assert refresh2.token != refresh.token and refresh.token not in oauth.refresh
    assert oauth.bearer(access.token) is not None  # old access tokens live on
    with pytest.raises(Rejected) as reused:
        oauth.refresh_grant(refresh.token, RefreshPolicy(), access_ttl=60, refresh_ttl=3600)
    assert reused.value.reason == "reused"
    assert oauth.live_refresh(refresh2.token) is not None  # plain reuse revokes nothing
    with pytest.raises(Rejected):
        oauth.refresh_grant(refresh.token, RefreshPolicy(revoke_family_on_reuse=True),
                            access_ttl=60, refresh_ttl=3600)
    assert oauth.live_refresh(refresh2.token) is None
    assert oauth.bearer(access.token) is None and oauth.bearer(access2.token) is None


def test_refresh_without_rotation_grace_period_and_expiry() -> None:
    clock = frozen_clock()
    oauth = _server(clock)
    _, refresh = oauth.issue("a", 1, "c", [], access_ttl=60, refresh_ttl=None)
    again, same = oauth.refresh_grant(refresh.token, RefreshPolicy(rotate=False),
                                      access_ttl=60, refresh_ttl=None)
    assert same is refresh and again.refresh == refresh.token
    # with a grace period the replaced token keeps working that long
    _, first = oauth.issue("b", 2, "c", [], access_ttl=60, refresh_ttl=100)
    graced = RefreshPolicy(grace_s=5)
    _, second = oauth.refresh_grant(first.token, graced, access_ttl=60, refresh_ttl=100)
    clock.advance(4)
    _, third = oauth.refresh_grant(first.token, graced, access_ttl=60, refresh_ttl=100)
    assert len({first.token, second.token, third.token}) == 3
    clock.advance(1)
    with pytest.raises(Rejected) as replaced:
        oauth.refresh_grant(first.token, graced, access_ttl=60, refresh_ttl=100)
    assert replaced.value.reason == "replaced"
    clock.advance(100)
    with pytest.raises(Rejected) as expired:
        oauth.refresh_grant(second.token, graced, access_ttl=60, refresh_ttl=100)
    assert expired.value.reason == "expired"
    assert oauth.live_refresh(second.token) is None


def test_revoke_access_on_refresh_revoke_refresh_and_revoke_account() -> None:
    clock = frozen_clock()
    oauth = _server(clock)
    other_user = oauth.issue_access("a", 2, "c", [], clock.now() + 60)
    same_user = oauth.issue_access("a", 1, "c", [], clock.now() + 60)
    _, refresh = oauth.issue("a", 1, "c", [], access_ttl=60, refresh_ttl=None)
    fresh, _ = oauth.refresh_grant(refresh.token, RefreshPolicy(revoke_access_on_refresh=True),
                                   access_ttl=60, refresh_ttl=None)
    assert oauth.bearer(same_user.token) is None and oauth.bearer(other_user.token) is not None
    assert oauth.bearer(fresh.token) is not None
    kept, kept_refresh = oauth.issue("a", 1, "c", [], access_ttl=60, refresh_ttl=None)
    dropped, dropped_refresh = oauth.issue("a", 1, "c", [], access_ttl=60, refresh_ttl=None)
    assert oauth.revoke_refresh(dropped_refresh.token) is True
    assert oauth.bearer(dropped.token) is None and oauth.bearer(kept.token) is not None
    assert oauth.revoke_refresh(dropped_refresh.token) is False
    code = oauth.issue_code("a", 1, "c", [], "", ttl=30)
    elsewhere = oauth.issue("z", 1, "c", [], access_ttl=60, refresh_ttl=None)
    oauth.revoke_account("a", codes=True)
    assert not [t for t in oauth.access.values() if t.account == "a"]
    assert kept_refresh.token not in oauth.refresh and code.value not in oauth.codes
    assert oauth.bearer(elsewhere[0].token) is not None
    clock.advance(61)
    oauth.prune()
    assert oauth.access == {}


# -- rate limiters ----------------------------------------------------------------------------


def test_rolling_window_counts_accepted_requests_over_its_span() -> None:
    clock = frozen_clock()
    window = RollingWindow(clock.now)
    assert [window.admit("k", 3, 10.0) for _ in range(4)] == [True, True, True, False]
    assert window.used("k", 10.0) == 3 and window.used("other", 10.0) == 0
    clock.advance(4)
    assert window.admit("k", 3, 10.0) is False
    assert window.wait("k", 10.0) == pytest.approx(6.0)  # the oldest leaves at t=10
    clock.advance(6)
    assert window.used("k", 10.0) == 0 and window.admit("k", 3, 10.0) is True
    window.add("k")
    assert window.full("k", 2, 10.0)
    window.reset_key("k")
    assert window.used("k", 10.0) == 0


def test_token_bucket_bursts_then_refills_and_takes_all_or_nothing() -> None:
    clock = frozen_clock()
    bucket = TokenBucket(clock.now)
    assert [bucket.take("chat", 1.0, 3) for _ in range(4)] == [True, True, True, False]
    assert bucket.level("chat", 1.0) == pytest.approx(3.0)
    assert bucket.take_all([("chat", 1.0, 3)]) == pytest.approx(1.0)  # one token per second
    clock.advance(0.5)
    assert bucket.take_all([("chat", 1.0, 3)]) == pytest.approx(0.5)
    clock.advance(0.5)
    assert bucket.take("chat", 1.0, 3) is True
    # several buckets: refused by one, none is charged
    wait = bucket.take_all([("bot", 30.0, 30), ("chat", 1.0, 3)])
    assert wait == pytest.approx(1.0) and bucket.level("bot", 30.0) == 0.0
    clock.advance(1)
    assert bucket.take_all([("bot", 30.0, 30), ("chat", 1.0, 3)]) == 0.0
    assert bucket.level("bot", 30.0) == pytest.approx(1.0)
    # a larger capacity takes effect at once, the level is kept
    assert bucket.take("chat", 1.0, 5) is True
    assert bucket.levels(lambda key: 1.0)["chat"] == pytest.approx(4.0)
    clock.advance(10)
    assert bucket.level("chat", 1.0) == 0.0


# -- outbound webhooks ------------------------------------------------------------------------


def test_send_reports_answers_and_failures(receiver: dict[str, Any]) -> None:
    receiver["statuses"].append(503)
    outcome = send(receiver["url"] + "/hook", b'{"a":1}',
                   {"Content-Type": "application/json", "User-Agent": None}, 5.0)
    assert (outcome.status, outcome.body(), outcome.error) == (503, {"ok": True, "n": 1}, None)
    [hit] = receiver["got"]
    assert hit["body"] == '{"a":1}'
    assert not hit["headers"].get("User-Agent", "").startswith("python-requests")
    gone = send("http://127.0.0.1:9/nothing", b"", {}, 2.0)
    assert gone.status is None and gone.error and gone.error_kind in ("refused", "connect")
    assert gone.body() is None


def test_delivery_log_is_bounded_and_numbered() -> None:
    log = DeliveryLog(3, numbered=True)
    for i in range(5):
        log.append({"n": i})
    assert [(r["id"], r["n"]) for r in log] == [(3, 2), (4, 3), (5, 4)]
    log.resize(1)
    assert len(log) == 1 and log.list()[0]["n"] == 4


def test_retry_policies() -> None:
    table = [{"after_s": 300, "on": "invalid"}, {"after_s": 900, "on": "5xx"}]
    schedule = RetrySchedule(table, {"invalid": lambda c: c < 100 or c >= 300,
                                     "5xx": lambda c: 500 <= c <= 599})
    assert schedule.delay(1, 0) == 300.0 and schedule.delay(1, 200) is None
    assert schedule.delay(2, 404) is None and schedule.delay(2, 502) == 900.0
    assert schedule.delay(3, 502) is None  # past the table
    backoff = Backoff(attempts=3, base=0.5, cap=1.5)
    assert [backoff.delay(n) for n in (1, 2, 3, 4)] == [0.5, 1.0, 1.5, None]
    assert backoff.delay(1, "7") == 1.5 and backoff.delay(1, "1") == 1.0


def test_dispatcher_retries_on_schedule_and_records_every_attempt(
        receiver: dict[str, Any]) -> None:
    clock = frozen_clock()
    log = DeliveryLog(100, numbered=True)
    schedule = RetrySchedule([{"after_s": 300, "on": "bad"}, {"after_s": 900, "on": "bad"}],
                             {"bad": lambda code: not 200 <= code <= 299})
    dispatcher: Dispatcher

    def attempt(job: Job) -> dict[str, Any]:
        outcome = send(job.data["url"], b"x", {}, 5.0)
        record = log.append({"attempt": job.attempt, "status": outcome.status,
                             "at": clock.now()})
        delay = schedule.delay(job.attempt, outcome.status or 0)
        if outcome.status != 200 and delay is not None:
            dispatcher.schedule(job.retry(clock.now() + delay))
        return record

    dispatcher = Dispatcher(attempt, now=clock.now, name="core-test")
    receiver["statuses"].extend([500, 500])
    [first] = dispatcher.deliver_now([Job(clock.now(), data={"url": receiver["url"] + "/h"})])
    assert (first["id"], first["attempt"], first["status"]) == (1, 1, 500)
    [pending] = dispatcher.pending()
    assert pending.attempt == 2 and pending.due == clock.now() + 300
    time.sleep(0.2)
    assert len(receiver["got"]) == 1  # not due yet on the sandbox clock
    clock.advance(300)  # the scheduler notices the moved clock within a second
    wait_for(lambda: len(log) == 2)
    assert log.list()[1]["attempt"] == 2 and log.list()[1]["status"] == 500
    [third] = dispatcher.pending()
    assert third.attempt == 3 and third.due == clock.now() + 900
    assert dispatcher.flush()[0]["status"] == 200  # flush runs it now
    assert dispatcher.pending() == [] and [r["status"] for r in log] == [500, 500, 200]
    # background first attempts
    dispatcher.submit([Job(clock.now(), data={"url": receiver["url"] + "/bg"})])
    wait_for(lambda: len(log) == 4 and dispatcher.in_flight == 0)
    assert receiver["got"][-1]["path"] == "/bg"
    dispatcher.schedule(Job(clock.now() + 1000, data={"url": receiver["url"] + "/later"}))
    dispatcher.reset()
    assert dispatcher.pending() == []


# -- configuration and statistics -------------------------------------------------------------


def test_settings_merge_deeply_refuse_unknown_and_frozen_keys() -> None:
    defaults = {"accounts": [{"id": 1}], "limits": {"per_s": 7, "burst": 10},
                "flags": {"a": True}, "strict": False}

    def check(cfg: dict[str, Any]) -> None:
        require_positive_ints(cfg["limits"], ("per_s", "burst"))
        require_bools(cfg, ("strict",))

    settings = Settings(defaults, check=check, frozen={"accounts"}, replace={"flags"},
                        prepare=lambda cfg: {**cfg, "accounts": [dict(a, ready=True)
                                                                 for a in cfg["accounts"]]})
    cfg = settings.build({"limits": {"per_s": 3}, "flags": {"b": False},
                          "accounts": [{"id": 2}]})
    assert cfg["limits"] == {"per_s": 3, "burst": 10}  # merged key by key
    assert cfg["flags"] == {"b": False}  # replaced whole
    assert cfg["accounts"] == [{"id": 2, "ready": True}]
    assert defaults["limits"]["per_s"] == 7  # defaults untouched
    updated = settings.update(cfg, {"limits": {"burst": 20}, "strict": True})
    assert updated["limits"] == {"per_s": 3, "burst": 20} and cfg["limits"]["burst"] == 10
    with pytest.raises(ValueError, match="not changeable at run time"):
        settings.update(cfg, {"accounts": []})
    with pytest.raises(ValueError, match="unknown config keys"):
        settings.build({"typo": 1})
    with pytest.raises(ValueError, match="per_s must be a positive integer"):
        settings.update(cfg, {"limits": {"per_s": 0}})
    with pytest.raises(ValueError, match="strict must be a boolean"):
        settings.update(cfg, {"strict": "yes"})
    assert merge({"a": {"b": 1}}, {"a": {"c": 2}}) == {"a": {"b": 1, "c": 2}}
    assert settings.runtime_keys == {"limits", "flags", "strict"}


def test_request_stats_select_by_time_and_label_routes() -> None:
    stats = RequestStats(with_detail=True, label=lambda method, route: route)
    stats.record("POST", "batch", 200, ["crm.lead.add"])
    time.sleep(0.01)
    since = time.time()
    stats.record("GET", "crm.lead.get", 503)
    everything = stats.body(None, True)
    assert everything["total"] == 2 and everything["by_route"] == {"batch": 1, "crm.lead.get": 1}
    assert everything["requests"][0][1:] == ["POST", "batch", 200, ["crm.lead.add"]]
    recent = stats.body(since, False, lambda items: {"n": len(items)})
    assert recent["total"] == 1 and recent["by_status"] == {"503": 1} and recent["n"] == 1
    assert "requests" not in recent
    plain = RequestStats()
    plain.record("GET", "/x", 200)
    assert plain.body(None, True)["requests"][0][1:] == ["GET", "/x", 200]
    assert plain.body(None, True)["by_route"] == {"GET /x": 1}


# -- faults scoped to one endpoint -----------------------------------------------------------


def _faulted_app(plan: FaultPlan) -> tuple[Any, list[str]]:
    """A tiny vendor: ``GET|PATCH|POST /things/<id>`` (each call that gets
    through is recorded), errors as ``{"vendor_error": status}``."""
    app = Flask("faulted")
    done: list[str] = []

    def error_body(status: int, retry_after: float | None) -> Any:
        resp = jsonify({"vendor_error": status})
        resp.status_code = status
        if retry_after is not None:
            resp.headers["Retry-After"] = str(retry_after)
        return resp

    plan.install(app, error_body=error_body, applies=lambda: not request.path.startswith("/_"))

    @app.route("/things/<thing>", methods=["GET", "PATCH", "POST"])
    def thing(thing: str) -> Any:
        done.append(f"{request.method} {thing}")
        return jsonify({"id": thing})

    return app.test_client(), done


def test_route_fault_applies_to_its_method_and_path_only() -> None:
    client, done = _faulted_app(FaultPlan(seed=3))
    plan = client.post("/_faults", json={
        "error_rate": 1.0,  # the plan-wide odds: every other call fails
        "routes": [{"method": "patch", "path": r"^/things/[^/]+$", "error_rate": 1.0},
                   {"method": "GET", "path": r"^/things/ok$"}]}).get_json()
    assert [(r["method"], r["path"], r["error_rate"]) for r in plan["routes"]] == [
        ("PATCH", r"^/things/[^/]+$", 1.0), ("GET", r"^/things/ok$", 0.0)]
    refused = client.patch("/things/a", json={})
    assert refused.status_code == 503 and refused.get_json() == {"vendor_error": 503}
    assert done == []  # answered before the handler: nothing done
    # a matching rule's odds replace the plan-wide ones (0 here: it passes)
    assert client.get("/things/ok").status_code == 200 and done == ["GET ok"]
    assert client.get("/things/a").status_code == 503  # no rule: the plan-wide odds
    assert client.post("/things/a").status_code == 503  # another method: no rule
    snapshot = client.get("/_faults").get_json()
    first, second = snapshot["routes"]
    assert (first["calls"], first["counters"]) == (1, {"5xx": 1})
    assert (second["calls"], second["counters"]) == (1, {})
    assert snapshot["counters"] == {"5xx": 2}  # the plan-wide faults, apart

    # one endpoint failing half of the time, every kind the plan knows
    client.post("/_faults", json={"reset": True, "seed": 11, "routes": [
        {"method": "PATCH", "path": "/things/", "error_rate": 0.4, "rate_429": 0.1}]})
    done.clear()
    codes = Counter(client.patch(f"/things/{n}").status_code for n in range(400))
    assert 160 - 45 < codes[503] < 160 + 45 and 40 - 25 < codes[429] < 40 + 25, codes
    assert len(done) == codes[200] and codes[200] + codes[503] + codes[429] == 400
    rule = client.get("/_faults").get_json()["routes"][0]
    assert rule["calls"] == 400
    assert rule["counters"] == {"5xx": codes[503], "429": codes[429]}
    assert all(client.get(f"/things/{n}").status_code == 200 for n in range(20))

    # a storm still comes first; posting routes replaces them, [] clears them
    client.post("/_faults", json={"storm_seconds": 30, "storm_kind": "5xx",
                                  "routes": [{"path": "/things/", "error_rate": 0.0}]})
    assert client.patch("/things/s").status_code == 503
    client.post("/_faults", json={"storm_until": 0, "routes": []})
    assert client.patch("/things/s").status_code == 200
    assert client.get("/_faults").get_json()["routes"] == []


@pytest.mark.parametrize("bad", [
    {"routes": {"path": "/x"}},
    {"routes": [{"method": "PATCH"}]},
    {"routes": [{"path": "("}]},
    {"routes": [{"path": "/x", "error_rate": 1.5}]},
    {"routes": [{"path": "/x", "error_rate": True}]},
    {"routes": [{"path": "/x", "error_rate": 0.6, "rate_429": 0.6}]},
    {"routes": [{"path": "/x", "status": 500}]},
    {"routes": ["/x"]},
], ids=lambda b: json.dumps(b))
def test_route_faults_refuse_bad_rules_and_keep_the_plan(bad: dict[str, Any]) -> None:
    client, _ = _faulted_app(FaultPlan())
    client.post("/_faults", json={"routes": [{"path": "/keep", "error_rate": 0.5}]})
    resp = client.post("/_faults", json=bad)
    assert resp.status_code == 400 and resp.get_json()["error"] == "invalid_faults"
    assert [r["path"] for r in client.get("/_faults").get_json()["routes"]] == ["/keep"]


def test_route_fault_on_hubspots_delivery_report_looks_like_hubspot(
        receiver: dict[str, Any]) -> None:
    """The fault the chaos soak gives HubSpot's custom-channel message status
    update (the bridge's delivery report): HubSpot's own 5xx and 429 bodies,
    and a refused update records nothing."""
    client, _ = _hubspot_conversation(receiver["url"] + "/hooks")
    reply = client.post("/_reply", json={"conversation": "conv-1", "text": "Hello"}).get_json()
    message = reply["message"]
    token = hs_suite.oauth_token(client)["access_token"]
    url = f"/conversations/v3/custom-channels/{message['channelId']}/messages/{message['id']}"

    def history() -> list[dict[str, Any]]:
        [thread] = client.get("/_state").get_json()["accounts"][0]["threads"]
        out = next(m for m in thread["messages"] if m["id"] == message["id"])
        return list(out["statusHistory"])

    rule = {"method": "PATCH", "path": r"/conversations/v3/custom-channels/[^/]+/messages/[^/]+$"}
    client.post("/_faults", json={"routes": [{**rule, "error_rate": 1.0}]})
    failed = hs_suite.call(client, "PATCH", url, token, body={"statusType": "SENT"})
    assert failed.status_code == 503  # validated against HubSpot's Error schema
    body = failed.get_json()
    assert body["status"] == "error" and body["category"] and body["correlationId"]
    assert history() == []  # refused before the handler: not recorded
    assert hs_suite.call(client, "GET", url, token).status_code == 200  # GET untouched
    client.post("/_faults", json={"routes": [{**rule, "rate_429": 1.0}], "retry_after": 2})
    limited = hs_suite.call(client, "PATCH", url, token, body={"statusType": "SENT"})
    assert limited.status_code == 429 and limited.headers["Retry-After"] == "2"
    assert limited.get_json()["policyName"] == "TEN_SECONDLY_ROLLING"
    assert history() == []

    client.post("/_faults", json={"seed": 5, "routes": [{**rule, "error_rate": 0.5}]})
    codes = [hs_suite.call(client, "PATCH", url, token, body={"statusType": "SENT"}).status_code
             for _ in range(40)]
    assert set(codes) == {200, 503} and 8 < codes.count(503) < 32, codes
    assert len(history()) == codes.count(200)  # one record per update that got through
    counted = client.get("/_faults").get_json()["routes"][0]
    assert counted["calls"] == 40 and counted["counters"] == {"5xx": codes.count(503)}


# -- the common control API, across the vendors -------------------------------------------------


@dataclass(frozen=True)
class VendorCase:
    name: str
    make: Callable[[], Any]
    kind: str
    #: selector -> the account key it picks
    selectors: dict[str, Any]
    runtime_change: dict[str, Any]
    frozen_key: str | None


VENDORS = [
    VendorCase("hubspot", lambda: hubspot.create_app().test_client(), "crm",
               {"62515": 62515, "62516": 62516}, {"per_10s": 7}, "portals"),
    VendorCase("amocrm", lambda: amocrm.create_app().test_client(), "crm",
               {"demo": "demo", str(amocrm.DEMO_ACCOUNT_ID): "demo"}, {"per_second": 3},
               "accounts"),
    VendorCase("bitrix24", lambda: bitrix24.create_app().test_client(), "crm",
               {bitrix24.DEMO_DOMAIN: bitrix24.DEMO_DOMAIN,
                bitrix24.DEMO_MEMBER_ID: bitrix24.DEMO_DOMAIN},
               {"findbycomm_empty_as_list": False}, "portals"),
    VendorCase("telegram", lambda: telegram.create_app().test_client(), "channel",
               {telegram.DEMO_BOT_TOKEN: 7000000001, "7000000001": 7000000001,
                "@demo_bridge_bot": 7000000001}, {"per_chat_per_s": 2.0}, None),
]
CRMS = [v for v in VENDORS if v.kind == "crm"]


@pytest.mark.parametrize("vendor", VENDORS, ids=lambda v: v.name)
def test_state_is_an_accounts_envelope_with_a_common_selector(vendor: VendorCase) -> None:
    client = vendor.make()
    state = client.get("/_state").get_json()
    accounts = state["accounts"]
    assert isinstance(accounts, list) and accounts
    keys = [a["account"] for a in accounts]
    assert len(set(keys)) == len(keys)
    for selector, key in vendor.selectors.items():
        picked = client.get("/_state", query_string={"account": selector}).get_json()
        assert [a["account"] for a in picked["accounts"]] == [key], selector
        assert picked["accounts"][0] == next(a for a in accounts if a["account"] == key)
    missing = client.get("/_state", query_string={"account": "no-such-account"})
    assert missing.status_code == 404 and missing.get_json()["error"] == "account_not_found"


@pytest.mark.parametrize("vendor", VENDORS, ids=lambda v: v.name)
def test_config_reads_changes_and_refuses_the_same_way(vendor: VendorCase) -> None:
    client = vendor.make()
    before = client.get("/_config").get_json()
    assert isinstance(before, dict)
    after = client.post("/_config", json=vendor.runtime_change)
    assert after.status_code == 200
    for key, value in vendor.runtime_change.items():
        assert after.get_json()[key] == value and client.get("/_config").get_json()[key] == value
    bogus = client.post("/_config", json={"no_such_setting": 1})
    assert bogus.status_code == 400 and bogus.get_json()["error"] == "invalid_config"
    assert "no_such_setting" in bogus.get_json()["message"]
    not_object = client.post("/_config", data="[1]", content_type="application/json")
    assert not_object.status_code == 400 and not_object.get_json()["error"] == "bad_request"
    if vendor.frozen_key:
        frozen = client.post("/_config", json={vendor.frozen_key: []})
        assert frozen.status_code == 400 and frozen.get_json()["error"] == "invalid_config"


@pytest.mark.parametrize("vendor", VENDORS, ids=lambda v: v.name)
def test_faults_stats_reset_and_clock_everywhere(vendor: VendorCase) -> None:
    client = vendor.make()
    plan = client.post("/_faults", json={"latency_ms": 1}).get_json()
    assert plan["latency_ms"] == 1 and plan["counters"] == {}
    stats = client.get("/_stats").get_json()
    assert {"now", "total", "by_route", "by_status", "requests"} <= set(stats)
    assert stats["total"] == 0  # control endpoints are never counted
    assert client.get("/_stats?since=soon").status_code == 400
    assert "requests" not in client.get("/_stats?requests=0").get_json()
    assert client.post("/_reset", json={}).get_json() == {"ok": True}
    assert client.get("/_faults").get_json()["latency_ms"] in (0, 1)
    start = client.get("/_clock").get_json()
    assert start["offset"] == 0 and start["frozen"] is False
    moved = client.post("/_clock", json={"freeze": True, "advance": 3600}).get_json()
    assert moved["offset"] == 3600 and moved["frozen"] is True
    assert moved["now"] == pytest.approx(time.time() + 3600, abs=5)
    assert client.get("/_clock").get_json()["now"] == moved["now"]  # frozen
    assert client.post("/_clock", json={"advance": "soon"}).status_code == 400
    assert client.post("/_clock", json={"freeze": False, "offset": 0}).get_json()["offset"] == 0


@pytest.mark.parametrize("vendor", VENDORS, ids=lambda v: v.name)
def test_every_vendor_takes_route_faults(vendor: VendorCase) -> None:
    client = vendor.make()
    plan = client.post("/_faults", json={"routes": [{"path": "/x", "error_rate": 0.5}]})
    assert plan.status_code == 200 and plan.get_json()["routes"][0]["error_rate"] == 0.5
    assert client.post("/_faults", json={"routes": [{"path": "("}]}).status_code == 400
    assert client.post("/_faults", json={"reset": True}).get_json()["routes"] == []


@pytest.mark.parametrize("vendor", VENDORS, ids=lambda v: v.name)
def test_crms_take_replies_channels_take_deliveries(vendor: VendorCase) -> None:
    client = vendor.make()
    if vendor.kind == "crm":
        assert client.post("/_deliver", json={}).status_code in (404, 405)
        no_text = client.post("/_reply", json={"conversation": "c-1"})
        assert no_text.status_code == 400 and "text" in no_text.get_json()["message"]
        no_target = client.post("/_reply", json={"text": "hi"})
        assert no_target.status_code == 400 and "conversation" in no_target.get_json()["message"]
        nowhere = client.post("/_reply", json={"conversation": "c-1", "text": "hi"})
        assert nowhere.status_code == 404, nowhere.get_json()
        elsewhere = client.post("/_reply", json={"account": "no-such-account",
                                                 "conversation": "c-1", "text": "hi"})
        assert elsewhere.status_code == 404
        assert elsewhere.get_json()["error"] == "account_not_found"
    else:
        assert client.post("/_reply", json={"text": "hi"}).status_code in (404, 405)
        assert client.get("/_sent").get_json() == {"sent": []}
        unhooked = client.post("/_deliver", json={"from": {"id": 1, "first_name": "A"},
                                                  "text": "hi"})
        assert unhooked.status_code == 409  # the bot has no webhook yet


# Per CRM: a customer conversation "conv-1" whose replies go to the receiver; returns
# (the client, the CRM contact id of the customer).


def _hubspot_conversation(url: str) -> tuple[Any, Any]:
    client = hs_suite.make()
    token = hs_suite.oauth_token(client)["access_token"]
    channel = hs_suite._channel(client, webhook=url)
    account = hs_suite._account(client, token, channel["id"])
    person = hs_suite.contact(client, token, firstname="Tina")
    published = hs_suite.call(
        client, "POST", f"/conversations/v3/custom-channels/{channel['id']}/messages", token,
        body=hs_suite._egg(account["id"], "hi", integrationThreadId="conv-1",
                           associateWithContactId=person["id"]))
    assert published.status_code == 201, published.get_json()
    return client, person["id"]


def _amocrm_conversation(url: str) -> tuple[Any, Any]:
    client = amo_suite.make()
    amo_suite.connect(client)
    assert client.post("/_channel", json={"hook_url": url + "/:scope_id"}).status_code == 200
    assert amo_suite.incoming(client, "conv-1", "m-1").status_code == 200
    [chat] = amo_suite.account_state(client)["chats"]
    return client, chat["contact_id"]


def _bitrix24_conversation(url: str) -> tuple[Any, Any]:
    client = b24_suite.make()
    tok = b24_suite.token(client)
    b24_suite.connect(client, tok)
    b24_suite.ok(b24_suite.call(client, "event.bind", tok, {"event": "OnImConnectorMessageAdd",
                                                             "handler": url}))
    b24_suite.ok(b24_suite.send(client, tok, b24_suite.customer_message(
        chat={"id": "conv-1"})))
    [chat] = b24_suite.crm(client)["chats"]
    assert chat["crm"]["entity"] == "lead"  # Bitrix24's tracker filed a lead
    contact = b24_suite.ok(b24_suite.hook(client, "crm.contact.add",
                                          {"fields": {"NAME": "Ivan"}}))
    b24_suite.ok(b24_suite.hook(client, "crm.lead.update", {
        "id": chat["crm"]["id"], "fields": {"CONTACT_ID": contact}}))
    return client, contact


CONVERSATIONS = {"hubspot": _hubspot_conversation, "amocrm": _amocrm_conversation,
                 "bitrix24": _bitrix24_conversation}


@pytest.mark.parametrize("vendor", CRMS, ids=lambda v: v.name)
def test_reply_fires_the_crm_webhook_and_answers_one_shape(
        vendor: VendorCase, receiver: dict[str, Any]) -> None:
    client, contact_id = CONVERSATIONS[vendor.name](receiver["url"] + "/hooks")
    by_conversation = client.post("/_reply", json={"conversation": "conv-1", "text": "Hello"})
    assert by_conversation.status_code == 200, by_conversation.get_json()
    answer = by_conversation.get_json()
    assert answer["message"] and answer["webhook"]["status"] == 200
    assert answer["webhook"]["error"] is None
    body = answer["webhook"]["body"]  # the bridge's answer: parsed, or its text (Bitrix24)
    assert (json.loads(body) if isinstance(body, str) else body) == {"ok": True, "n": 1}
    assert len(receiver["got"]) == 1 and "Hello" in receiver["got"][0]["body"]
    receiver["statuses"].append(500)
    by_contact = client.post("/_reply", json={"contact_id": contact_id, "text": "Again"})
    assert by_contact.status_code == 200, by_contact.get_json()
    assert by_contact.get_json()["webhook"]["status"] == 500  # the bridge's answer, reported
    assert len(receiver["got"]) == 2 and "Again" in receiver["got"][1]["body"]
    key = client.get("/_state").get_json()["accounts"][0]["account"]
    scoped = client.post("/_reply", json={"account": str(key), "conversation": "conv-1",
                                          "text": "Scoped"})
    assert scoped.status_code == 200 and len(receiver["got"]) == 3


def _hubspot_token_call(client: Any) -> Callable[[], int]:
    token = hs_suite.oauth_token(client)["access_token"]
    return lambda: int(hs_suite.call(client, "GET", "/crm/v3/objects/contacts", token,
                                     validate=False).status_code)


def _amocrm_token_call(client: Any) -> Callable[[], int]:
    token = amo_suite.token(client)
    return lambda: int(amo_suite.call(client, "GET", "account", token).status_code)


def _bitrix24_token_call(client: Any) -> Callable[[], int]:
    token = b24_suite.token(client)
    return lambda: int(b24_suite.call(client, "profile", token).status_code)


TOKEN_CALLS = {"hubspot": (_hubspot_token_call, 1800), "amocrm": (_amocrm_token_call, 86400),
               "bitrix24": (_bitrix24_token_call, 3600)}


@pytest.mark.parametrize("vendor", CRMS, ids=lambda v: v.name)
def test_the_clock_moves_every_crms_token_lifetimes(vendor: VendorCase) -> None:
    client = vendor.make()
    api_call, ttl = TOKEN_CALLS[vendor.name]
    status = api_call(client)
    assert status() == 200
    client.post("/_clock", json={"advance": ttl - 60})
    assert status() == 200
    client.post("/_clock", json={"advance": 61})
    assert status() == 401
