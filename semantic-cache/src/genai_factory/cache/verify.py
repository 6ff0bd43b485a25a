"""Verification of a semantic candidate: reject pairs that look alike but ask different things.

Embeddings put "enable 2FA" next to "disable 2FA" and "refund order 1234" next to "refund order
1243". Before a semantic hit is served, :class:`PairVerifier` compares cheap, precomputed
:class:`TextFeatures` of both prompts and rejects the pair when they differ in

- negation (``not``, ``n't``, ``never``, ``no``, ``without`` ...), by count;
- numbers (digits and number words, as a multiset of normalised values);
- dates (month and weekday names, today/tomorrow/yesterday, last/next/this + unit);
- named entities (capitalised tokens that are not common sentence starters, acronyms, mixed case);
- quantity words (all/none/some/most/every/few ...);
- polarity words (enable/disable, increase/decrease, add/remove, allow/deny, ... 130 pairs,
  "turn on/off", and value groups such as hourly/weekly/monthly or morning/evening/night);
- order: the same words with their roles swapped ("from Boston to Denver" vs "from Denver to
  Boston", "5 miles to km" vs "5 km to miles").

A capitalised word that opens a sentence is not taken for a name ("Book a flight", "Raise the
limit"): names there are left to the embedding and the order check.

``PairVerifier.learned()`` (the cache's default) runs only the checks the training script chose as
hard rejections, then a logistic :class:`PairModel` over :func:`pair_features` (cosine, every check
as a flag, word overlap, length ratio, number and name differences) whose probability must reach
its calibrated threshold. ``benchmarks/train_verifier.py`` fits it on the train splits of MRPC and
the adversarial set and chooses the thresholds on their dev splits; the weights ship in
``verifier_model.json`` beside this file.

Example:
    >>> from genai_factory.cache.verify import PairVerifier
    >>> verifier = PairVerifier()
    >>> verifier.verify("How do I enable two-factor login?", "How can I enable two-factor login").passed
    True
    >>> verifier.verify("How do I enable 2FA?", "How do I disable 2FA?").reasons
    ('polarity',)
    >>> verifier.verify("Is Paris in France?", "Is Lyon in France?").reasons
    ('entities',)
    >>> verifier.verify("Refund order 1234", "Refund order 1243").reasons
    ('numbers',)
    >>> verifier.verify("Can I cancel it?", "Can I not cancel it?").reasons
    ('negation',)
"""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from functools import lru_cache
from pathlib import Path
from typing import Any

__all__ = [
    "CHECKS",
    "PAIR_FEATURES",
    "PairModel",
    "PairVerifier",
    "TextFeatures",
    "Verification",
    "extract_features",
    "pair_features",
]

CHECKS = ("negation", "numbers", "dates", "entities", "quantity", "polarity", "order")

_TOKEN = re.compile(r"\d+(?:[.,]\d+)*|[^\W\d_]+(?:['’][^\W\d_]+)*")
_SENTENCE_END = frozenset(".?!:;\n\"'([“‘")

_NEGATIONS = frozenset(
    [
        "not",
        "no",
        "never",
        "none",
        "nobody",
        "nothing",
        "nowhere",
        "neither",
        "nor",
        "without",
        "cannot",
        "cant",
        "dont",
        "doesnt",
        "didnt",
        "isnt",
        "arent",
        "wasnt",
        "werent",
        "wont",
        "wouldnt",
        "shouldnt",
        "couldnt",
        "hasnt",
        "havent",
        "hadnt",
        "mustnt",
        "neednt",
        "aint",
    ]
)

