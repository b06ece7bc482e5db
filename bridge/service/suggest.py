"""Suggested replies: a client's message matched against the tenant's
knowledge base and the operators' past replies, for the operator to pick
from; a confident match of a self-service entry, for the client.

Words are cut to their stems (Snowball's Russian and English stemmers, each
word by its script, so a message mixing both works), ``ё`` read as ``е``.
A message's language is its letters' script: Russian when at least half of
them are Cyrillic, else English.

Scores are BM25 (k1 1.2, b 0.75) over stems, divided by the sum of the
message's stem IDFs with each stem's share capped at its IDF: 1.0 means every
stem of the message was found. An entry scores its best question, blended
with all its questions and keywords as one text (``ENTRY_BLEND``); each of
its keywords (every stem of the phrase in the message) closes
``KEYWORD_BOOST`` of the gap to 1. Past replies are scored the same way in
an index of their own, which grows with :meth:`Suggester.add_reply`.

The operator's answer to a message is compared with what was suggested
(:meth:`Suggester.record`): the suggestion whose stems it shares most
(Dice coefficient, at least ``ACCEPT_SIMILARITY``) was accepted, the rest
rejected. Acceptance is a ranking prior (:class:`Prior`) multiplied into the
score; its state is a plain dict to persist."""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Literal

import snowballstemmer  # type: ignore[import-untyped]

from bridge.service.knowledge import Entry, KnowledgeBase

__all__ = [
    "ACCEPT_SIMILARITY",
    "CONFIDENT_MARGIN",
    "CONFIDENT_SCORE",
    "Normaliser",
    "Outcome",
    "Prior",
    "Suggester",
    "Suggestion",
    "detect_language",
    "no_stemming",
    "snowball",
    "stems",
]

#: a word (lower case, ``ё`` as ``е``) -> the form it is indexed by
Normaliser = Callable[[str], str]

#: :meth:`Suggester.confident`: the least score of the self-service entry
CONFIDENT_SCORE = 0.6
#: :meth:`Suggester.confident`: how far it must lead the next entry
CONFIDENT_MARGIN = 0.15
#: :meth:`Suggester.record`: the least Dice similarity (on stems) between the
#: operator's reply and a suggestion for the suggestion to count as accepted
ACCEPT_SIMILARITY = 0.6
#: an entry's score: this share from its best question, the rest from all its
#: questions and keywords read as one text
ENTRY_BLEND = 0.5
#: each keyword found closes this share of the gap between the score and 1
KEYWORD_BOOST = 0.3
#: a past reply with fewer stems ("ok", "thanks") is not indexed
MIN_REPLY_STEMS = 3
#: BM25's parameters (Robertson and Zaragoza, "The Probabilistic Relevance
#: Framework: BM25 and Beyond", 2009: the usual k1 1.2, b 0.75)
BM25_K1 = 1.2
BM25_B = 0.75

_WORD = re.compile(r"[^\W\d_]+")
_APOSTROPHES = re.compile(r"['’`]")
_CYRILLIC = re.compile(r"[\u0400-\u04ff]")


# -- words ------------------------------------------------------------------------------------


def snowball() -> Normaliser:
    """Snowball's stemmer for the word's script: Russian for Cyrillic,
    English for the rest (the ``snowballstemmer`` package)."""
    russian = snowballstemmer.stemmer("russian")
    english = snowballstemmer.stemmer("english")

    @lru_cache(maxsize=65536)
    def stem(word: str) -> str:
        stemmer = russian if _CYRILLIC.search(word) else english
        return str(stemmer.stemWord(word))

    return stem


def no_stemming(word: str) -> str:
    """The word as it is (the bench's baseline)."""
    return word


def stems(text: str, normalise: Normaliser) -> list[str]:
    """The text's words, lower case, ``ё`` as ``е``, apostrophes dropped
    ("don't" is "dont"), each normalised; digits and punctuation are not
    words."""
    lowered = _APOSTROPHES.sub("", text.lower().replace("ё", "е"))
    return [normalise(w) for w in _WORD.findall(lowered)]


