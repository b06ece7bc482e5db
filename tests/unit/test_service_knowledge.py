"""The knowledge-base file: what loads, and every problem named by file, key
and fix."""

from __future__ import annotations

import dataclasses
import textwrap
from pathlib import Path

import pytest

from bridge.errors import ConfigError
from bridge.service.knowledge import Entry, KnowledgeBase, KnowledgeError, load, parse

ROOT = Path(__file__).resolve().parents[2]

GOOD = """\
entries:
  - id: delivery-time
    self_service: true
    questions:
      en: ["How long does delivery take?", "When will it arrive?"]
      ru: ["Сколько идёт доставка?"]
    answer:
      en: "1-2 days in Moscow."
      ru: "По Москве 1–2 дня."
    keywords:
      ru: [сроки доставки]
  - id: order-cancel
    questions:
      ru: ["Как отменить заказ?"]
    answer:
      ru: "  Напишите номер заказа.  "
"""


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "kb.yaml"
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def test_a_good_file_loads_into_frozen_entries(tmp_path: Path) -> None:
    path = _write(tmp_path, GOOD)
    kb = load(path)
    assert isinstance(kb, KnowledgeBase)
    assert kb.source == str(path)
    assert [e.id for e in kb.entries] == ["delivery-time", "order-cancel"]
    first = kb.entries[0]
    assert first.self_service is True
    assert first.questions["en"] == ("How long does delivery take?", "When will it arrive?")
    assert first.answer["ru"] == "По Москве 1–2 дня."
    assert first.keywords == {"ru": ("сроки доставки",)}
    assert first.languages == ("en", "ru")
    second = kb.get("order-cancel")
    assert second is not None
    assert second.self_service is False
    assert second.keywords == {}
    assert second.languages == ("ru",)
    assert second.answer["ru"] == "Напишите номер заказа."  # trimmed
    assert kb.get("nothing") is None
    with pytest.raises(dataclasses.FrozenInstanceError):
        first.id = "other"  # type: ignore[misc]
    with pytest.raises(TypeError):
        first.answer["en"] = "changed"  # type: ignore[index]


def test_an_answer_without_questions_in_its_language_is_kept() -> None:
    kb = parse(
        {
            "entries": [
                {
                    "id": "a",
                    "questions": {"ru": ["вопрос"]},
                    "answer": {"ru": "ответ", "en": "answer"},
                }
            ]
        }
    )
    entry: Entry = kb.entries[0]
    assert entry.languages == ("en", "ru")
    assert "en" not in entry.questions


def test_the_bench_knowledge_base_is_in_this_format() -> None:
    kb = load(ROOT / "bench" / "data" / "faq" / "kb.yaml")
    assert len(kb.entries) == 42
    assert all(e.languages == ("en", "ru") for e in kb.entries)
    assert sum(e.self_service for e in kb.entries) == 22


def _entry(**fields: object) -> dict[str, object]:
    base: dict[str, object] = {
        "id": "x",
        "questions": {"en": ["Where is my order?"], "ru": ["Где мой заказ?"]},
        "answer": {"en": "Here.", "ru": "Здесь."},
    }
    base.update(fields)
    return {key: value for key, value in base.items() if value is not None}