_NUMBER_WORDS: dict[str, float] = {
    w: i
    for i, w in enumerate(
        [
            "zero",
            "one",
            "two",
            "three",
            "four",
            "five",
            "six",
            "seven",
            "eight",
            "nine",
            "ten",
            "eleven",
            "twelve",
            "thirteen",
            "fourteen",
            "fifteen",
            "sixteen",
            "seventeen",
            "eighteen",
            "nineteen",
            "twenty",
        ]
    )
}
_NUMBER_WORDS.update(
    {
        "thirty": 30,
        "forty": 40,
        "fifty": 50,
        "sixty": 60,
        "seventy": 70,
        "eighty": 80,
        "ninety": 90,
        "hundred": 100,
        "thousand": 1000,
        "million": 10**6,
        "billion": 10**9,
        "trillion": 10**12,
        "dozen": 12,
        "first": 1,
        "second": 2,
        "third": 3,
        "fourth": 4,
        "fifth": 5,
        "sixth": 6,
        "seventh": 7,
        "eighth": 8,
        "ninth": 9,
        "tenth": 10,
        "twice": 2,
        "once": 1,
        "double": 2,
        "triple": 3,
        "half": 0.5,
        "quarter": 0.25,
    }
)

del _NUMBER_WORDS["one"]  # "which one", "one of": a pronoun as often as a count

_MONTHS = frozenset(
    [
        "january",
        "february",
        "april",
        "june",
        "july",
        "august",
        "september",
        "october",
        "november",
        "december",
        "jan",
        "feb",
        "apr",
        "jun",
        "jul",
        "aug",
        "sep",
        "sept",
        "oct",
        "nov",
        "dec",
    ]
)
_CAPITAL_ONLY_MONTHS = frozenset({"may", "march"})  # also a verb: a month only when capitalised
_WEEKDAYS = frozenset(
    [
        "monday",
        "tuesday",
        "wednesday",
        "thursday",
        "friday",
        "saturday",
        "sunday",
        "mon",
        "tue",
        "tues",
        "wed",
        "thu",
        "thur",
        "thurs",
        "fri",
        "sat",
        "sun",
    ]
)
_RELATIVE_DAYS = frozenset(
    "today tomorrow yesterday tonight spring summer autumn winter christmas easter".split()  # noqa: SIM905
)
_DATE_SHIFTERS = frozenset(["last", "next", "this", "previous", "coming", "past", "current"])
_DATE_UNITS = frozenset(
    ["day", "week", "month", "year", "quarter", "decade", "century", "hour", "minute"]
)

_STRONG_QUANTIFIERS = frozenset(
    [
        "all",
        "none",
        "every",
        "each",
        "most",
        "few",
        "always",
        "never",
        "only",
        "everyone",
        "everything",
        "everybody",
        "nobody",
        "nothing",
        "entire",
        "whole",
        "majority",
        "minority",
        "least",
        "rarely",
        "seldom",
    ]
)
_QUANTIFIER_SYNONYMS = {
    "every": "all",
    "each": "all",
    "everyone": "all",
    "everybody": "all",
    "everything": "all",
    "entire": "all",
    "whole": "all",
    "majority": "most",
    "much": "many",
    "nobody": "none",
    "nothing": "none",
    "minority": "few",
    "fewer": "few",
    "anyone": "any",
    "anything": "any",
    "someone": "some",
    "something": "some",
    "somebody": "some",
}
_WEAK_QUANTIFIERS = frozenset(
    [
        "some",
        "any",
        "many",
        "several",
        "much",
        "more",
        "less",
        "fewer",
        "sometimes",
        "often",
        "usually",
        "someone",
        "something",
        "somebody",
        "anyone",
        "anything",
        "multiple",
        "partial",
        "both",
        "either",
    ]
)

