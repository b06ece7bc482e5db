"""The service layer's decisions for one conversation, as pure functions.

A :class:`Ticket` is what the service layer keeps of a conversation: its
newest session (``bridge.service.sessions``), the line and owner routing
gave it, the greeting menu the client is in, the SLA clocks. Each event
(the client wrote, an operator replied, the clock passed a due time, the
CRM closed the deal) gives an :class:`Outcome`: the new ticket, what the
client is told (:class:`Say`: a menu, an out-of-hours notice, a rating
prompt, an answer from the knowledge base), and the CRM work it asks for
(:class:`Work`: a task due at opening, a note of the menu choice or the
rating, an alert to the line's supervisor). ``bridge.service.runner``
stores them in one transaction with the conversation's own rows, so each
event is acted on once.

Nothing here reads a clock, a database or the network: every moment and
every fact comes in as an argument (the tests pass them).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from bridge.service import after_hours, csat, menu, routing, sessions, sla, transfer
from bridge.service.knowledge import KnowledgeBase
from bridge.service.menu import MenuState
from bridge.service.sessions import SessionState
from bridge.service.sla import Clock, SlaState
from mappings.schema import SERVICE_FIELDS
from mappings.service import Line, ServicePolicy

__all__ = [
    "Context",
    "Outcome",
    "Say",
    "Ticket",
    "Work",
    "crm_closed",
    "next_check",
    "on_client_message",
    "on_operator_reply",
    "on_stage",
    "on_tags",
    "on_tick",
    "rate",
    "sla_from_dict",
    "sla_to_dict",
    "with_due",
]


#: the deal/lead/ticket fields the service layer writes (the CRM setup
#: creates them when the mapping has a ``service:`` section): the line, the
#: SLA's nearest due time, the session's rating
FIELDS = SERVICE_FIELDS


@dataclass(frozen=True)
class Ticket:
    """What the service layer keeps of one conversation."""

    #: the newest session (open, or closed and perhaps awaiting its rating)
    session: SessionState | None = None
    line: str | None = None
    owner: str | None = None
    route_reason: str | None = None
    #: the greeting menu the client is in (None: not in one)
    menu: MenuState | None = None
    sla: SlaState | None = None


@dataclass(frozen=True)
class Say:
    """A message the bridge sends the client itself."""

    #: menu | notice | csat | thanks | answer | transfer
    kind: str
    text: str
    #: what the client may press instead of typing: ``(id, label)``, the id
    #: being what they would type (the text lists them too)
    buttons: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class Work:
    """A CRM write: a ``task`` (for ``owner``, due at ``due``), a ``note``
    on the client's contact, or ``entity``: the conversation's deal/lead/
    ticket given to ``owner`` and its ``fields`` written; or ``notify``: the
    text sent to a supervisor's chat or address (``fields``: ``channel``,
    ``to``) through the tenant's account of that channel. ``key`` names it:
    asked twice, done once."""

    kind: str
    key: str
    text: str
    due: dt.datetime | None = None
    owner: str | None = None
    #: ``entity``: the deal/lead/ticket's fields to write (:data:`FIELDS`)
    fields: Mapping[str, str] = dataclasses.field(default_factory=dict)
    #: ``entity``: tags to add to the deal/lead/ticket (where the CRM has tags)
    tags: tuple[str, ...] = ()


@dataclass(frozen=True)
class Outcome:
    ticket: Ticket
    say: tuple[Say, ...] = ()
    work: tuple[Work, ...] = ()
    #: a session this event closed, besides the ticket's (recorded on its own)
    closed: SessionState | None = None
    #: the tenant's routing memory after a session was routed (None: untouched)
    routing: routing.RoutingState | None = None
    #: an operator's reply that was a command (``/transfer 2``): not for the client
    command: bool = False


@dataclass(frozen=True)
class Context:
    """The facts of the event besides the ticket."""

    policy: ServicePolicy
    #: the conversation's key for naming work (``<conversation uid>``)
    key: str
    channel: str
    #: the client's language ("ru", "en"; None: the mapping's)
    language: str | None
    now: dt.datetime
    #: the client's current CRM owner
    contact_owner: str | None = None
    routing_state: routing.RoutingState = dataclasses.field(default_factory=routing.RoutingState)
    #: CRM user id -> load and last assignment (``routing.Staff``), for a line
    staff: Callable[[Line], routing.Staff] = lambda line: {}
    knowledge: KnowledgeBase | None = None
    #: the client's CRM fields the routing rules read (asked only when a
    #: session is routed: the runner reads them from the CRM then)
    client_fields: Callable[[], Mapping[str, str]] = lambda: {}
    #: the language of what CRM users read (the mapping's)
    crm_language: str = "en"
    #: the conversation's priority (the mapping's ``priority`` rule): the
    #: SLA targets of that priority on its line
    priority: str | None = None
    #: a closed session's number -> its five (score, signed link) pairs,
    #: for a channel whose rating prompt carries links (None: it does not)
    rating_links: Callable[[int], tuple[tuple[int, str], ...]] | None = None


# -- the client wrote ---------------------------------------------------------------------


def with_due(ctx: Context, before: Ticket, outcome: Outcome) -> Outcome:
    """``outcome`` plus the write of the SLA's nearest due time on the deal
    when the event changed it."""
    old = sla.due(before.sla) if before.sla is not None else None
    new = sla.due(outcome.ticket.sla) if outcome.ticket.sla is not None else None
    if new is None or new == old:
        return outcome
    when = new.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    work = Work("entity", f"sla-due:{ctx.key}:{new.isoformat()}", when, fields={"sla_due": when})
    return dataclasses.replace(outcome, work=(*outcome.work, work))


def on_client_message(ctx: Context, ticket: Ticket, text: str) -> Outcome:
    """The client's message at ``ctx.now``: a rating or its comment for a
    closed session; else it joins the open session or opens a new one
    (routed, greeted with a menu), moves the menu on, and may get the
    out-of-hours notice."""
    at = ctx.now
    last = ticket.session
    if last is not None and not last.is_open:
        rated = _rating(ctx, ticket, last, text)
        if rated is not None:
            return rated
    line = _line(ctx.policy, ticket.line)
    state, opened, closed_before = sessions.client_wrote(
        last, at, dt.timedelta(hours=line.session_idle_hours)
    )
    ticket = dataclasses.replace(ticket, session=state)
    says: list[Say] = []
    works: list[Work] = []
    routed: routing.RoutingState | None = None
    if opened:
        ticket, routed, says, works = _open(ctx, ticket, text)
    elif ticket.menu is not None:
        ticket, routed, says, works = _menu_reply(ctx, ticket, text)
    ticket = _sla(ticket, lambda s: sla.client_wrote(s, at))
    notice = _after_hours(ctx, ticket)
    if notice is not None:
        ticket, say, work = notice
        says.append(say)
        works.append(work)
    closed = closed_before if closed_before is not None else (last if opened and last else None)
    return Outcome(ticket, tuple(says), tuple(works), _closed_now(closed), routed)


def _closed_now(state: SessionState | None) -> SessionState | None:
    return state if state is not None and not state.is_open else None


def _open(
    ctx: Context, ticket: Ticket, text: str
) -> tuple[Ticket, routing.RoutingState | None, list[Say], list[Work]]:
    """A new session: its line (before any menu choice), the greeting menu
    when the mapping greets this channel/line/hours with one, else routed
    at once; its SLA clocks on the line."""
    policy = ctx.policy
    facts = _facts(ctx, text)
    choice = routing.choose_line(policy, facts)
    greeting = menu.greeting_menu(policy, ctx.channel, choice.line, ctx.now)
    ticket = _on_line(ctx, dataclasses.replace(ticket, menu=None), choice.line)
    if greeting is not None:
        state = menu.start(policy, greeting)
        ticket = dataclasses.replace(ticket, menu=state, route_reason=choice.reason)
        return ticket, None, [_menu_say(ctx, state)], []
    ticket, routed, works = _route(ctx, ticket, facts)
    return ticket, routed, [], works


def _menu_reply(
    ctx: Context, ticket: Ticket, text: str
) -> tuple[Ticket, routing.RoutingState | None, list[Say], list[Work]]:
    """The client's answer to the menu they are in."""
    assert ticket.menu is not None
    policy = ctx.policy
    step = menu.answer(policy, ticket.menu, text)
    if step.kind in ("menu", "unknown"):
        return dataclasses.replace(ticket, menu=step.state), None, [_menu_say(ctx, step.state)], []
    ticket = dataclasses.replace(ticket, menu=None)
    says: list[Say] = []
    works: list[Work] = []
    facts = _facts(ctx, text)
    if step.kind == "choice" and step.option is not None:
        option = step.option
        label = option.label.get(ctx.language)
        if option.line is not None:
            facts = dataclasses.replace(facts, menu_line=option.line)
        answer = _knowledge(ctx, option.knowledge)
        if answer is not None:
            says.append(Say("answer", answer))
        number = ticket.session.number if ticket.session else 0
        chose = _words(ctx, "chose").format(choice=label)
        # which option, for the KPIs (the note's text is in the client's language)
        menu_name = step.state.current
        choice = f"{menu_name}:{policy.menus[menu_name].options.index(option) + 1}"
        works.append(Work("note", f"menu:{ctx.key}:{number}", chose, fields={"choice": choice}))
        if option.fields or option.tags:
            # the option's CRM fields (the setup creates them) and tags on the deal
            key = f"menu-fields:{ctx.key}:{number}"
            works.append(Work("entity", key, chose, fields=dict(option.fields), tags=option.tags))
    ticket, routed, routed_work = _route(ctx, ticket, facts)
    return ticket, routed, says, works + routed_work


