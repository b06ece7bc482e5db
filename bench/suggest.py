"""``python -m bench.suggest [--json] [--rounds N]``: suggested replies on
the labelled FAQ set (``bench/data/faq``, see its README): precision@1 and
precision@3 per language and per kind of query, with no stemming, with
Snowball's stemmers (the bridge's) and with pymorphy3's lemmas for Russian
(when installed); how often a confident self-service answer is right, and
how often one is given to a message the knowledge base cannot answer; the
same queries against the entries' answers as past operator replies (no
knowledge base); the latency of one ``suggest`` call."""

from __future__ import annotations

import argparse
import importlib.util
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml

from bench.report import emit_json, percentile, rnd, table
from bridge.service import suggest as sg
from bridge.service.knowledge import KnowledgeBase, load

DATA = Path(__file__).resolve().parent / "data" / "faq"


@dataclass(frozen=True)
class Query:
    text: str
    lang: str
    entry: str | None
    kind: str
    typo: bool


def queries(path: Path = DATA / "queries.yaml") -> list[Query]:
    rows = yaml.safe_load(path.read_text(encoding="utf-8"))["queries"]
    return [
        Query(r["text"], r["lang"], r["entry"], r["kind"], bool(r.get("typo", False))) for r in rows
    ]


def leaks(kb: KnowledgeBase, labelled: Sequence[Query]) -> list[str]:
    """Queries whose stems are those of one of the knowledge base's own
    questions (the set must not test the KB against itself)."""
    stem = sg.snowball()
    own = {tuple(sg.stems(q, stem)) for e in kb.entries for qs in e.questions.values() for q in qs}
    return [q.text for q in labelled if tuple(sg.stems(q.text, stem)) in own]


def pymorphy() -> sg.Normaliser:
    """pymorphy3's first parse's normal form for Cyrillic words, Snowball's
    English stemmer for the rest."""
    import pymorphy3  # type: ignore[import-untyped]

    morph = pymorphy3.MorphAnalyzer(lang="ru")
    english = sg.snowball()

    @lru_cache(maxsize=65536)
    def lemma(word: str) -> str:
        if "а" <= word[0] <= "я":
            return str(morph.parse(word)[0].normal_form).replace("ё", "е")
        return english(word)

    return lemma


def _hit(found: Sequence[sg.Suggestion], entry: str, k: int) -> bool:
    return any(s.id == entry for s in found[:k])


def evaluate(
    suggester: sg.Suggester, labelled: Sequence[Query], to_entry: Callable[[str], str | None]
) -> dict[str, Any]:
    """Precision@1/@3 per language and kind, and the confident answers."""
    buckets: dict[str, list[tuple[bool, bool]]] = {}
    confident = {"given": 0, "right": 0, "on_none": 0}
    for q in labelled:
        if q.entry is None:
            confident["on_none"] += suggester.confident(q.text) is not None
            continue
        found = suggester.suggest(q.text, k=3)
        ids = [to_entry(s.id) for s in found]
        row = (ids[:1] == [q.entry], q.entry in ids)
        for name in ("all", q.lang, q.kind, *(["typo"] if q.typo else [])):
            buckets.setdefault(name, []).append(row)
        sure = suggester.confident(q.text)
        if sure is not None:
            confident["given"] += 1
            confident["right"] += to_entry(sure.id) == q.entry
    out: dict[str, Any] = {
        name: {
            "n": len(rows),
            "p_at_1": sum(a for a, _ in rows) / len(rows),
            "p_at_3": sum(b for _, b in rows) / len(rows),
        }
        for name, rows in buckets.items()
    }
    out["confident"] = confident
    return out


def latency(suggester: sg.Suggester, labelled: Sequence[Query], rounds: int) -> list[float]:
    """Milliseconds per ``suggest`` call, every query ``rounds`` times."""
    spent = []
    for _ in range(rounds):
        for q in labelled:
            start = time.perf_counter()
            suggester.suggest(q.text, k=3)
            spent.append((time.perf_counter() - start) * 1000)
    return spent


def replies_only(
    kb: KnowledgeBase, normalise: sg.Normaliser
) -> tuple[sg.Suggester, dict[str, str]]:
    """No knowledge base: every entry's answers are past operator replies."""
    suggester = sg.Suggester(None, normalise=normalise)
    owner: dict[str, str] = {}
    for entry in kb.entries:
        for lang, text in entry.answer.items():
            reply_id = suggester.add_reply(text, lang)
            if reply_id is not None:
                owner[reply_id] = entry.id
    return suggester, owner


