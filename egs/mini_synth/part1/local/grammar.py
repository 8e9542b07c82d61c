"""A synchronous grammar for the mini_synth corpus: one meaning, rendered in en, de, fr, es and zh.

A :class:`Sentence` is a language-neutral meaning (subject, verb, object or location, time,
negation, mood). Each ``render_<lang>`` function realises it with that language's grammar:

- en: a/an, 3rd-person -s, do-support in negation and questions, irregular plurals.
- de: case (nominative subject, accusative object, dative location), gender, weak/mixed/strong
  adjective endings, kein- negation of indefinites, V2 after a fronted time adverb, verb-first
  questions, verb-final subordinate clauses, ``in dem`` -> ``im``, dative plural -n, and the
  animal verb ``fressen``.
- fr: gender/number agreement, adjectives before or after the noun, ne ... pas with ``pas de``,
  elision (n', qu', l'), ``de le`` -> ``du``.
- es: gender/number agreement, adjectives after the noun, personal ``a``, ``ningún/ninguna``,
  ``a el`` -> ``al``, ``de el`` -> ``del``, inverted question mark.
- zh: classifiers, 两 before classifiers, 那些 for definite plurals, 在 + noun + postposition
  before the verb, 不/没 negation, 吗 questions, tone sandhi of 一 and 不 in the pinyin.

Chinese is also rendered as tone-numbered pinyin, which is what the speech synthesiser reads.
"""
from __future__ import annotations

import random
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Set, Tuple

import yaml

LANGS: Tuple[str, ...] = ("en", "de", "fr", "es", "zh")
LEXICON_PATH = Path(__file__).resolve().parent / "lexicon.yaml"


@dataclass(frozen=True)
class NP:
    """A noun phrase: ``det`` is ``def``, ``indef`` or ``num`` (then ``num`` is 2..5)."""

    noun: str
    det: str = "def"
    plural: bool = False
    adj: Optional[str] = None
    num: Optional[int] = None


@dataclass(frozen=True)
class Sentence:
    """A language-neutral meaning; ``mood`` is ``decl``, ``question`` or ``embedded``
    (``I think that ...``). Intransitive verbs and ``be`` take ``prep`` + ``loc``."""

    subj: NP
    verb: str
    obj: Optional[NP] = None
    prep: Optional[str] = None
    loc: Optional[NP] = None
    time: Optional[str] = None
    neg: bool = False
    mood: str = "decl"

    def key(self) -> Tuple[str, str, Optional[str], Optional[str], Optional[str]]:
        """The combination that must not be shared between splits: subject noun, verb, object
        noun, preposition and location noun. Every sentence whose text could contain another
        sentence's text (added adjectives, time, negation, embedding) shares its key."""
        return (
            self.subj.noun,
            self.verb,
            self.obj.noun if self.obj else None,
            self.prep,
            self.loc.noun if self.loc else None,
        )

    def lemmas(self) -> Set[str]:
        """Every lexicon entry the sentence uses (``kind:name``), to check vocabulary coverage."""
        out = {f"verb:{self.verb}"}
        for np_ in (self.subj, self.obj, self.loc):
            if np_ is not None:
                out.add(f"noun:{np_.noun}")
                if np_.adj:
                    out.add(f"adj:{np_.adj}")
                if np_.num:
                    out.add(f"num:{np_.num}")
        if self.prep:
            out.add(f"prep:{self.prep}")
        if self.time:
            out.add(f"time:{self.time}")
        return out


class Lexicon:
    """The YAML lexicon (see ``lexicon.yaml`` for the field layout)."""

    def __init__(self, path: Path = LEXICON_PATH) -> None:
        with open(path, encoding="utf-8") as f:
            lex = yaml.safe_load(f)
        self.classifiers: Dict[str, List[str]] = lex["classifiers"]
        self.nouns: Dict[str, dict] = lex["nouns"]
        self.adjectives: Dict[str, dict] = lex["adjectives"]
        self.verbs: Dict[str, dict] = lex["verbs"]
        self.prepositions: Dict[str, dict] = lex["prepositions"]
        self.times: Dict[str, dict] = lex["times"]
        self.numbers: Dict[int, dict] = {int(k): v for k, v in lex["numbers"].items()}

    def cls(self, noun: str) -> str:
        return self.nouns[noun]["cls"]

    def animate(self, noun: str) -> bool:
        return self.cls(noun) in ("human", "animal")

    def words(self, lang: str) -> Set[str]:
        """All content-word forms of one language (for vocabulary statistics)."""
        out: Set[str] = set()
        for table in (self.nouns, self.adjectives, self.verbs, self.prepositions, self.times, self.numbers):
            for entry in table.values():
                value = entry[lang]
                out.update(v for v in ([value] if isinstance(value, str) else value)
                           if isinstance(v, str) and v not in ("m", "f", "n", "pre", "post"))
        return out