# Capitalised at a sentence start, these are ordinary words, not names.
_COMMON_STARTERS = frozenset(
    [
        "a",
        "an",
        "the",
        "this",
        "that",
        "these",
        "those",
        "there",
        "here",
        "it",
        "its",
        "i",
        "me",
        "my",
        "we",
        "our",
        "you",
        "your",
        "he",
        "she",
        "they",
        "them",
        "what",
        "which",
        "who",
        "whom",
        "whose",
        "when",
        "where",
        "why",
        "how",
        "is",
        "are",
        "was",
        "were",
        "be",
        "been",
        "am",
        "do",
        "does",
        "did",
        "done",
        "can",
        "could",
        "would",
        "should",
        "will",
        "shall",
        "may",
        "might",
        "must",
        "have",
        "has",
        "had",
        "please",
        "tell",
        "give",
        "show",
        "explain",
        "describe",
        "list",
        "write",
        "make",
        "find",
        "get",
        "let",
        "help",
        "summarize",
        "summarise",
        "translate",
        "compare",
        "define",
        "name",
        "convert",
        "calculate",
        "check",
        "create",
        "generate",
        "suggest",
        "recommend",
        "provide",
        "and",
        "or",
        "but",
        "so",
        "if",
        "then",
        "also",
        "in",
        "on",
        "at",
        "to",
        "for",
        "from",
        "of",
        "by",
        "with",
        "about",
        "as",
        "into",
        "over",
        "under",
        "after",
        "before",
        "during",
        "between",
        "is",
        "yes",
        "no",
        "not",
        "hi",
        "hello",
        "don",
        "doesn",
        "didn",
        "can",
        "isn",
        "aren",
        "won",
        "wouldn",
        "shouldn",
        "couldn",
        "wasn",
        "weren",
        "haven",
        "hasn",
        "hadn",
        "let",
        "ain",
        "hey",
        "ok",
        "okay",
        "thanks",
        "thank",
        "dear",
        "any",
        "some",
        "all",
        "every",
        "each",
        "most",
        "many",
        "few",
        "one",
        "two",
        "three",
        "first",
        "next",
        "last",
        "best",
        "good",
        "new",
        "old",
        "my",
        "our",
        "their",
        "his",
        "her",
        "is",
        "whats",
        "hows",
        "wheres",
        "whos",
        "why's",
        "why",
        "whats",
    ]
)

_POLARITY_PAIRS = """
enable disable; increase decrease; add remove; allow deny; allow block; permit forbid; start stop;
open close; buy sell; upload download; import export; encrypt decrypt; lock unlock; include exclude;
accept reject; install uninstall; connect disconnect; raise lower; win lose; before after;
above below; maximum minimum; max min; higher lower; increase reduce; grant revoke;
subscribe unsubscribe; activate deactivate; show hide; push pull; send receive; enter exit;
login logout; create delete; compress decompress; mount unmount; freeze unfreeze; approve reject;
hire fire; arrive depart; maximize minimize; maximise minimise; inside outside; internal external;
input output; true false; success failure; succeed fail; positive negative; left right; up down;
best worst; better worse; cheap expensive; cheapest priciest; fast slow; faster slower;
fastest slowest; hot cold; safe unsafe; legal illegal; public private; early late; earliest latest;
old new; oldest newest; older newer; largest smallest; biggest smallest; bigger smaller;
larger smaller; long short; longer shorter; strong weak; high low; highest lowest; rich poor;
pass fail; agree disagree; like dislike; love hate; remember forget; visible invisible;
valid invalid; sync async; encode decode; serialize deserialize; mute unmute; pause resume;
attach detach; follow unfollow; block unblock; hide unhide; archive unarchive; pin unpin;
arm disarm; plus minus; gain loss; profit loss; rise fall; credit debit; deposit withdraw;
import export; inbound outbound; ascending descending; north south; east west; men women;
male female; boy girl; husband wife; father mother; son daughter; brother sister; king queen;
min max; add subtract; multiply divide; merge split; expand collapse; include omit;
present absent; online offline; available unavailable; possible impossible; legal unlawful;
read write; input output; client server; sender recipient; buyer seller; employer employee;
lender borrower; landlord tenant; over under; begin end; start end; start finish;
soft hard; polite rude; accept decline; children adults; kids adults; cover exclude;
import export; win draw; pros cons; advantage disadvantage; benefit risk; benefits risks;
strength weakness; cause effect; heat cool; warm cool; wet dry; full empty; heavy light;
import export; more less; most least; plus minus; asc desc
"""

_IRREGULAR = {
    "sold": "sell",
    "bought": "buy",
    "won": "win",
    "lost": "lose",
    "rose": "rise",
    "risen": "rise",
    "fell": "fall",
    "fallen": "fall",
    "sent": "send",
    "forgot": "forget",
    "forgotten": "forget",
    "lower": "lower",
    "men": "men",
    "women": "women",
    "wives": "wife",
    "losses": "loss",
}