def _menu_say(ctx: Context, state: MenuState) -> Say:
    """The menu as text with its entries as buttons (where the channel has them)."""
    text = menu.render(ctx.policy, state, ctx.language)
    pairs = menu.buttons(ctx.policy, state, ctx.language)
    return Say("menu", text, tuple((key, label) for key, label in pairs))


def _route(
    ctx: Context, ticket: Ticket, facts: routing.Facts
) -> tuple[Ticket, routing.RoutingState, list[Work]]:
    policy = ctx.policy
    choice = routing.choose_line(policy, facts)
    line = policy.line(choice.line)
    found = routing.choose_owner(
        line, facts.owner, ctx.staff(line), ctx.routing_state, choice.reason
    )
    ticket = _on_line(ctx, ticket, found.line)
    owner = found.owner if found.verdict == "assign" else ticket.owner
    ticket = dataclasses.replace(ticket, owner=owner, route_reason=found.reason[:200])
    title = line.title.get(_crm_language(ctx))
    number = ticket.session.number if ticket.session else 0
    text = _words(ctx, "routed").format(line=title, why=found.reason)
    works = [
        Work("note", f"route:{ctx.key}:{number}", text),
        Work(
            "entity",
            f"owner:{ctx.key}:{number}:{found.line}:{owner or '-'}",
            text,
            owner=owner,
            fields={"service_line": title},
        ),
    ]
    return ticket, found.state, works