# ---------------------------------------------------------------------------------------------
# English


def _en_np(lex: Lexicon, np_: NP) -> str:
    e = lex.nouns[np_.noun]["en"]
    words = [lex.adjectives[np_.adj]["en"]] if np_.adj else []
    words.append(e[1] if np_.plural else e[0])
    if np_.det == "def":
        det = "the"
    elif np_.det == "num":
        det = lex.numbers[np_.num]["en"]
    else:
        det = "an" if words[0][0] in "aeiou" else "a"
    return " ".join([det] + words)


def _finish(text: str, question: bool, lang: str) -> str:
    text = re.sub(r"\s+", " ", text).strip()
    if lang == "es" and question:
        return "¿" + text[0].upper() + text[1:] + "?"
    return text[0].upper() + text[1:] + ("?" if question else ".")


def render_en(lex: Lexicon, s: Sentence) -> str:
    """English: SVO, do-support for negation and questions, time first (last when embedded)."""
    subj = _en_np(lex, s.subj)
    v3, vbase = lex.verbs[s.verb]["en"]
    finite = vbase if s.subj.plural else v3
    rest = _en_np(lex, s.obj) if s.obj else f"{lex.prepositions[s.prep]['en']} {_en_np(lex, s.loc)}"
    if s.verb == "be":
        if s.mood == "question":
            return _finish(f"{finite} {subj} {rest}", True, "en")
        core = f"{subj} {finite}{' not' if s.neg else ''} {rest}"
    else:
        aux = "do" if s.subj.plural else "does"
        if s.mood == "question":
            return _finish(f"{aux} {subj} {vbase} {rest}", True, "en")
        core = f"{subj} {aux} not {vbase} {rest}" if s.neg else f"{subj} {finite} {rest}"
    time = lex.times[s.time]["en"] if s.time else ""
    if s.mood == "embedded":
        return _finish(f"I think that {core} {time}", False, "en")
    return _finish(f"{time} {core}", False, "en")


# ---------------------------------------------------------------------------------------------
# German

_DE_DEF = {
    "nom": {"m": "der", "f": "die", "n": "das", "pl": "die"},
    "acc": {"m": "den", "f": "die", "n": "das", "pl": "die"},
    "dat": {"m": "dem", "f": "der", "n": "dem", "pl": "den"},
}
_DE_EIN = {  # indefinites are singular (plurals are counted: zwei Hunde)
    "nom": {"m": "ein", "f": "eine", "n": "ein"},
    "acc": {"m": "einen", "f": "eine", "n": "ein"},
    "dat": {"m": "einem", "f": "einer", "n": "einem"},
}
# Adjective endings after a definite article (weak), after ein/kein (mixed), without article (strong).
_DE_WEAK = {
    "nom": {"m": "e", "f": "e", "n": "e", "pl": "en"},
    "acc": {"m": "en", "f": "e", "n": "e", "pl": "en"},
    "dat": {"m": "en", "f": "en", "n": "en", "pl": "en"},
}
_DE_MIXED = {
    "nom": {"m": "er", "f": "e", "n": "es", "pl": "en"},
    "acc": {"m": "en", "f": "e", "n": "es", "pl": "en"},
    "dat": {"m": "en", "f": "en", "n": "en", "pl": "en"},
}
_DE_STRONG_PL = {"nom": "e", "acc": "e", "dat": "en"}