def _forms(base: str) -> set[str]:
    forms = {base, base + "s", base + "es", base + "d", base + "ed", base + "ing"}
    if base.endswith("e"):
        forms.add(base[:-1] + "ing")
    if base.endswith("y"):
        forms |= {base[:-1] + "ies", base[:-1] + "ied"}
    if len(base) > 2 and base[-1] not in "aeiouwy" and base[-2] in "aeiou":
        forms |= {base + base[-1] + "ed", base + base[-1] + "ing"}
    return forms


# Groups with more than two values: a text naming one value excludes the others.
_VALUE_GROUPS = {
    "period": {
        "hour": "hour hours hourly",
        "week": "week weeks weekly",
        "month": "month months monthly",
        "year": "year years yearly annual annually",
        "quarter": "quarter quarters quarterly",
    },
    "daypart": {
        "morning": "morning mornings am",
        "evening": "afternoon evening evenings pm",
        "night": "night nights tonight midnight overnight",
    },
    "weekpart": {"weekend": "weekend weekends", "weekday": "weekday weekdays"},
}
# "turn on" / "switch off" / "log in": particles after these verbs carry the polarity
_PHRASAL_HEADS = frozenset(
    [
        "turn",
        "turns",
        "turned",
        "turning",
        "switch",
        "switches",
        "switched",
        "switching",
        "power",
        "powered",
        "log",
        "logs",
        "logged",
        "logging",
        "sign",
        "signs",
        "signed",
        "signing",
        "opt",
        "opts",
        "opted",
    ]
)


def _polarity_table() -> dict[str, tuple[tuple[str, int], ...]]:
    table: dict[str, set[tuple[str, int]]] = {}
    bases: dict[str, set[tuple[str, int]]] = {}
    for raw in _POLARITY_PAIRS.replace("\n", " ").split(";"):
        words = raw.split()
        if len(words) != 2:
            continue
        group = "/".join(words)
        for pole, word in enumerate(words):
            bases.setdefault(word, set()).add((group, pole))
            for form in _forms(word):
                table.setdefault(form, set()).add((group, pole))
    for form, base in _IRREGULAR.items():
        table.setdefault(form, set()).update(bases.get(base, set()))
    for group, values in _VALUE_GROUPS.items():
        for pole, (_, members) in enumerate(values.items()):
            for word in members.split():
                table.setdefault(word, set()).add((group, pole))
    return {form: tuple(sorted(poles)) for form, poles in table.items()}


_POLARITY = _polarity_table()
_PHRASAL_PARTICLES = {
    "on": ("enable/disable", 0),
    "off": ("enable/disable", 1),
    "in": ("login/logout", 0),
    "out": ("login/logout", 1),
}


@dataclass(frozen=True, slots=True)
class TextFeatures:
    """What the verifier compares, extracted once per text (entries keep theirs)."""

    negations: int
    numbers: tuple[tuple[str, int], ...]
    dates: frozenset[str]
    entities: frozenset[str]
    words: frozenset[str]
    quantifiers: frozenset[str]
    polarity: frozenset[tuple[str, int]]
    tokens: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Verification:
    """The verifier's answer: ``passed`` and, when not, which checks failed."""

    passed: bool
    reasons: tuple[str, ...] = ()
    probability: float | None = None  # the learned stage's, when it ran


def _number_value(token: str) -> str | None:
    cleaned = token.replace(",", "")
    try:
        return format(Decimal(cleaned).normalize(), "f")
    except InvalidOperation:  # pragma: no cover - the token regex only yields digits and dots
        return None


def _stem(word: str) -> str:
    """The part before an apostrophe: "alice's" -> "alice", "don't" -> "don"."""
    return re.split(r"['’]", word, maxsplit=1)[0]


def _plain(word: str) -> str:
    return word.replace("'", "").replace("’", "")