def _factories() -> dict[str, Callable[[], sg.Normaliser]]:
    """How words are indexed: as they are, the bridge's Snowball stemmers,
    pymorphy3's lemmas (when it is installed)."""
    out: dict[str, Callable[[], sg.Normaliser]] = {
        "none": lambda: sg.no_stemming,
        "snowball": sg.snowball,
    }
    if importlib.util.find_spec("pymorphy3") is not None:
        out["pymorphy3"] = pymorphy
    return out


def cold_words(factory: Callable[[], sg.Normaliser], words: Sequence[str]) -> dict[str, float]:
    """Milliseconds to make the normaliser; microseconds per distinct word
    with nothing cached."""
    started = time.perf_counter()
    normalise = factory()
    made = time.perf_counter()
    for word in words:
        normalise(word)
    done = time.perf_counter()
    return {"setup_ms": (made - started) * 1000, "word_us": (done - made) * 1e6 / len(words)}


def measure(rounds: int) -> dict[str, Any]:
    kb = load(DATA / "kb.yaml")
    labelled = queries()
    leaked = leaks(kb, labelled)
    if leaked:
        raise SystemExit(f"{len(leaked)} queries repeat a knowledge-base question: {leaked}")
    detected = sum(sg.detect_language(q.text) == q.lang for q in labelled)
    texts = [q.text for q in labelled] + [
        t for e in kb.entries for qs in e.questions.values() for t in (*qs, *e.answer.values())
    ]
    words = sorted({w for t in texts for w in sg.stems(t, sg.no_stemming)})
    figures: dict[str, Any] = {
        "queries": len(labelled),
        "entries": len(kb.entries),
        "language_detected": detected / len(labelled),
        "modes": {},
    }
    for name, factory in _factories().items():
        cold = cold_words(factory, words)
        normalise = factory()
        started = time.perf_counter()
        suggester = sg.Suggester(kb, normalise=normalise)
        built_ms = (time.perf_counter() - started) * 1000
        result = evaluate(suggester, labelled, lambda i: i)
        spent = latency(suggester, labelled, rounds)
        result |= cold | {"index_ms": built_ms, "distinct_words": len(words)}
        result["suggest_ms"] = {"p50": percentile(spent, 50), "p99": percentile(spent, 99)}
        figures["modes"][name] = result
        replies, owner = replies_only(kb, normalise)
        figures["modes"][f"{name}, replies only"] = evaluate(replies, labelled, owner.get)
    return figures


def _print(figures: dict[str, Any]) -> None:
    rows = []
    for name, r in figures["modes"].items():
        latency_ms = r.get("suggest_ms", {})
        rows.append(
            [
                name,
                *(
                    f"{r[b]['p_at_1']:.2f} / {r[b]['p_at_3']:.2f}"
                    for b in ("all", "ru", "en", "inflection", "paraphrase", "typo")
                ),
                f"{r['confident']['right']}/{r['confident']['given']}",
                r["confident"]["on_none"],
                rnd(latency_ms.get("p50"), 3),
                rnd(latency_ms.get("p99"), 3),
                rnd(r.get("setup_ms"), 1),
                rnd(r.get("word_us"), 1),
            ]
        )
    header = ["words", "all P@1/P@3", "ru", "en", "inflection", "paraphrase", "typo"]
    header += ["confident right", "on none", "p50 ms", "p99 ms", "setup ms", "µs/word cold"]
    n = figures["modes"]["snowball"]
    title = (
        f"Suggested replies: {figures['queries']} labelled queries "
        f"({n['ru']['n']} ru, {n['en']['n']} en answerable; {n['inflection']['n']} inflection, "
        f"{n['paraphrase']['n']} paraphrase, {n['typo']['n']} with a typo), "
        f"{figures['entries']} entries; language detected right: "
        f"{figures['language_detected']:.1%}"
    )
    print(table(title, header, rows))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.suggest", description=__doc__)
    parser.add_argument("--json", action="store_true", help="one JSON line of the figures")
    parser.add_argument("--rounds", type=int, default=20, help="latency: rounds of all queries")
    args = parser.parse_args(argv)
    figures = measure(args.rounds)
    _print(figures)
    if args.json:
        emit_json(figures)
    return 0


if __name__ == "__main__":
    sys.exit(main())