def _de_np(lex: Lexicon, np_: NP, case: str, negated: bool = False) -> str:
    sg, pl, gender = lex.nouns[np_.noun]["de"]
    g = "pl" if np_.plural else gender
    noun = pl if np_.plural else sg
    if np_.plural and case == "dat" and not noun.endswith(("n", "s")):
        noun += "n"  # dative plural: den Hunden, den Büchern
    if np_.det == "def":
        det, ending = _DE_DEF[case][g], _DE_WEAK[case][g]
    elif np_.det == "num":
        det, ending = lex.numbers[np_.num]["de"], _DE_STRONG_PL[case]
    else:
        det, ending = ("k" if negated else "") + _DE_EIN[case][g], _DE_MIXED[case][g]
    adj = lex.adjectives[np_.adj]["de"] + ending if np_.adj else ""
    return " ".join(w for w in (det, adj, noun) if w)


def _de_verb(lex: Lexicon, s: Sentence) -> str:
    forms = lex.verbs[s.verb]["de"]
    if "de_animal" in lex.verbs[s.verb] and lex.cls(s.subj.noun) == "animal":
        forms = lex.verbs[s.verb]["de_animal"]  # Tiere fressen, Menschen essen
    return forms[1] if s.subj.plural else forms[0]


def render_de(lex: Lexicon, s: Sentence) -> str:
    """German: V2 main clauses, verb-first questions, verb-final clauses after ``dass``."""
    subj = _de_np(lex, s.subj, "nom")
    verb = _de_verb(lex, s)
    # Middle field: object, then nicht (unless the object is negated by kein), then the place.
    if s.obj:
        kein = s.neg and s.obj.det == "indef"
        middle = _de_np(lex, s.obj, "acc", negated=kein)
        if s.neg and not kein:
            middle += " nicht"
    else:
        loc = _de_np(lex, s.loc, "dat")
        pp = f"{lex.prepositions[s.prep]['de']} {loc}"
        pp = re.sub(r"^in dem ", "im ", pp)
        middle = ("nicht " if s.neg else "") + pp
    time = lex.times[s.time]["de"] if s.time else ""
    if s.mood == "question":
        return _finish(f"{verb} {subj} {middle}", True, "de")
    if s.mood == "embedded":
        return _finish(f"Ich glaube, dass {subj} {time} {middle} {verb}", False, "de")
    if time:
        return _finish(f"{time} {verb} {subj} {middle}", False, "de")
    return _finish(f"{subj} {verb} {middle}", False, "de")


# ---------------------------------------------------------------------------------------------
# French

_FR_ELIDE = re.compile(r"\b(le|la|de|ne|que|je) (?=[aeiouéèêâ])", re.IGNORECASE)


def _fr_np(lex: Lexicon, np_: NP, negated: bool = False) -> str:
    sg, pl, gender = lex.nouns[np_.noun]["fr"]
    noun = pl if np_.plural else sg
    if np_.det == "def":
        det = "les" if np_.plural else ("le" if gender == "m" else "la")
    elif np_.det == "num":
        det = lex.numbers[np_.num]["fr"]
    else:
        det = "de" if negated else ("un" if gender == "m" else "une")  # pas de chat
    words = [det, noun]
    if np_.adj:
        forms = lex.adjectives[np_.adj]["fr"]
        adj = forms[(2 if np_.plural else 0) + (1 if gender == "f" else 0)]
        words.insert(1 if forms[4] == "pre" else 2, adj)
    return " ".join(words)


def _fr_clause(lex: Lexicon, s: Sentence) -> str:
    subj = _fr_np(lex, s.subj)
    v3, v3pl = lex.verbs[s.verb]["fr"]
    verb = v3pl if s.subj.plural else v3
    if s.neg:
        verb = f"ne {verb} pas"
    if s.obj:
        rest = _fr_np(lex, s.obj, negated=s.neg and s.obj.det == "indef")
    else:
        rest = f"{lex.prepositions[s.prep]['fr']} {_fr_np(lex, s.loc)}"
    return f"{subj} {verb} {rest}"


def _fr_contract(text: str) -> str:
    text = re.sub(r"\bde le\b", "du", text)
    text = re.sub(r"\bde les\b", "des", text)
    return _FR_ELIDE.sub(lambda m: m.group(1)[:-1] + "'", text)


def render_fr(lex: Lexicon, s: Sentence) -> str:
    """French: SVO, ne ... pas, ``Est-ce que`` questions, fronted time adverb with a comma."""
    clause = _fr_clause(lex, s)
    time = lex.times[s.time]["fr"] if s.time else ""
    if s.mood == "question":
        text = f"est-ce que {clause}"
    elif s.mood == "embedded":
        text = f"je pense que {clause} {time}"
    else:
        text = f"{time}, {clause}" if time else clause
    return _finish(_fr_contract(text), s.mood == "question", "fr")


