"""Suggested replies: matching (Russian and English morphology, mixed text,
keywords), the confident self-service answer, the operator's feedback and
its ranking prior, past replies added one by one."""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest

from bridge.service import suggest as sg
from bridge.service.knowledge import KnowledgeBase, parse
from bridge.service.suggest import Prior, Suggester, Suggestion


def _entry(
    entry_id: str,
    en: str | None,
    ru: str,
    *,
    answer_en: str | None = None,
    answer_ru: str = "",
    self_service: bool = False,
    keywords: dict[str, list[str]] | None = None,
) -> dict[str, Any]:
    questions: dict[str, list[str]] = {"ru": [ru]}
    answer = {"ru": answer_ru or f"Ответ: {ru}"}
    if en is not None:
        questions["en"] = [en]
        answer["en"] = answer_en or f"Answer: {en}"
    row: dict[str, Any] = {"id": entry_id, "questions": questions, "answer": answer}
    if self_service:
        row["self_service"] = True
    if keywords:
        row["keywords"] = keywords
    return row


def _kb(*entries: dict[str, Any]) -> KnowledgeBase:
    return parse({"entries": list(entries)}, "test-kb.yaml")


SHOP = _kb(
    _entry(
        "order-status",
        "Where is my order?",
        "Где мой заказ?",
        answer_en="Your order is on its way.",
        answer_ru="Ваш заказ в пути.",
    ),
    _entry(
        "delivery-cost",
        "How much does delivery cost?",
        "Сколько стоит доставка?",
        answer_en="Delivery is free from 3,000 RUB.",
        answer_ru="Доставка бесплатна от 3 000 рублей, иначе курьер стоит 350 рублей.",
        self_service=True,
    ),
    _entry(
        "refund",
        "When will I get my refund?",
        "Когда вернут деньги?",
        answer_ru="Деньги вернутся на карту за 3 рабочих дня.",
        self_service=True,
    ),
    _entry(
        "password",
        "I forgot my password",
        "Забыл пароль",
        answer_ru="Нажмите «Забыли пароль?» на странице входа.",
        self_service=True,
    ),
    _entry("pickup", None, "Есть ли самовывоз?", answer_ru="Да, из шоурума."),
)


def _ids(found: list[Suggestion]) -> list[str]:
    return [s.id for s in found]


# -- words and languages ----------------------------------------------------------------------


def test_russian_inflections_share_one_stem() -> None:
    stem = sg.snowball()
    assert set(sg.stems("Заказы, заказом; ЗАКАЗА! заказ", stem)) == {"заказ"}
    assert sg.stems("Ёлка", stem) == sg.stems("елка", stem)  # ё is read as е


def test_english_inflections_share_one_stem_and_apostrophes_go() -> None:
    stem = sg.snowball()
    assert set(sg.stems("orders ordered ordering order", stem)) == {"order"}
    assert sg.stems("I can't", sg.no_stemming) == ["i", "cant"]
    assert sg.stems("order 45821, №7!", sg.no_stemming) == ["order"]  # digits are not words


@pytest.mark.parametrize(
    ("text", "language"),
    [
        ("Где мой заказ?", "ru"),
        ("Where is my order?", "en"),
        ("где мой order", "ru"),  # 6 Cyrillic letters of 11
        ("my order заказ", "en"),  # 5 of 12
        ("заказ order", "ru"),  # exactly half
        ("12345 !!!", "en"),  # no letters: the default
    ],
)
def test_the_language_is_the_share_of_cyrillic_letters(text: str, language: str) -> None:
    assert sg.detect_language(text) == language
    assert sg.detect_language("", default="ru") == "ru"


# -- matching -----------------------------------------------------------------------------------


@pytest.mark.parametrize("text", ["что с моим заказом", "статус заказа", "заказы не пришли"])
def test_a_russian_message_matches_an_entry_in_another_form(text: str) -> None:
    found = Suggester(SHOP).suggest(text)
    assert _ids(found)[0] == "order-status"
    assert found[0].text == "Ваш заказ в пути."
    assert found[0].source == "kb"
    assert found[0].language == "ru"
    assert found[0].key == "kb:order-status"
    # the words as they are: "заказом" is not "заказ"
    assert "order-status" not in _ids(Suggester(SHOP, normalise=sg.no_stemming).suggest(text))