def _on_line(ctx: Context, ticket: Ticket, name: str) -> Ticket:
    """The ticket on line ``name``: its SLA clocks follow the line's hours
    and targets (started when the line has an SLA, moved when it changes)."""
    line = ctx.policy.line(name)
    targets = line.targets(ctx.priority)
    if ticket.line == name and ticket.sla is not None:
        return ticket
    if targets is None:
        return dataclasses.replace(ticket, line=name, sla=None)
    if ticket.sla is None:
        return dataclasses.replace(ticket, line=name, sla=sla.start(line.hours, targets))
    moved = sla.moved(ticket.sla, line.hours, targets, ctx.now)
    return dataclasses.replace(ticket, line=name, sla=moved)


def _after_hours(ctx: Context, ticket: Ticket) -> tuple[Ticket, Say, Work] | None:
    """The out-of-hours notice and the task that surfaces the session at
    opening, when ``after_hours.should_notify`` says so."""
    state = ticket.session
    if state is None or ticket.line is None:
        return None
    line = ctx.policy.line(ticket.line)
    verdict = after_hours.should_notify(
        line.hours, state, state.notices, ctx.now, line.quiet_minutes
    )
    if not verdict:
        return None
    texts = line.notice.as_dict() if line.notice is not None else None
    text = after_hours.notice_text(line.hours, ctx.now, ctx.language or "en", texts)
    state = after_hours.notice_sent(state, ctx.now)
    due = after_hours.morning_task_due(line.hours, state)
    owner = ticket.owner or (line.supervisor.user if line.supervisor else None)
    key = f"morning:{ctx.key}:{state.number}:{due.isoformat()}"
    task = Work("task", key, after_hours.task_text(_crm_language(ctx)), due=due, owner=owner)
    return dataclasses.replace(ticket, session=state), Say("notice", text), task