# ---------------------------------------------------------------------------------------------
# Spanish


def _es_np(lex: Lexicon, np_: NP, negated: bool = False) -> str:
    sg, pl, gender = lex.nouns[np_.noun]["es"]
    noun = pl if np_.plural else sg
    fem = gender == "f"
    if np_.det == "def":
        det = ("las" if fem else "los") if np_.plural else ("la" if fem else "el")
    elif np_.det == "num":
        det = lex.numbers[np_.num]["es"]
    elif negated:
        det = "ninguna" if fem else "ningún"
    else:
        det = "una" if fem else "un"
    words = [det, noun]
    if np_.adj:
        words.append(lex.adjectives[np_.adj]["es"][(2 if np_.plural else 0) + (1 if fem else 0)])
    return " ".join(words)


def render_es(lex: Lexicon, s: Sentence) -> str:
    """Spanish: SVO, personal ``a`` before human (and definite animal) objects, ¿...? questions."""
    subj = _es_np(lex, s.subj)
    v3, v3pl = lex.verbs[s.verb]["es"]
    verb = ("no " if s.neg else "") + (v3pl if s.subj.plural else v3)
    if s.obj:
        rest = _es_np(lex, s.obj, negated=s.neg and s.obj.det == "indef")
        cls = lex.cls(s.obj.noun)
        if cls == "human" or (cls == "animal" and s.obj.det == "def"):
            rest = "a " + rest
    else:
        rest = f"{lex.prepositions[s.prep]['es']} {_es_np(lex, s.loc)}"
    clause = f"{subj} {verb} {rest}"
    time = lex.times[s.time]["es"] if s.time else ""
    if s.mood == "embedded":
        text = f"creo que {clause} {time}"
    elif s.mood == "question":
        text = clause
    else:
        text = f"{time} {clause}"
    text = re.sub(r"\ba el\b", "al", text)
    text = re.sub(r"\bde el\b", "del", text)
    return _finish(text, s.mood == "question", "es")


# ---------------------------------------------------------------------------------------------
# Chinese (characters + pinyin)

Token = Tuple[str, str]  # (characters, pinyin syllables separated by spaces)


def _zh_np(lex: Lexicon, np_: NP, bare: bool = False) -> List[Token]:
    """``bare``: a negated indefinite object drops 一 + classifier (狗不吃苹果)."""
    entry = lex.nouns[np_.noun]
    hz, py, cl = entry["zh"]
    out: List[Token] = []
    if np_.det == "def" and np_.plural:
        out.append(("那些", "na4 xie1"))
    elif np_.det == "indef" and not bare:
        out += [("一", "yi1"), tuple(lex.classifiers[cl])]
    elif np_.det == "num":
        out += [tuple(lex.numbers[np_.num]["zh"]), tuple(lex.classifiers[cl])]
    if np_.adj:
        adj = lex.adjectives[np_.adj]
        out.append(tuple(adj["zh_animate"] if "zh_animate" in adj and lex.animate(np_.noun) else adj["zh"]))
    out.append((hz, py))
    return out


def _zh_sandhi(syllables: List[str]) -> List[str]:
    """一 and 不 change tone before a 4th tone (yi2/bu2), and 一 is yi4 before the other tones."""
    out = list(syllables)
    for i, syl in enumerate(syllables[:-1]):
        nxt_tone = syllables[i + 1][-1]
        if syl == "yi1":
            out[i] = "yi2" if nxt_tone == "4" else "yi4"
        elif syl == "bu4" and nxt_tone == "4":
            out[i] = "bu2"
    return out