@lru_cache(maxsize=65536)
def extract_features(text: str) -> TextFeatures:
    """Tokenise ``text`` once and collect every feature the checks compare."""
    negations = 0
    numbers: Counter[str] = Counter()
    dates: set[str] = set()
    entities: set[str] = set()
    words: set[str] = set()
    quantifiers: set[str] = set()
    polarity: set[tuple[str, int]] = set()
    previous_lower = ""
    tokens: list[str] = []
    for match in _TOKEN.finditer(text):
        token = match.group(0)
        if token[0].isdigit():
            value = _number_value(token)
            if value is not None:
                numbers[value] += 1
                tokens.append(value)
            previous_lower = token
            continue
        lower = token.lower()
        plain = _plain(lower)
        words.add(plain)
        tokens.append(plain)
        start = match.start()
        before = text[:start].rstrip()
        sentence_start = not before or before[-1] in _SENTENCE_END
        if plain in _NEGATIONS or lower.endswith(("n't", "n’t")):
            negations += 1
        if plain in _NUMBER_WORDS:
            numbers[format(Decimal(str(_NUMBER_WORDS[plain])).normalize(), "f")] += 1
        day = _stem(lower)
        day = day[:-1] if day.endswith("s") and day[:-1] in _WEEKDAYS else day
        is_month = day in _MONTHS or (day in _CAPITAL_ONLY_MONTHS and token[0].isupper())
        if is_month or day in _WEEKDAYS or day in _RELATIVE_DAYS:
            dates.add(day)
        elif plain in _DATE_UNITS and previous_lower in _DATE_SHIFTERS:
            dates.add(f"{previous_lower} {plain}")
        if plain in _STRONG_QUANTIFIERS or plain in _WEAK_QUANTIFIERS:
            quantifiers.add(_QUANTIFIER_SYNONYMS.get(plain, plain))
        polarity.update(_POLARITY.get(plain, ()))
        if previous_lower in _PHRASAL_HEADS and plain in _PHRASAL_PARTICLES:
            polarity.add(_PHRASAL_PARTICLES[plain])
        if not is_month and day not in _WEEKDAYS and _looks_like_name(token, sentence_start):
            entities.add(_stem(lower))
        words.add(_stem(lower))
        previous_lower = plain
    return TextFeatures(
        negations=negations,
        numbers=tuple(sorted(numbers.items())),
        dates=frozenset(dates),
        entities=frozenset(entities),
        words=frozenset(words),
        quantifiers=frozenset(quantifiers),
        polarity=frozenset(polarity),
        tokens=tuple(tokens),
    )


def _looks_like_name(word: str, sentence_start: bool) -> bool:
    if len(word) == 1 and word != "I":
        return word.isupper() and not sentence_start
    if word == "I" or (not word[0].isupper() and not any(c.isupper() for c in word[1:])):
        return False
    if any(c.isupper() for c in word[1:]):
        return True  # acronyms and mixed case: AWS, iPhone, GPT
    return not sentence_start


class PairVerifier:
    """Rejects a (query, cached prompt) pair that differs in meaning-changing details.

    ``checks`` selects which of :data:`CHECKS` run (all by default).
    """

    def __init__(self, checks: list[str] | None = None, model: PairModel | None = None) -> None:
        self.checks = list(CHECKS) if checks is None else list(checks)
        unknown = set(self.checks) - set(CHECKS)
        if unknown:
            raise ValueError(f"unknown verifier checks {sorted(unknown)}; known: {list(CHECKS)}")
        self._enabled = frozenset(self.checks)
        self.model = model

    @classmethod
    def learned(cls, model: PairModel | None = None) -> PairVerifier:
        """The cache's default: the model's hard checks, then the model (the packaged one)."""
        model = PairModel.load() if model is None else model
        return cls(checks=list(model.hard_checks), model=model)

    def verify(self, query: str, cached: str, similarity: float | None = None) -> Verification:
        """Compare two texts (the learned stage runs only when ``similarity`` is given)."""
        return self.compare(extract_features(query), extract_features(cached), similarity)

    def compare(
        self, a: TextFeatures, b: TextFeatures, similarity: float | None = None
    ) -> Verification:
        """Compare two precomputed feature sets: hard checks, then the model if any."""
        reasons = self._hard_reasons(a, b)
        if reasons or self.model is None or similarity is None:
            return Verification(passed=not reasons, reasons=tuple(reasons))
        probability = self.model.probability(pair_features(a, b, similarity))
        if probability < self.model.threshold:
            reasons.append("model")
        return Verification(passed=not reasons, reasons=tuple(reasons), probability=probability)

    def _hard_reasons(self, a: TextFeatures, b: TextFeatures) -> list[str]:
        reasons: list[str] = []
        on = self._enabled
        if "negation" in on and a.negations != b.negations:
            reasons.append("negation")
        if "numbers" in on and a.numbers != b.numbers:
            reasons.append("numbers")
        if "dates" in on and a.dates != b.dates:
            reasons.append("dates")
        if "entities" in on and _entities_differ(a, b):
            reasons.append("entities")
        if "quantity" in on and _quantifiers_differ(a.quantifiers, b.quantifiers):
            reasons.append("quantity")
        if "polarity" in on and _polarity_differs(a.polarity, b.polarity):
            reasons.append("polarity")
        if "order" in on and _roles_swapped(a.tokens, b.tokens):
            reasons.append("order")
        return reasons