def test_an_english_message_matches_in_another_form() -> None:
    suggester = Suggester(SHOP)
    assert _ids(suggester.suggest("ordering and my orders"))[0] == "order-status"
    assert _ids(suggester.suggest("refunded?"))[0] == "refund"
    found = suggester.suggest("refunded?")[0]
    assert (found.text, found.language) == ("Answer: When will I get my refund?", "en")


def test_a_message_mixing_scripts_is_matched_word_by_word() -> None:
    found = Suggester(SHOP).suggest("где мой order")
    assert _ids(found)[0] == "order-status"
    assert found[0].text == "Ваш заказ в пути."  # Russian: most of the letters


def test_the_given_language_picks_the_answer_and_skips_entries_without_one() -> None:
    suggester = Suggester(SHOP)
    found = suggester.suggest("где мой заказ", language="en")
    assert found[0].text == "Your order is on its way."
    assert "pickup" in _ids(suggester.suggest("самовывоз есть?"))
    assert "pickup" not in _ids(suggester.suggest("самовывоз есть?", language="en"))


def test_suggestions_are_ranked_scored_and_limited() -> None:
    suggester = Suggester(SHOP)
    found = suggester.suggest("где мой заказ и сколько стоит доставка", k=2)
    assert len(found) == 2
    assert set(_ids(found)) == {"order-status", "delivery-cost"}
    assert all(0.0 < s.score <= 1.0 for s in found)
    assert found[0].score >= found[1].score
    assert suggester.suggest("") == []
    assert suggester.suggest("абракадабра") == []  # nothing shares a stem


def test_a_keyword_in_the_message_lifts_its_entry(monkeypatch: pytest.MonkeyPatch) -> None:
    kb = _kb(
        _entry("plain", "Where is my parcel?", "Где моя посылка?"),
        _entry(
            "tracked",
            "Where is my parcel?",
            "Где моя посылка?",
            keywords={"ru": ["трек-номер"], "en": ["tracking number"]},
        ),
    )
    suggester = Suggester(kb)

    def scores(text: str) -> dict[str, float]:
        return {s.id: s.score for s in suggester.suggest(text)}

    with_keyword = scores("где посылка, дайте трек номер")
    half_phrase = scores("где посылка, дайте трек")
    english = scores("where is my parcel, tracking number?")
    assert max(with_keyword, key=with_keyword.__getitem__) == "tracked"
    assert with_keyword["tracked"] > with_keyword["plain"]
    assert max(english, key=english.__getitem__) == "tracked"
    monkeypatch.setattr(sg, "KEYWORD_BOOST", 0.0)
    assert scores("где посылка, дайте трек номер")["tracked"] < with_keyword["tracked"]
    assert scores("where is my parcel, tracking number?")["tracked"] < english["tracked"]
    # a phrase counts only when all its words are there
    assert scores("где посылка, дайте трек") == half_phrase


# -- the confident self-service answer ----------------------------------------------------------


def test_confident_gives_a_self_service_entry_that_matches_well() -> None:
    sure = Suggester(SHOP).confident("сколько стоит доставка?")
    assert sure is not None
    assert sure.id == "delivery-cost"
    assert sure.text.startswith("Доставка бесплатна")
    assert sure.score >= sg.CONFIDENT_SCORE


def test_confident_needs_the_score(monkeypatch: pytest.MonkeyPatch) -> None:
    suggester = Suggester(SHOP)
    text = "сколько стоит ваша доставка в казань"
    score = suggester.suggest(text)[0].score
    monkeypatch.setattr(sg, "CONFIDENT_SCORE", score + 0.01)
    assert suggester.confident(text) is None
    monkeypatch.setattr(sg, "CONFIDENT_SCORE", score - 0.01)
    sure = suggester.confident(text)
    assert sure is not None and sure.id == "delivery-cost"