def detect_language(text: str, default: str = "en") -> str:
    """``ru`` when at least half the letters are Cyrillic, ``en`` when fewer
    are, ``default`` when there are none."""
    letters = [c for c in text if c.isalpha()]
    if not letters:
        return default
    cyrillic = sum(1 for c in letters if _CYRILLIC.match(c))
    return "ru" if 2 * cyrillic >= len(letters) else "en"


# -- the index ----------------------------------------------------------------------------------


class _Index:
    """BM25 over documents of stems; documents are only ever added."""

    def __init__(self) -> None:
        self._postings: dict[str, dict[int, int]] = {}
        self._lengths: list[int] = []
        self._total = 0

    def add(self, terms: Sequence[str]) -> int:
        """Index one document; its number."""
        doc = len(self._lengths)
        for term in terms:
            posting = self._postings.setdefault(term, {})
            posting[doc] = posting.get(doc, 0) + 1
        self._lengths.append(len(terms))
        self._total += len(terms)
        return doc

    def idf(self, term: str) -> float:
        """BM25's IDF, never negative (a stem in most documents adds little)."""
        n, df = len(self._lengths), len(self._postings.get(term, ()))
        return math.log(1.0 + (n - df + 0.5) / (df + 0.5))

    def scores(self, terms: Iterable[str]) -> dict[int, float]:
        """Document number -> its score for the query's distinct stems, 0..1:
        each stem's BM25 term, capped at the stem's IDF, over the sum of the
        IDFs."""
        distinct = sorted(set(terms))
        if not distinct or not self._lengths:
            return {}
        avg = self._total / len(self._lengths)
        weights = {t: self.idf(t) for t in distinct}
        whole = sum(weights.values())
        out: dict[int, float] = {}
        for term, weight in weights.items():
            for doc, tf in self._postings.get(term, {}).items():
                norm = tf + BM25_K1 * (1.0 - BM25_B + BM25_B * self._lengths[doc] / avg)
                part = weight * tf * (BM25_K1 + 1.0) / norm
                out[doc] = out.get(doc, 0.0) + min(part, weight)
        return {doc: score / whole for doc, score in out.items()} if whole else {}


# -- suggestions and the prior ----------------------------------------------------------------


@dataclass(frozen=True)
class Suggestion:
    """One reply suggested to the operator."""

    #: "kb": a knowledge-base entry; "reply": an operator's past reply
    source: Literal["kb", "reply"]
    #: the entry's id or the reply's id (:meth:`Suggester.add_reply`)
    id: str
    #: the answer in the client's language
    text: str
    #: 0..1, the prior included
    score: float
    language: str

    @property
    def key(self) -> str:
        """``kb:<entry id>`` or ``reply:<reply id>``: the prior's key."""
        return f"{self.source}:{self.id}"


@dataclass(frozen=True)
class Outcome:
    """What the operator's reply made of a set of suggestions."""

    #: the suggestion the reply matched, or None (all rejected)
    accepted: Suggestion | None
    rejected: tuple[Suggestion, ...]
    #: the best Dice similarity of the reply to a suggestion, 0..1
    similarity: float


