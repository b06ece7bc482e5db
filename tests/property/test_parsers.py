"""Property tests of every provider's parsers and helpers (Hypothesis), from
the providers' test kits (``tests/kits``).

Each kit declares its properties (:class:`tests.kits.base.Property`); this
suite runs them with one budget per kind:

* **robustness** (``hostile``): for arbitrary bytes, arbitrary JSON,
  arbitrary PHP forms and mutated real payloads (a channel's corpora, a
  CRM's documented examples) a parser — driven the way the web layer drives
  it (``verify`` then ``parse``, correctly signed where the provider signs,
  so that parsing is reached) — returns normalised events or raises the
  adapter's documented :class:`~bridge.errors.WebhookError` (4xx), never
  anything else; the same request parses to the same events;
* **round trips and helpers**: payloads generated in the shape of the
  contract come out with their key fields (ids, text, thread, sequence,
  author, time) in the normalised model; the providers' helpers (markers,
  deep links, BB-code, PHP bracket forms, phone matching) keep their
  promises;

plus every JSON parser at the recursion limit, every fuzz target of
``tests/fuzz.py`` on its seeds, and the core's own helpers (phone numbers to
E.164). No HTTP leaves the process: the vendor calls a parser makes (a
lead re-read, ``app.info``, the OAuth server) are answered by the kits'
offline vendors through ``responses``.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator, Mapping
from typing import Any

import phonenumbers
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from bridge.identity import normalize_phone
from tests import fuzz
from tests import kits as registry
from tests.kits.base import DeepJson, Property
from tests.kits.common import offline

#: the main robustness properties (a few hundred parses each)
HOSTILE = settings(max_examples=150, deadline=None)
#: round trips and helpers
SHAPED = settings(max_examples=100, deadline=None)

KITS = registry.all_kits()
PROPERTIES: list[Property] = [prop for kit in KITS for prop in kit.properties()]
DEEP: list[DeepJson] = [deep for kit in KITS for deep in kit.deep_json()]


@pytest.fixture(autouse=True, scope="module")
def vendors_offline() -> Iterator[None]:
    """The vendor calls parsers make, answered in memory."""
    with offline(vendor for kit in KITS for vendor in kit.vendors()):
        yield


def test_every_provider_has_a_kit() -> None:
    assert registry.missing() == []
    for kit in KITS:
        assert any(p.hostile for p in kit.properties()), f"{kit.kind}: no robustness property"
        assert kit.fuzz_targets(), f"{kit.kind}: no fuzz target"


def test_property_names_are_unique() -> None:
    names = [p.name for p in PROPERTIES]
    assert len(names) == len(set(names)), sorted(n for n in names if names.count(n) > 1)


def _run(prop: Property) -> None:
    """``prop.check`` under Hypothesis (its examples first), or once."""
    if prop.given is None:
        prop.check()
        return
    if isinstance(prop.given, Mapping):
        test: Any = given(**prop.given)(prop.check)
    elif isinstance(prop.given, tuple):
        test = given(*prop.given)(prop.check)
    else:
        test = given(prop.given)(prop.check)
    for case in reversed(prop.examples):
        if isinstance(prop.given, Mapping):
            test = example(**case)(test)
        elif isinstance(prop.given, tuple):
            test = example(*case)(test)
        else:
            test = example(case)(test)
    (HOSTILE if prop.hostile else SHAPED)(test)()


@pytest.mark.parametrize(
    "prop", [p for p in PROPERTIES if p.hostile], ids=lambda p: p.name.replace(" ", "_")
)
def test_any_input_is_events_or_a_4xx(prop: Property) -> None:
    _run(prop)


@pytest.mark.parametrize(
    "prop", [p for p in PROPERTIES if not p.hostile], ids=lambda p: p.name.replace(" ", "_")
)
def test_shaped_payloads_round_trip_and_helpers_hold(prop: Property) -> None:
    _run(prop)


# --------------------------------------------------------------------------
# every JSON parser at the recursion limit; every fuzz target on its seeds
# --------------------------------------------------------------------------


def _loadable_depth() -> int:
    """The deepest JSON array ``json.loads`` accepts at this stack depth."""
    low, high = 1, sys.getrecursionlimit() + 10
    while low < high:
        middle = (low + high + 1) // 2
        try:
            json.loads("[" * middle + "]" * middle)
            low = middle
        except RecursionError:
            high = middle - 1
    return low


def test_every_kit_nests_json_somewhere() -> None:
    """A kit whose parsers take JSON names a shape to nest in (all do today)."""
    assert {d.name for d in DEEP} >= {kit.kind for kit in KITS}


@pytest.mark.parametrize("deep", DEEP, ids=lambda d: d.name)
def test_json_parsers_hold_at_the_recursion_limit(deep: DeepJson) -> None:
    """Nesting just under, at and over what ``json.loads`` accepts here: the
    body is parsed or refused with a 400, never a RecursionError (json.dumps
    of the raw payload, PTB's deepcopy and de_json recurse deeper than the
    decoder)."""
    edge = _loadable_depth()
    for depth in [*range(max(1, edge - 40), edge + 3), 5000]:
        deep.drive(deep.head + b"[" * depth + b"]" * depth + deep.tail)


@pytest.mark.parametrize("name", sorted(fuzz.targets()))
def test_fuzz_targets_accept_their_seeds(name: str) -> None:
    """``tests/fuzz.py`` stays runnable: every target holds on its seeds and
    on a few degenerate inputs."""
    target = fuzz.targets()[name]
    seeds = target.seeds()
    assert seeds
    for data in [*seeds, b"", b"\x00", b"{}", b"[]", b"&", b"=" * 3, b"\xff" * 4]:
        target.run(data)


def test_every_kit_has_fuzz_targets() -> None:
    names = set(fuzz.targets())
    for kit in KITS:
        assert {t.name for t in kit.fuzz_targets()} <= names, kit.kind


def test_fuzz_summary_table_reports_execs_and_crashes() -> None:
    outcomes = [
        fuzz.Outcome("first_target", 21.4, 12345, 90, 0, "ok", fuzzed=10, rate=1234, new=7),
        fuzz.Outcome("second_target", 3.0, None, None, 1, "CRASH", "KeyError: 0"),
    ]
    table = fuzz.table(outcomes).splitlines()
    assert table[0].split() == [
        *("target", "fuzzed", "s", "wall", "s", "execs", "execs/s", "new", "corpus"),
        *("crashes", "status"),
    ]
    assert table[2].split() == [
        "first_target",
        "10",
        "21",
        "12,345",
        "1,234",
        "7",
        "90",
        "0",
        "ok",
    ]
    assert table[3].split()[-2:] == ["1", "CRASH"]
    assert table[5].split() == ["total", "12,345", "1"]
    output = "#1\tINITED\n#77\tNEW cov: 3\nstat::number_of_executed_units: 4242\n"
    assert fuzz._stat(output, "number_of_executed_units") == 4242
    assert fuzz._last_exec_line(output) == 77
    crash = "=== Uncaught Python exception: ===\nKeyError: 0\nTraceback (most recent...\n"
    assert fuzz._crash_detail(crash) == "KeyError: 0"


# --------------------------------------------------------------------------
# the core's helpers
# --------------------------------------------------------------------------

REGIONS = sorted(phonenumbers.SUPPORTED_REGIONS)


@SHAPED
@given(
    region=st.sampled_from(REGIONS),
    style=st.sampled_from(
        [
            phonenumbers.PhoneNumberFormat.E164,
            phonenumbers.PhoneNumberFormat.INTERNATIONAL,
            phonenumbers.PhoneNumberFormat.RFC3966,
        ]
    ),
)
def test_phone_numbers_normalise_to_e164_from_any_international_format(
    region: str, style: int
) -> None:
    number = phonenumbers.example_number_for_type(region, phonenumbers.PhoneNumberType.MOBILE)
    if number is None:
        return
    e164 = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
    shown = phonenumbers.format_number(number, style).removeprefix("tel:")
    assert normalize_phone(shown) == e164
    assert normalize_phone(e164.removeprefix("+")) == e164  # a channel's contact without "+"


@SHAPED
@given(st.text(max_size=40))
@example("+" + "9" * 300)
@example("８ (916) 123-45-67")
def test_phone_normalisation_never_raises_and_is_idempotent(text: str) -> None:
    phone = normalize_phone(text)
    if phone is not None:
        assert phone.startswith("+") and phone[1:].isdigit() and phone[1:].isascii()
        assert normalize_phone(phone) == phone