def _entities_differ(a: TextFeatures, b: TextFeatures) -> bool:
    # a name written in lower case on the other side still counts as mentioned
    return any(e not in b.words for e in a.entities) or any(e not in a.words for e in b.entities)


def _quantifiers_differ(a: frozenset[str], b: frozenset[str]) -> bool:
    if a == b:
        return False
    if a and b:
        return True
    one_sided = a ^ b
    return bool(one_sided & _STRONG_QUANTIFIERS)


def _polarity_differs(a: frozenset[tuple[str, int]], b: frozenset[tuple[str, int]]) -> bool:
    groups = {group for group, _ in a} & {group for group, _ in b}
    return any(
        {p for g, p in a if g == group} != {p for g, p in b if g == group} for group in groups
    )


_DIRECTIONAL = frozenset(
    [
        "to",
        "from",
        "than",
        "into",
        "vs",
        "versus",
        "by",
        "over",
        "under",
        "for",
        "against",
        "before",
        "after",
    ]
)
_FILLER = frozenset(
    [
        "the",
        "a",
        "an",
        "my",
        "your",
        "our",
        "their",
        "its",
        "his",
        "her",
        "this",
        "that",
        "of",
        "in",
        "on",
        "at",
        "is",
        "are",
    ]
)


def _role_pairs(tokens: tuple[str, ...]) -> Counter[tuple[str, str, str]]:
    """(word before, relation, word after) around each directional word, fillers skipped."""
    pairs: Counter[tuple[str, str, str]] = Counter()
    content = [(i, t) for i, t in enumerate(tokens) if t not in _FILLER and t not in _DIRECTIONAL]
    for i, token in enumerate(tokens):
        if token not in _DIRECTIONAL:
            continue
        before = next((t for j, t in reversed(content) if j < i), "")
        after = next((t for j, t in content if j > i), "")
        pairs[(before, token, after)] += 1
    return pairs


def _roles_swapped(a: tuple[str, ...], b: tuple[str, ...]) -> bool:
    # only the same words in another order can be a swap; anything else is for the other checks
    if a == b or Counter(a) != Counter(b):
        return False
    return _role_pairs(a) != _role_pairs(b)


# ---------------------------------------------------------------- learned second stage

_STOPWORDS = frozenset(
    """a an the of in on at to for from by with about as into is are was were be been am do does
    did i me my we our you your he she it its they them their this that these those and or but
    so if then than what which who whom whose when where why how can could would should will
    shall may might must have has had please s""".split()  # noqa: SIM905
)

PAIR_FEATURES = (
    "cosine",
    *(f"check_{name}" for name in CHECKS),
    "word_jaccard",
    "content_jaccard",
    "length_ratio",
    "numbers_diff",
    "entities_diff",
)