def _rating(ctx: Context, ticket: Ticket, last: SessionState, text: str) -> Outcome | None:
    """A closed session's rating or its comment, or None (not one)."""
    policy = _line(ctx.policy, ticket.line).csat
    if csat.awaits_rating(last, ctx.now, policy.rating_window):
        score = csat.parse_rating(text)
        if score is None:
            return None
        return rate(ctx, ticket, last, score)
    if csat.takes_comment(last, ctx.now, policy.comment_window):
        state = csat.commented(last, ctx.now)
        note = _words(ctx, "comment").format(number=last.number, text=text[:2000])
        work = Work("note", f"csat-comment:{ctx.key}:{last.number}", note)
        return Outcome(dataclasses.replace(ticket, session=state), (), (work,))
    return None


def rate(ctx: Context, ticket: Ticket, last: SessionState, score: int) -> Outcome:
    """The closed session ``last`` rated ``score`` (a reply or a signed
    link): once per session (a second rating changes nothing); the score in
    the CRM (a note, the deal's field) and, at or under the line's
    threshold, one alert task for the supervisor. ``ticket`` is the
    session's own (its line)."""
    policy = _line(ctx.policy, ticket.line).csat
    number = last.number
    if last.rating is not None:
        return Outcome(ticket)
    state = csat.rated(last, score, ctx.now)
    rated_text = _words(ctx, "rated").format(score=score, number=number)
    works = [
        Work("note", f"csat:{ctx.key}:{number}", rated_text),
        Work(
            "entity",
            f"csat-field:{ctx.key}:{number}",
            rated_text,
            fields={"csat_score": str(score)},
        ),
    ]
    if csat.should_alert(state, policy.threshold):
        state = csat.alert_raised(state, ctx.now)
        works += _alerts(ctx, ticket, f"csat-low:{ctx.key}:{number}", "low", score=score)
    thanks = csat.thanks_text(ctx.language or "en", score, policy.threshold)
    return Outcome(
        dataclasses.replace(ticket, session=state), (Say("thanks", thanks),), tuple(works)
    )


# -- the operator replied ----------------------------------------------------------------------


def on_operator_reply(ctx: Context, ticket: Ticket, text: str) -> Outcome:
    """A rep's reply at ``ctx.now``: a ``/transfer`` command moves the
    session to another line (the client told once per line; the reply is
    not sent), else the session and its SLA clocks record the answer."""
    where = transfer.parse_command(text)
    if where is not None:
        return _transfer(ctx, ticket, where)
    state = ticket.session
    if state is None:
        return Outcome(ticket)
    if state.is_open:
        state = sessions.operator_replied(state, ctx.now)
    ticket = _sla(
        dataclasses.replace(ticket, session=state), lambda s: sla.operator_replied(s, ctx.now)
    )
    return Outcome(ticket)


