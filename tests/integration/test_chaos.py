"""The chaos soak's ``ci`` profile (``bench.chaos``, RELIABILITY.md 5 R1/R2/R4):
600 Telegram messages (10 % redelivered, 5 % reordered) into the sandbox
HubSpot while it fails 20 % of the calls, 5 SIGKILLs of a busy worker (the
job runs in it), the web process exiting just before and just after its ingest
commit, one Redis FLUSHALL, a few seconds in which HubSpot refuses the inbox
message of every append for good after its note was written (then the
operator replays the failed messages), and HubSpot's delivery-report endpoint
(the custom-channel message status update) failing 50 % of its calls with
its 5xx — then 0 lost, 0 duplicated, 0 unexpected, 0 out of order, replies
sent exactly once, every reply's delivery report in HubSpot exactly once
(a call the sandbox failed did not arrive) with no ``followup_failed`` in
``bridge status``, drained within 120 s of the last fault.

One run takes about 3 minutes on 2 cores, so it runs once: on PostgreSQL
when the suite has one (``BRIDGE_TEST_POSTGRES_URL``, as in CI), else on
SQLite. Webhook latencies are reported in the figures, never asserted here.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.chaos import PROFILES, run_profile
from tests.conftest import POSTGRES_URL

pytestmark = pytest.mark.integration


@pytest.mark.timeout(420)
def test_ci_profile_loses_duplicates_and_reorders_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    profile = PROFILES["ci"]
    # PostgreSQL (a throw-away schema bench.chaos makes and drops) or SQLite
    figures = run_profile(profile, database_url=POSTGRES_URL or None, workdir=tmp_path)
    (run,) = figures["runs"]
    with capsys.disabled():  # the figures, for the CI log
        print("\nbench.chaos ci:", json.dumps(run, sort_keys=True))

    # the workload and the faults really happened
    messages = profile.users * profile.per_user
    assert run["messages"] == messages == 600 and run["unacked"] == 0, run
    assert run["redelivered"] > 50 and run["reordered"] > 20, run
    assert run["kills"] == profile.kills and run["redis_wipes"] == 1, run
    assert {"5xx", "429", "timeout", "commit_then_timeout"} <= set(run["crm_faults"]), run
    # inbox messages refused for good after their notes were written; the
    # operator replayed them (bench.chaos.replay_failed)
    assert run["crm_faults"].get("refused", 0) > 0, run
    assert run["replies"]["acked"] > 0, run

    # Jepsen's total-queue: nothing lost, nothing twice, nothing made up
    assert (run["contacts"], run["entries"], run["inbox_messages"]) == (50, messages, messages), run
    assert run["lost"] == 0 and run["acked_not_stored"] == 0, run["examples"]
    assert run["duplicated"] == run["inbox_duplicated"] == run["bridge_duplicates"] == 0, run
    assert run["unexpected"] == 0, run["examples"]
    assert run["out_of_order"] == run["write_order_violations"] == 0, run["examples"]
    replies = run["replies"]
    assert replies["duplicated"] == replies["lost"] == replies["unexpected"] == 0, replies

    # the delivery reports, through an endpoint failing half of the calls:
    # every one arrived, once, with the reply's outcome; none refused for good
    reports = run["delivery_reports"]
    with capsys.disabled():
        print(
            "delivery reports: {replies} replies, {attempted} calls, {injected} failed "
            "(injected 5xx), {arrived_once} arrived once, {missing} missing, "
            "{duplicated} duplicated, {outcome_unknown} outcome unknown, "
            "followup_failed {followup_failed}".format(**reports)
        )
    assert reports["error_rate"] == profile.report_error_rate == 0.5, reports
    assert reports["replies"] >= replies["acked"] > 0, (reports, replies)
    assert reports["injected"] > 0 and reports["injected_by_kind"] == {
        "5xx": reports["injected"]
    }, reports
    # each call either failed (injected, nothing done) or arrived
    assert reports["attempted"] == reports["injected"] + reports["arrived"], reports
    # a reply whose send a kill interrupted has no outcome to report (the
    # bridge flags it "outcome unknown" for an operator); nothing else may
    assert reports["outcome_unknown"] <= run["kills"], reports["examples"]
    assert reports["arrived_once"] + reports["outcome_unknown"] == reports["replies"], reports
    assert reports["arrived_once"] == reports["arrived"] > 0, reports
    assert reports["missing"] == reports["duplicated"] == reports["wrong_status"] == 0, reports
    assert reports["unexpected"] == 0, reports
    assert reports["followup_failed"] == 0 and reports["followups"] == {
        "done": reports["arrived_once"]
    }, reports

    # the outbox and the sweeper brought everything back in time
    assert run["drain_s"] is not None and run["drain_s"] <= 120, run
    assert set(run["bridge_messages"]["in"]) == {"synced"}, run["bridge_messages"]
    assert run["ok"], run