def pair_features(a: TextFeatures, b: TextFeatures, similarity: float) -> list[float]:
    """The numbers the learned second stage weighs (order: :data:`PAIR_FEATURES`)."""
    checks = [
        a.negations != b.negations,
        a.numbers != b.numbers,
        a.dates != b.dates,
        _entities_differ(a, b),
        _quantifiers_differ(a.quantifiers, b.quantifiers),
        _polarity_differs(a.polarity, b.polarity),
        _roles_swapped(a.tokens, b.tokens),
    ]
    words_a, words_b = set(a.tokens), set(b.tokens)
    content_a, content_b = words_a - _STOPWORDS, words_b - _STOPWORDS
    union = len(words_a | words_b) or 1
    content_union = len(content_a | content_b) or 1
    longer = max(len(a.tokens), len(b.tokens)) or 1
    numbers_a, numbers_b = Counter(dict(a.numbers)), Counter(dict(b.numbers))
    numbers_diff = sum(((numbers_a - numbers_b) + (numbers_b - numbers_a)).values())
    entities_diff = len({e for e in a.entities if e not in b.words}) + len(
        {e for e in b.entities if e not in a.words}
    )
    return [
        similarity,
        *(float(c) for c in checks),
        len(words_a & words_b) / union,
        len(content_a & content_b) / content_union,
        abs(len(a.tokens) - len(b.tokens)) / longer,
        min(numbers_diff, 4) / 4,
        min(entities_diff, 4) / 4,
    ]


MODEL_FILE = Path(__file__).with_name("verifier_model.json")


@dataclass(frozen=True, slots=True)
class PairModel:
    """A logistic model over :func:`pair_features`, trained by ``benchmarks/train_verifier.py``.

    ``threshold`` is the probability a candidate must reach, ``similarity_threshold`` the cosine
    gate it was tuned with, ``hard_checks`` the rule checks that reject outright before it.
    """

    features: tuple[str, ...]
    mean: tuple[float, ...]
    scale: tuple[float, ...]
    coef: tuple[float, ...]
    intercept: float
    threshold: float
    similarity_threshold: float
    hard_checks: tuple[str, ...]
    provenance: dict[str, Any] = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        if self.features != PAIR_FEATURES:
            raise ValueError(f"model features {self.features} do not match {PAIR_FEATURES}")
        if not len(self.mean) == len(self.scale) == len(self.coef) == len(self.features):
            raise ValueError("model mean, scale and coef must have one value per feature")
        unknown = set(self.hard_checks) - set(CHECKS)
        if unknown:
            raise ValueError(f"unknown hard checks {sorted(unknown)}")

    def probability(self, values: list[float]) -> float:
        z = self.intercept + sum(
            c * (v - m) / s
            for c, v, m, s in zip(self.coef, values, self.mean, self.scale, strict=True)
        )
        return 1.0 / (1.0 + math.exp(-max(-60.0, min(60.0, z))))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PairModel:
        try:
            return cls(
                features=tuple(data["features"]),
                mean=tuple(float(v) for v in data["mean"]),
                scale=tuple(float(v) for v in data["scale"]),
                coef=tuple(float(v) for v in data["coef"]),
                intercept=float(data["intercept"]),
                threshold=float(data["threshold"]),
                similarity_threshold=float(data["similarity_threshold"]),
                hard_checks=tuple(data["hard_checks"]),
                provenance=dict(data.get("provenance", {})),
            )
        except (KeyError, TypeError) as exc:
            raise ValueError(f"not a pair model: {exc}") from None

    def to_dict(self) -> dict[str, Any]:
        return {
            "features": list(self.features),
            "mean": list(self.mean),
            "scale": list(self.scale),
            "coef": list(self.coef),
            "intercept": self.intercept,
            "threshold": self.threshold,
            "similarity_threshold": self.similarity_threshold,
            "hard_checks": list(self.hard_checks),
            "provenance": self.provenance,
        }

    @classmethod
    def load(cls, path: str | Path | None = None) -> PairModel:
        """The packaged model, or one written by the training script to ``path``."""
        if path is None:
            return _packaged_model()
        return cls.from_dict(json.loads(Path(path).read_text(encoding="utf-8")))


@lru_cache(maxsize=1)
def _packaged_model() -> PairModel:
    return PairModel.from_dict(json.loads(MODEL_FILE.read_text(encoding="utf-8")))