def _transfer(ctx: Context, ticket: Ticket, where: str) -> Outcome:
    policy = ctx.policy
    target = transfer.resolve(policy, where) if where else None
    if target is None:
        said = transfer.unknown_target(policy, where, _crm_language(ctx))
        work = Work("note", f"transfer-unknown:{ctx.key}:{ctx.now.isoformat()}", said)
        return Outcome(ticket, (), (work,), command=True)
    return dataclasses.replace(_move(ctx, ticket, target, "command"), command=True)


def on_stage(ctx: Context, ticket: Ticket, stage: str) -> Outcome:
    """The CRM moved the conversation's deal to ``stage``: a stage the
    mapping's ``transfer.stages`` names moves the session to its line."""
    return _moved_by_crm(ctx, ticket, transfer.by_stage(ctx.policy, stage), "stage")


def on_tags(ctx: Context, ticket: Ticket, tags: Sequence[str]) -> Outcome:
    """The conversation's deal carries ``tags`` now: the first tag of the
    mapping's ``transfer.tags`` among them moves the session to its line (a
    session already there stays, untold)."""
    return _moved_by_crm(ctx, ticket, transfer.by_tags(ctx.policy, tags), "tag")


def _moved_by_crm(ctx: Context, ticket: Ticket, target: str | None, via: transfer.Via) -> Outcome:
    state = ticket.session
    if target is None or state is None or not state.is_open:
        return Outcome(ticket)
    return _move(ctx, ticket, target, via)


def _move(ctx: Context, ticket: Ticket, target: str, via: transfer.Via) -> Outcome:
    """The session moved to line ``target``: the SLA follows its targets,
    the client is told (once per line), the CRM gets a note."""
    policy = ctx.policy
    current = ticket.line or policy.default_line
    number = ticket.session.number if ticket.session else 0
    told = () if ticket.line is None else (current,)
    move = transfer.decide(policy, current, target, told, via)
    if move is None:
        return Outcome(ticket)
    ticket = _on_line(ctx, ticket, move.line)
    ticket = dataclasses.replace(ticket, route_reason=move.reason[:200])
    title = policy.line(move.line).title.get(_crm_language(ctx))
    key = f"transfer:{ctx.key}:{number}:{move.line}"
    works = [Work("note", key, _words(ctx, "moved").format(line=title))]
    says = (Say("transfer", transfer.notice(policy, move.line, ctx.language)),) if move.tell else ()
    return Outcome(ticket, says, tuple(works))


# -- the clock and the CRM --------------------------------------------------------------------


def on_tick(ctx: Context, ticket: Ticket) -> Outcome:
    """The clock at ``ctx.now``: an idle session closes (and is offered the
    rating), SLA clocks past their warning or due time alert the
    supervisor, once each."""
    state = ticket.session
    says: list[Say] = []
    works: list[Work] = []
    closed: SessionState | None = None
    if state is not None and state.is_open:
        idle = dt.timedelta(hours=_line(ctx.policy, ticket.line).session_idle_hours)
        expired = sessions.expire(state, ctx.now, idle)
        if not expired.is_open:
            ticket, say = _closing(ctx, dataclasses.replace(ticket, session=expired))
            says += say
            closed = ticket.session
    if ticket.sla is not None:
        alerts = sla.check(ticket.sla, ctx.now)
        if alerts:
            number = ticket.session.number if ticket.session else 0
            for alert in alerts:
                key = (
                    f"sla:{ctx.key}:{number}:{alert.kind}:{alert.level}:{alert.started.isoformat()}"
                )
                works += _alerts(ctx, ticket, key, alert.level, kind=alert.kind, due=alert.due)
            ticket = dataclasses.replace(ticket, sla=sla.record(ticket.sla, alerts))
    return Outcome(ticket, tuple(says), tuple(works), closed)


def crm_closed(ctx: Context, ticket: Ticket) -> Outcome:
    """The CRM closed the conversation's deal/ticket: the session closes
    (the next message opens a new one) and is offered the rating."""
    state = ticket.session
    if state is None or not state.is_open:
        return Outcome(ticket)
    ticket = dataclasses.replace(ticket, session=sessions.crm_closed(state, ctx.now))
    ticket, says = _closing(ctx, ticket)
    return Outcome(ticket, tuple(says), (), ticket.session)