def render_zh(lex: Lexicon, s: Sentence) -> Tuple[str, str]:
    """Chinese: S [time] [neg] [在 place postposition] V [O]; returns (characters, pinyin)."""
    toks: List[Token] = _zh_np(lex, s.subj)
    if s.time:
        toks.append(tuple(lex.times[s.time]["zh"]))
    verb = lex.verbs[s.verb]
    if s.neg:
        toks.append(("没", "mei2") if verb["zh_neg"] == "没" else ("不", "bu4"))
    if s.loc is not None:
        # 在 + place + postposition precedes the verb; for "be", 在 is the verb itself.
        toks += [("在", "zai4")] + _zh_np(lex, s.loc) + [tuple(lex.prepositions[s.prep]["zh"])]
        if s.verb != "be":
            toks.append(tuple(verb["zh"]))
    else:
        toks.append(tuple(verb["zh"]))
        toks += _zh_np(lex, s.obj, bare=s.neg and s.obj.det == "indef")
    if s.mood == "embedded":
        toks = [("我觉得", "wo3 jue2 de5")] + toks
    if s.mood == "question":
        toks.append(("吗", "ma5"))
    text = "".join(t[0] for t in toks) + ("？" if s.mood == "question" else "。")
    pinyin = " ".join(_zh_sandhi(" ".join(t[1] for t in toks).split()))
    return text, pinyin + (" ?" if s.mood == "question" else " .")


def render(lex: Lexicon, s: Sentence, lang: str) -> str:
    """The sentence's text in ``lang`` (one of :data:`LANGS`)."""
    if lang == "zh":
        return render_zh(lex, s)[0]
    return {"en": render_en, "de": render_de, "fr": render_fr, "es": render_es}[lang](lex, s)


def speech_text(lex: Lexicon, s: Sentence, lang: str) -> str:
    """What the synthesiser reads: the text, or tone-numbered pinyin for Chinese."""
    return render_zh(lex, s)[1] if lang == "zh" else render(lex, s, lang)


# ---------------------------------------------------------------------------------------------
# Sampling


class SentenceSampler:
    """Draws random well-formed meanings; the same seed gives the same sequence."""

    def __init__(self, lex: Lexicon, seed: int) -> None:
        self.lex = lex
        self.rng = random.Random(seed)
        self.places = sorted(n for n, e in lex.nouns.items() if e["cls"] == "place")

    def _noun(self, classes: List[str], exclude: Tuple[str, ...] = ()) -> str:
        food = "food" in classes
        names = sorted(n for n, e in self.lex.nouns.items()
                       if n not in exclude and (e["cls"] in classes or (food and e.get("food"))))
        return self.rng.choice(names)

    def _np(self, noun: str, allow_num: bool = True, p_adj: float = 0.4) -> NP:
        rng = self.rng
        r = rng.random()
        adjs = sorted(a for a, e in self.lex.adjectives.items() if self.lex.cls(noun) in e["applies"])
        adj = rng.choice(adjs) if rng.random() < p_adj else None
        if allow_num and r < 0.2:
            return NP(noun, "num", True, adj, rng.choice(sorted(self.lex.numbers)))
        if r < 0.5:
            return NP(noun, "indef", False, adj)
        return NP(noun, "def", rng.random() < 0.3, adj)

    def sample(self) -> Sentence:
        """One random sentence: transitive (60%), intransitive with a place (25%), ``be`` + place."""
        rng, lex = self.rng, self.lex
        r = rng.random()
        verbs = sorted(lex.verbs)
        if r < 0.6:
            verb = rng.choice([v for v in verbs if "obj" in lex.verbs[v]])
        elif r < 0.85:
            verb = rng.choice([v for v in verbs if "obj" not in lex.verbs[v] and v != "be"])
        else:
            verb = "be"
        entry = lex.verbs[verb]
        subj_noun = self._noun(entry["subj"])
        subj = self._np(subj_noun)
        obj = prep = loc = None
        if "obj" in entry:
            obj = self._np(self._noun(entry["obj"], exclude=(subj_noun,)))
        else:
            loc_noun = rng.choice([p for p in self.places if p != subj_noun])
            prep = rng.choice(lex.nouns[loc_noun]["loc"])
            loc = self._np(loc_noun, allow_num=False, p_adj=0.3)
        mood = rng.choices(["decl", "question", "embedded"], [0.6, 0.2, 0.2])[0]
        time = rng.choice(sorted(lex.times)) if mood != "question" and rng.random() < 0.3 else None
        # Negating a counted object ("does not eat two apples") is odd in every language.
        neg = mood != "question" and rng.random() < 0.25 and not (obj is not None and obj.det == "num")
        return Sentence(subj, verb, obj, prep, loc, time, neg, mood)