def test_confident_needs_a_margin_over_the_next_entry(monkeypatch: pytest.MonkeyPatch) -> None:
    kb = _kb(
        _entry("courier", None, "Сколько стоит доставка курьером?", self_service=True),
        _entry("pickup-point", None, "Сколько стоит доставка в пункт выдачи?", self_service=True),
    )
    suggester = Suggester(kb)
    best, runner_up = suggester.suggest("сколько стоит доставка")
    assert best.score >= sg.CONFIDENT_SCORE
    assert best.score - runner_up.score < sg.CONFIDENT_MARGIN
    assert suggester.confident("сколько стоит доставка") is None
    monkeypatch.setattr(sg, "CONFIDENT_MARGIN", 0.0)
    assert suggester.confident("сколько стоит доставка") is not None


def test_confident_never_answers_with_an_entry_that_is_not_self_service() -> None:
    suggester = Suggester(SHOP)
    assert suggester.suggest("где мой заказ")[0].score >= sg.CONFIDENT_SCORE
    assert suggester.confident("где мой заказ") is None
    assert suggester.confident("хочу стать поставщиком") is None
    assert (
        Suggester(None, [("Доставка стоит 350 рублей курьером", "ru")]).confident(
            "сколько стоит доставка"
        )
        is None
    )  # past replies are for the operator only


def test_the_prior_plays_no_part_in_confident() -> None:
    suggester = Suggester(SHOP)
    text = "сколько стоит доставка?"
    for _ in range(20):
        suggester.record(suggester.suggest(text), "Уточню и напишу вам позже")
    assert suggester.suggest(text)[0].score < sg.CONFIDENT_SCORE
    sure = suggester.confident(text)
    assert sure is not None and sure.id == "delivery-cost"


# -- feedback and the ranking prior -------------------------------------------------------------


def test_a_reply_like_a_suggestion_accepts_it_and_rejects_the_rest() -> None:
    suggester = Suggester(SHOP)
    shown = suggester.suggest("где заказ и сколько стоит доставка")
    assert len(shown) >= 2
    cost = next(s for s in shown if s.id == "delivery-cost")
    reply = "Здравствуйте! Доставка бесплатна от 3 000 рублей, иначе курьер стоит 350 рублей."
    outcome = suggester.record(shown, reply)
    assert outcome.accepted == cost
    assert cost not in outcome.rejected
    assert len(outcome.rejected) == len(shown) - 1
    assert outcome.similarity >= sg.ACCEPT_SIMILARITY
    assert suggester.prior.counts["kb:delivery-cost"] == [1, 1]
    assert suggester.prior.counts["kb:order-status"] == [1, 0]


def test_a_reply_unlike_every_suggestion_rejects_them_all() -> None:
    suggester = Suggester(SHOP)
    shown = suggester.suggest("сколько стоит доставка")
    outcome = suggester.record(shown, "Уточню у склада и вернусь к вам")
    assert outcome.accepted is None
    assert outcome.rejected == tuple(shown)
    assert outcome.similarity < sg.ACCEPT_SIMILARITY
    assert all(suggester.prior.counts[s.key] == [1, 0] for s in shown)
    assert suggester.record([], "что угодно") == sg.Outcome(None, (), 0.0)


def test_acceptance_changes_the_ranking() -> None:
    kb = _kb(
        _entry("a-first", None, "Как вернуть товар?", answer_ru="Оформите возврат в кабинете."),
        _entry("b-second", None, "Как вернуть товар?", answer_ru="Сдайте посылку в пункте выдачи."),
    )
    suggester = Suggester(kb)
    text = "вернуть товар, пожалуйста"  # a partial match: the score has room to grow
    before = suggester.suggest(text)
    assert _ids(before) == ["a-first", "b-second"]  # a tie: by key
    assert before[0].score == before[1].score < 1.0
    for _ in range(3):
        shown = suggester.suggest(text)
        outcome = suggester.record(shown, "Сдайте, пожалуйста, посылку в пункте выдачи.")
        assert outcome.accepted is not None and outcome.accepted.id == "b-second"
    after = suggester.suggest(text)
    assert _ids(after) == ["b-second", "a-first"]
    assert after[0].score > before[0].score > after[1].score


def test_the_prior_factor_is_a_smoothed_rate() -> None:
    prior = Prior()
    assert prior.factor("kb:new") == 1.0
    prior.count("kb:taken", accepted=True)
    assert prior.factor("kb:taken") == pytest.approx((1 + 2) / (1 + 4) / 0.5)
    for _ in range(10):
        prior.count("kb:ignored", accepted=False)
    assert prior.factor("kb:ignored") == pytest.approx(2 / 14 / 0.5)