def _closing(ctx: Context, ticket: Ticket) -> tuple[Ticket, list[Say]]:
    """A session that just closed: its SLA clocks stop; the rating prompt
    when the line asks for ratings and ``csat.should_prompt`` agrees."""
    state = ticket.session
    assert state is not None and state.closed_at is not None
    closed_at = state.closed_at
    ticket = _sla(ticket, lambda s: sla.closed(s, closed_at))
    line = _line(ctx.policy, ticket.line)
    if not line.csat.enabled or not csat.should_prompt(state):
        return dataclasses.replace(ticket, menu=None), []
    state = csat.prompted(state, ctx.now)
    scores = tuple((str(n), str(n)) for n in range(1, 6))
    if ctx.rating_links is not None:
        links = ctx.rating_links(state.number)
        asked = csat.prompt(ctx.language or "en", "links", state.number, links)
        number = csat.prompt(ctx.language or "en", "number", state.number)
        lines = [asked.text, *(f"{score} — {url}" for score, url in asked.links), number.text]
        text = "\n".join(lines)
    else:
        text = csat.prompt(ctx.language or "en", "number", state.number).text
    return dataclasses.replace(ticket, session=state, menu=None), [Say("csat", text, scores)]


def next_check(policy: ServicePolicy, ticket: Ticket) -> dt.datetime | None:
    """When the clock next matters for the ticket: its open session going
    idle, an SLA warning or due time."""
    moments: list[dt.datetime] = []
    state = ticket.session
    if state is not None and state.is_open:
        idle = dt.timedelta(hours=_line(policy, ticket.line).session_idle_hours)
        moments.append(state.last_activity + idle)
    if ticket.sla is not None:
        moment = sla.next_check(ticket.sla)
        if moment is not None:
            moments.append(moment)
    return min(moments, default=None)


# -- helpers ----------------------------------------------------------------------------------


def _line(policy: ServicePolicy, name: str | None) -> Line:
    """The line ``name``, or the default line (none yet, or no longer mapped)."""
    if name is not None and name in policy.lines:
        return policy.line(name)
    return policy.line(policy.default_line)


def _facts(ctx: Context, text: str) -> routing.Facts:
    fields = ctx.client_fields() if ctx.policy.segment_fields() else {}
    return routing.Facts(
        channel=ctx.channel,
        text=text,
        language=ctx.language,
        owner=ctx.contact_owner,
        fields=fields,
    )


def _sla(ticket: Ticket, change: Callable[[SlaState], SlaState]) -> Ticket:
    if ticket.sla is None:
        return ticket
    return dataclasses.replace(ticket, sla=change(ticket.sla))


def _knowledge(ctx: Context, entry_id: str | None) -> str | None:
    if entry_id is None or ctx.knowledge is None:
        return None
    entry = ctx.knowledge.get(entry_id)
    if entry is None:
        return None
    language = "ru" if (ctx.language or "").lower().startswith("ru") else "en"
    return entry.answer.get(language) or next(iter(entry.answer.values()), None)


def _alert(
    ctx: Context,
    ticket: Ticket,
    key: str,
    level: str,
    *,
    score: int | None = None,
    kind: str | None = None,
    due: dt.datetime | None = None,
) -> Work:
    """A task for the line's supervisor (the session's owner when the line
    names none), due now."""
    line = _line(ctx.policy, ticket.line)
    owner = line.supervisor.user if line.supervisor is not None else ticket.owner
    if score is not None:
        text = _words(ctx, "low").format(score=score)
    else:
        when = due.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M UTC") if due else ""
        text = _words(ctx, f"sla_{level}").format(clock=_words(ctx, str(kind)), due=when)
    return Work("task", key, text, due=ctx.now, owner=owner)