@dataclass
class Prior:
    """How often each suggestion was shown and accepted. Its factor is the
    smoothed acceptance rate ``(accepted + WEIGHT * RATE) / (shown + WEIGHT)``
    over ``RATE``: 1.0 for a suggestion never shown, up to 2.0 for one always
    taken, towards 0 for one shown often and never taken."""

    #: the rate a suggestion starts from, and how many showings it weighs
    RATE = 0.5
    WEIGHT = 4.0

    #: key (``Suggestion.key``) -> [shown, accepted]
    counts: dict[str, list[int]] = field(default_factory=dict)

    def factor(self, key: str) -> float:
        """The number a suggestion's score is multiplied by."""
        shown, accepted = self.counts.get(key, (0, 0))
        return (accepted + self.WEIGHT * self.RATE) / (shown + self.WEIGHT) / self.RATE

    def count(self, key: str, *, accepted: bool) -> None:
        """One showing of the suggestion, accepted or not."""
        pair = self.counts.setdefault(key, [0, 0])
        pair[0] += 1
        pair[1] += int(accepted)

    def to_dict(self) -> dict[str, Any]:
        """The state as plain JSON-able data."""
        return {
            "version": 1,
            "counts": {k: {"shown": s, "accepted": a} for k, (s, a) in self.counts.items()},
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Prior:
        """The state :meth:`to_dict` gave; ValueError on any other shape."""
        if data.get("version") != 1 or not isinstance(data.get("counts"), dict):
            raise ValueError("not a suggestion prior (version 1 with counts)")
        counts: dict[str, list[int]] = {}
        for key, row in data["counts"].items():
            if not isinstance(row, Mapping):
                raise ValueError("a prior's row is a mapping of shown and accepted")
            shown, accepted = row.get("shown"), row.get("accepted")
            if type(shown) is not int or type(accepted) is not int:  # bool is no count
                raise ValueError("a prior's counts are integers")
            if not 0 <= accepted <= shown:
                raise ValueError("a prior's accepted count is between 0 and shown")
            counts[str(key)] = [shown, accepted]
        return cls(counts)


# -- the suggester ------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Reply:
    id: str
    text: str
    language: str


class Suggester:
    """Matches messages against a knowledge base and past replies. Not
    thread-safe: one per tenant and thread, or a lock around it.

    ``replies``: the tenant's past operator replies as (text, language)
    pairs, language None to detect it; more come with :meth:`add_reply`.
    ``normalise``: how words are indexed (:func:`snowball` unless given)."""

    def __init__(
        self,
        kb: KnowledgeBase | None,
        replies: Iterable[tuple[str, str | None]] = (),
        *,
        prior: Prior | None = None,
        normalise: Normaliser | None = None,
    ) -> None:
        self.kb = kb
        self.prior = prior if prior is not None else Prior()
        self._normalise = normalise or snowball()
        self._questions = _Index()
        self._entry_texts = _Index()
        self._question_entry: list[int] = []
        self._keywords: list[list[frozenset[str]]] = []
        for number, entry in enumerate(kb.entries if kb else ()):
            self._index_entry(number, entry)
        self._replies = _Index()
        self._reply_rows: list[_Reply] = []
        self._reply_ids: dict[str, int] = {}
        for text, language in replies:
            self.add_reply(text, language)

    def _index_entry(self, number: int, entry: Entry) -> None:
        whole: list[str] = []
        for texts in entry.questions.values():
            for question in texts:
                terms = self._stems(question)
                self._questions.add(terms)
                self._question_entry.append(number)
                whole += terms
        phrases = [self._stems(k) for ks in entry.keywords.values() for k in ks]
        self._entry_texts.add(whole + [t for phrase in phrases for t in phrase])
        self._keywords.append([frozenset(p) for p in phrases if p])

    def _stems(self, text: str) -> list[str]:
        return stems(text, self._normalise)

    # -- past replies

    def add_reply(self, text: str, language: str | None = None) -> str | None:
        """Index one past operator reply; its id (the same for the same
        text), or None when it is too short to suggest."""
        terms = self._stems(text)
        if len(terms) < MIN_REPLY_STEMS:
            return None
        reply_id = _reply_id(text)
        if reply_id not in self._reply_ids:
            self._reply_ids[reply_id] = self._replies.add(terms)
            self._reply_rows.append(
                _Reply(reply_id, text.strip(), language or detect_language(text))
            )
        return reply_id

    # -- matching

    def suggest(self, text: str, language: str | None = None, k: int = 3) -> list[Suggestion]:
        """The ``k`` best answers to a client's message in its language
        (given, or detected), best first; only those sharing a stem with it."""
        lang = language or detect_language(text)
        terms = self._stems(text)
        found = self._kb_suggestions(terms, lang) + self._reply_suggestions(terms, lang)
        ranked = [(min(1.0, s.score * self.prior.factor(s.key)), s) for s in found if s.score > 0]
        ranked.sort(key=lambda row: (-row[0], -row[1].score, row[1].key))
        return [_with_score(s, final) for final, s in ranked[:k]]

    def confident(self, text: str, language: str | None = None) -> Suggestion | None:
        """The self-service answer to send the client without an operator, or
        None: the best entry must be self-service, score at least
        ``CONFIDENT_SCORE`` and lead the next entry by ``CONFIDENT_MARGIN``
        (the prior plays no part: the message alone must say it)."""
        lang = language or detect_language(text)
        found = sorted(
            self._kb_suggestions(self._stems(text), lang), key=lambda s: (-s.score, s.key)
        )
        if not found or self.kb is None:
            return None
        best = found[0]
        runner_up = found[1].score if len(found) > 1 else 0.0
        entry = self.kb.get(best.id)
        if entry is None or not entry.self_service:
            return None
        if best.score < CONFIDENT_SCORE or best.score - runner_up < CONFIDENT_MARGIN:
            return None
        return best

    def _kb_scores(self, terms: Sequence[str]) -> dict[int, float]:
        best: dict[int, float] = {}
        for doc, score in self._questions.scores(terms).items():
            number = self._question_entry[doc]
            best[number] = max(best.get(number, 0.0), score)
        whole = self._entry_texts.scores(terms)
        present = set(terms)
        out: dict[int, float] = {}
        for number in set(best) | set(whole):
            score = ENTRY_BLEND * best.get(number, 0.0) + (1 - ENTRY_BLEND) * whole.get(number, 0.0)
            hits = sum(1 for phrase in self._keywords[number] if phrase <= present)
            out[number] = 1.0 - (1.0 - score) * (1.0 - KEYWORD_BOOST) ** hits
        return out

    def _kb_suggestions(self, terms: Sequence[str], lang: str) -> list[Suggestion]:
        if self.kb is None:
            return []
        out = []
        for number, score in self._kb_scores(terms).items():
            entry = self.kb.entries[number]
            answer = entry.answer.get(lang)
            if answer is not None:
                out.append(Suggestion("kb", entry.id, answer, score, lang))
        return out

    def _reply_suggestions(self, terms: Sequence[str], lang: str) -> list[Suggestion]:
        out = []
        for doc, score in self._replies.scores(terms).items():
            row = self._reply_rows[doc]
            if row.language == lang:
                out.append(Suggestion("reply", row.id, row.text, score, lang))
        return out

    # -- feedback

    def similarity(self, a: str, b: str) -> float:
        """Dice coefficient of two texts' stem sets, 0..1."""
        left, right = set(self._stems(a)), set(self._stems(b))
        if not left or not right:
            return 0.0
        return 2 * len(left & right) / (len(left) + len(right))

    def record(self, suggestions: Sequence[Suggestion], operator_reply: str) -> Outcome:
        """The operator answered a message that had these suggestions: the
        most similar one at ``ACCEPT_SIMILARITY`` or above was accepted, the
        others rejected; the prior counts each."""
        scored = [(self.similarity(operator_reply, s.text), -i) for i, s in enumerate(suggestions)]
        best, index = max(scored, default=(0.0, 0))  # a tie goes to the higher-ranked
        accepted = suggestions[-index] if best >= ACCEPT_SIMILARITY else None
        for suggestion in suggestions:
            self.prior.count(suggestion.key, accepted=suggestion is accepted)
        rejected = tuple(s for s in suggestions if s is not accepted)
        return Outcome(accepted, rejected, best)


def _with_score(suggestion: Suggestion, score: float) -> Suggestion:
    return Suggestion(
        suggestion.source, suggestion.id, suggestion.text, round(score, 4), suggestion.language
    )


def _reply_id(text: str) -> str:
    """A stable id for a reply's text (whitespace and case do not count)."""
    canonical = " ".join(text.lower().split())
    return hashlib.blake2b(canonical.encode("utf-8"), digest_size=8).hexdigest()