def test_a_score_stays_within_one_however_often_taken() -> None:
    suggester = Suggester(SHOP)
    for _ in range(50):
        suggester.prior.count("kb:order-status", accepted=True)
    found = suggester.suggest("где мой заказ")
    assert found[0].id == "order-status"
    assert found[0].score == 1.0


def test_the_prior_survives_a_round_trip_through_json() -> None:
    suggester = Suggester(SHOP)
    shown = suggester.suggest("где заказ и сколько стоит доставка")
    suggester.record(shown, "Доставка бесплатна от 3 000 рублей, иначе курьер стоит 350 рублей.")
    saved = json.loads(json.dumps(suggester.prior.to_dict()))
    restored = Prior.from_dict(saved)
    assert restored.counts == suggester.prior.counts
    assert restored.to_dict() == saved
    again = Suggester(SHOP, prior=restored)
    text = "где заказ и сколько стоит доставка"
    assert again.suggest(text) == suggester.suggest(text)


@pytest.mark.parametrize(
    "data",
    [
        {},
        {"version": 2, "counts": {}},
        {"version": 1, "counts": []},
        {"version": 1, "counts": {"kb:a": [1, 0]}},
        {"version": 1, "counts": {"kb:a": {"shown": "1", "accepted": 0}}},
        {"version": 1, "counts": {"kb:a": {"shown": True, "accepted": 0}}},
        {"version": 1, "counts": {"kb:a": {"shown": 1, "accepted": 2}}},
        {"version": 1, "counts": {"kb:a": {"shown": 1, "accepted": -1}}},
    ],
)
def test_a_prior_of_another_shape_is_refused(data: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        Prior.from_dict(data)


# -- past replies -------------------------------------------------------------------------------


def test_add_reply_makes_a_past_reply_suggestible_at_once() -> None:
    suggester = Suggester(SHOP)
    text = "можно ли оплатить наличными курьеру"
    assert all(s.source == "kb" for s in suggester.suggest(text))
    reply = "Да, оплатить наличными курьеру можно при получении."
    reply_id = suggester.add_reply(reply, "ru")
    assert reply_id is not None
    found = suggester.suggest(text)
    assert (found[0].source, found[0].id, found[0].text) == ("reply", reply_id, reply)
    assert found[0].key == f"reply:{reply_id}"
    # the same text again (case and spaces aside) is the same reply
    assert (
        suggester.add_reply("  да, оплатить наличными  курьеру можно при получении. ") == reply_id
    )
    assert sum(s.source == "reply" for s in suggester.suggest(text)) == 1


def test_replies_added_one_by_one_match_as_replies_given_at_once() -> None:
    replies: list[tuple[str, str | None]] = [
        ("Курьер приедет завтра с 10 до 14 часов.", "ru"),
        ("Оплатить можно картой или наличными при получении.", "ru"),
        ("Your parcel will arrive tomorrow between 10 and 2.", None),
    ]
    at_once = Suggester(SHOP, replies)
    one_by_one = Suggester(SHOP)
    for text, language in replies:
        one_by_one.add_reply(text, language)
    for text in ("когда приедет курьер", "оплатить наличными", "when will my parcel arrive"):
        assert one_by_one.suggest(text) == at_once.suggest(text)
    assert at_once.suggest("when will my parcel arrive")[0].source == "reply"  # detected: en


def test_a_reply_is_offered_in_its_own_language_only_and_short_ones_are_not_kept() -> None:
    suggester = Suggester(None)
    assert suggester.add_reply("Ок") is None
    assert suggester.add_reply("Спасибо, жду") is None  # two stems
    suggester.add_reply("Курьер приедет завтра утром.", "ru")
    assert _ids(suggester.suggest("курьер приедет?", language="ru"))
    assert suggester.suggest("курьер приедет?", language="en") == []


def test_nothing_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    suggester = Suggester(SHOP, [("Иван, ваш заказ 45821 в пути, телефон +79990000000", "ru")])
    shown = suggester.suggest("Иван: где мой заказ 45821?")
    suggester.confident("Иван: где мой заказ 45821?")
    suggester.record(shown, "Иван, ваш заказ 45821 в пути")
    assert caplog.records == []