def _alerts(
    ctx: Context,
    ticket: Ticket,
    key: str,
    level: str,
    *,
    score: int | None = None,
    kind: str | None = None,
    due: dt.datetime | None = None,
) -> list[Work]:
    """The supervisor's alert: the CRM task, and a message to each of the
    line's ``supervisor.alerts`` (a chat, an address) naming the conversation."""
    task = _alert(ctx, ticket, key, level, score=score, kind=kind, due=due)
    line = _line(ctx.policy, ticket.line)
    routes = line.supervisor.alerts if line.supervisor is not None else ()
    text = f"{task.text} ({_words(ctx, 'conversation')} {ctx.key})"
    return [task] + [
        Work(
            "notify",
            f"{key}:{route.channel}:{route.to}",
            text,
            fields={"channel": route.channel, "to": route.to},
        )
        for route in routes
    ]


def _crm_language(ctx: Context) -> str:
    """The language of what CRM users read: the mapping's."""
    return ctx.crm_language if ctx.crm_language in _TEXTS else "en"


def _words(ctx: Context, key: str) -> str:
    return _TEXTS[_crm_language(ctx)].get(key, _TEXTS["en"][key])


_TEXTS: Mapping[str, Mapping[str, str]] = {
    "en": {
        "chose": "The client chose in the menu: {choice}",
        "routed": "Routed to {line} ({why})",
        "rated": "The client rated session {number}: {score}/5",
        "comment": "The client's comment on session {number}: {text}",
        "low": "Low rating: {score}/5. Contact the client.",
        "moved": "The conversation was passed to {line}",
        "sla_warning": "SLA at risk: {clock} due {due}",
        "sla_breach": "SLA breached: {clock} was due {due}",
        "first_response": "first response",
        "next_response": "next response",
        "resolution": "resolution",
        "conversation": "conversation",
    },
    "ru": {
        "chose": "Клиент выбрал в меню: {choice}",
        "routed": "Направлено: {line} ({why})",
        "rated": "Клиент оценил сессию {number}: {score}/5",
        "comment": "Комментарий клиента к сессии {number}: {text}",
        "low": "Низкая оценка: {score}/5. Свяжитесь с клиентом.",
        "moved": "Диалог передан: {line}",
        "sla_warning": "SLA под угрозой: {clock}, срок {due}",
        "sla_breach": "SLA нарушен: {clock}, срок был {due}",
        "first_response": "первый ответ",
        "next_response": "следующий ответ",
        "resolution": "решение",
        "conversation": "диалог",
    },
}


# -- the SLA state as JSON --------------------------------------------------------------------


def sla_to_dict(state: SlaState, priority: str | None = None) -> dict[str, Any]:
    """The clocks, phase and whether an operator answered, and the
    priority whose targets apply (the line's hours and targets come from
    the mapping again on reading)."""
    return {
        "priority": priority,
        "phase": state.phase,
        "answered": state.answered,
        "clocks": [
            {
                "kind": c.kind,
                "started": c.started.isoformat(),
                "used": c.used.total_seconds(),
                "since": c.since.isoformat() if c.since else None,
                "stopped": c.stopped,
                "overdue_at": c.overdue_at.isoformat() if c.overdue_at else None,
                "raised": sorted(c.raised),
            }
            for c in state.clocks
        ],
    }


def sla_from_dict(data: Mapping[str, Any], line: Line) -> SlaState | None:
    """:func:`sla_to_dict`'s state on ``line`` (None: the line has no SLA now)."""
    targets = line.targets(data.get("priority"))
    if targets is None:
        return None
    clocks = tuple(
        Clock(
            kind=c["kind"],
            started=dt.datetime.fromisoformat(c["started"]),
            used=dt.timedelta(seconds=float(c["used"])),
            since=dt.datetime.fromisoformat(c["since"]) if c.get("since") else None,
            stopped=bool(c.get("stopped")),
            overdue_at=dt.datetime.fromisoformat(c["overdue_at"]) if c.get("overdue_at") else None,
            raised=frozenset(c.get("raised") or ()),
        )
        for c in data.get("clocks") or ()
    )
    return SlaState(
        line.hours,
        targets,
        clocks,
        phase=data.get("phase", "idle"),
        answered=bool(data.get("answered")),
    )