CASES = [
    pytest.param(
        {"entries": [_entry(id="a"), _entry(id="b", answer={"en": "Here."})]},
        "entries[1].answer.ru",
        "missing: the entry has ru questions",
        "add the ru answer or remove the ru questions",
        id="answer missing for a language with questions",
    ),
    pytest.param(
        {"entries": [_entry(id="a"), _entry(id="b"), _entry(id="a")]},
        "entries[2].id",
        "duplicate id 'a' (entries[0] has it)",
        "give every entry its own id",
        id="duplicate id",
    ),
    pytest.param(
        {"entries": [_entry(questions={"en": []})]},
        "entries[0].questions.en",
        "empty or not a list",
        "write a list of one or more texts",
        id="empty question list",
    ),
    pytest.param(
        {"entries": [_entry(questions={})]},
        "entries[0].questions",
        "is empty",
        "add questions for at least one language",
        id="no languages",
    ),
    pytest.param(
        {"entries": [_entry(questions=None)]},
        "entries[0].questions",
        "missing",
        "add questions for at least one language",
        id="questions missing",
    ),
    pytest.param(
        {"entries": [_entry(questions={"en": ["Where?", "  "]})]},
        "entries[0].questions.en[1]",
        "empty or not text",
        "write the text or remove it",
        id="blank question",
    ),
    pytest.param(
        {"entries": [_entry(questions={"de": ["Wo ist meine Bestellung?"]})]},
        "entries[0].questions.de",
        "unknown language",
        "use en or ru",
        id="unknown language",
    ),
    pytest.param(
        {"entries": [_entry(answers={"en": "typo"})]},
        "entries[0].answers",
        "unknown key",
        "use only answer, id, keywords, questions, self_service",
        id="unknown key",
    ),
    pytest.param(
        {"entries": [_entry(answer=None)]},
        "entries[0].answer",
        "missing",
        "add the answer for each language that has questions",
        id="answer missing",
    ),
    pytest.param(
        {"entries": [_entry(answer={"en": "", "ru": "Здесь."})]},
        "entries[0].answer.en",
        "empty or not text",
        "write the answer as text",
        id="empty answer",
    ),
    pytest.param(
        {"entries": [_entry(id="no spaces please")]},
        "entries[0].id",
        "missing or not a plain id",
        "give a unique id of letters, digits",
        id="bad id",
    ),
    pytest.param(
        {"entries": [_entry(self_service="yes")]},
        "entries[0].self_service",
        "is not true or false",
        "write true or false",
        id="self_service not a boolean",
    ),
    pytest.param(
        {"entries": [_entry(keywords={"en": "one"})]},
        "entries[0].keywords.en",
        "empty or not a list",
        "write a list of one or more texts",
        id="keywords not a list",
    ),
    pytest.param(
        {"entries": ["just text"]},
        "entries[0]",
        "is not a mapping",
        "write id, questions and answer keys",
        id="entry not a mapping",
    ),
    pytest.param(
        {"questions": []},
        "entries",
        "missing or not a list",
        "put the entries in a list under 'entries:'",
        id="no entries key",
    ),
    pytest.param(
        {"entries": []},
        "entries",
        "is empty",
        "add at least one entry",
        id="no entries",
    ),
]


@pytest.mark.parametrize(("data", "key", "problem", "fix"), CASES)
def test_each_problem_names_the_file_the_key_and_the_fix(
    data: object, key: str, problem: str, fix: str
) -> None:
    with pytest.raises(KnowledgeError) as caught:
        parse(data, "tenants/acme/kb.yaml")
    error = caught.value
    assert isinstance(error, ConfigError)  # reported like every start-up problem
    assert (error.file, error.key, error.problem) == ("tenants/acme/kb.yaml", key, problem)
    assert error.fix.startswith(fix)
    assert str(error).startswith(f"tenants/acme/kb.yaml: {key}: {problem}. Fix: {fix}")


def test_a_file_that_is_not_yaml_is_named_with_its_line(tmp_path: Path) -> None:
    path = _write(tmp_path, "entries:\n  - id: a\n    questions: {en: [Where: here]\n")
    with pytest.raises(KnowledgeError) as caught:
        load(path)
    message = str(caught.value)
    assert message.startswith(f"{path}: (top level): is not valid YAML at line ")
    assert "Fix: quote texts that hold ': '" in message


def test_a_missing_file_is_named(tmp_path: Path) -> None:
    path = tmp_path / "nowhere.yaml"
    with pytest.raises(KnowledgeError) as caught:
        load(path)
    assert str(caught.value) == (
        f"{path}: (top level): cannot be read (No such file or directory). "
        "Fix: check the path in the mapping"
    )
