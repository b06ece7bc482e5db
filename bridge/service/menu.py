"""The greeting menu of a new session: which menu greets it, the menu as
numbered text (en/ru) or as buttons for a channel that has them, and the
client's reply read as a choice.

"Talk to a person" is always one step away: ``0`` in every menu. A nested
menu also has ``#`` (back). A reply is read as the option's number (``2``,
``2.``, ``2)``, the keycap emoji), its label in either language, ``0`` or a
word for a person (operator, оператор …), ``#`` or back/назад — case and
spaces do not matter. Anything else is :data:`UNKNOWN`: the core shows the
menu again or routes the message by the rules.

Pure: the menu's place (:class:`MenuState`) is the core's to store.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from bridge.service.calendar import is_open
from mappings.service import (
    BACK_WORDS,
    PERSON_WORDS,
    Menu,
    MenuOption,
    ServicePolicy,
    Texts,
    reply_key,
)

__all__ = [
    "BACK",
    "PERSON",
    "MenuState",
    "Step",
    "answer",
    "buttons",
    "greeting_menu",
    "render",
    "start",
]

#: the person and back entries every menu shows
PERSON = Texts(en="Talk to a person", ru="Связаться с оператором")
BACK = Texts(en="Back", ru="Назад")
PERSON_KEY = "0"
BACK_KEY = "#"
#: the dash between a number and its label
DASH = "—"
StepKind = Literal["menu", "choice", "person", "unknown"]


@dataclass(frozen=True)
class MenuState:
    """The menus the client has opened, the greeting's first; the last is shown."""

    path: tuple[str, ...]

    @property
    def current(self) -> str:
        return self.path[-1]

    @property
    def nested(self) -> bool:
        return len(self.path) > 1

    def to_dict(self) -> dict[str, Any]:
        return {"path": list(self.path)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> MenuState:
        return cls(tuple(str(name) for name in data["path"]))


@dataclass(frozen=True)
class Step:
    """What a reply did.

    ``menu``: show ``state``'s menu (a submenu, or back); ``choice``: the
    leaf ``option`` was chosen (it routes the session: line, tags, fields,
    knowledge); ``person``: the client asked for a person; ``unknown``: not a
    choice (``state`` unchanged).
    """

    kind: StepKind
    state: MenuState
    option: MenuOption | None = None


def start(policy: ServicePolicy, menu: str) -> MenuState:
    """The state of a session greeted with ``menu``."""
    if menu not in policy.menus:
        raise KeyError(f"no menu {menu!r}")
    return MenuState((menu,))


def greeting_menu(policy: ServicePolicy, channel: str, line: str, at: dt.datetime) -> str | None:
    """The menu a new session is greeted with: the first of the mapping's
    ``greetings`` whose channels hold ``channel``, whose lines hold ``line``
    (the line routing gives before any menu choice) and whose hours fit
    ``line``'s at ``at`` (open / closed / any); None: no menu."""
    for greeting in policy.greetings:
        if greeting.channels and channel not in greeting.channels:
            continue
        if greeting.lines and line not in greeting.lines:
            continue
        if greeting.hours != "any":
            open_now = is_open(policy.line(line).hours, at)
            if open_now != (greeting.hours == "open"):
                continue
        return greeting.menu
    return None


def buttons(policy: ServicePolicy, state: MenuState, language: str | None) -> list[tuple[str, str]]:
    """The shown menu as ``(id, label)`` pairs for a channel with native
    buttons: the options by number, then back (nested menus) and the
    person. A pressed button's id is a reply :func:`answer` reads."""
    menu = policy.menus[state.current]
    pairs = [(str(n), option.label.get(language)) for n, option in enumerate(menu.options, 1)]
    if state.nested:
        pairs.append((BACK_KEY, BACK.get(language)))
    pairs.append((PERSON_KEY, PERSON.get(language)))
    return pairs


def render(policy: ServicePolicy, state: MenuState, language: str | None) -> str:
    """The shown menu as text: its own text, then one numbered line per
    entry (``1 — Buy`` … ``0 — Talk to a person``)."""
    menu: Menu = policy.menus[state.current]
    lines = [menu.text.get(language)]
    lines += [f"{key} {DASH} {label}" for key, label in buttons(policy, state, language)]
    return "\n".join(lines)


def answer(policy: ServicePolicy, state: MenuState, reply: str) -> Step:
    """What the client's ``reply`` (text or a button's id) chooses."""
    menu = policy.menus[state.current]
    said = reply_key(reply)
    if said == PERSON_KEY or said in PERSON_WORDS or said in _words(PERSON):
        return Step("person", state)
    if said in BACK_WORDS or said in _words(BACK):
        return Step("menu", MenuState(state.path[:-1] or state.path))
    option = _option(menu, said)
    if option is None:
        return Step("unknown", state)
    if option.menu is not None:
        return Step("menu", MenuState((*state.path, option.menu)))
    return Step("choice", state, option)


def _option(menu: Menu, said: str) -> MenuOption | None:
    if said.isdigit():
        number = int(said)
        return menu.options[number - 1] if 1 <= number <= len(menu.options) else None
    for option in menu.options:
        if said in _words(option.label):
            return option
    return None


def _words(texts: Texts) -> set[str]:
    return {reply_key(texts.en), reply_key(texts.ru)}
