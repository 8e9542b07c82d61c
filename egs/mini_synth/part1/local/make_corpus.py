#!/usr/bin/env python3
"""Generate the mini_synth corpus: parallel sentences in five languages, speech, Kaldi data dirs.

Sentences come from the synchronous grammar in ``grammar.py``. Splits are made by construction:
every sentence has a key (subject noun, verb, object noun, preposition, place noun) and a key
belongs to one split only, so a dev/test sentence is a new combination of words that all occur in
training, and no dev/test text (in any language) occurs inside a training text. The final
overlap check re-verifies this on the written files.

Output (``--data-dir``):
  {train,dev,test}_<lang>/       speech: wav.scp text utt2spk spk2utt utt2lang utt2sent text.<lang>
  text_{train,dev,test}_<lang>/  text only (train adds ``--num-text-extra`` sentences)
  local/mini_synth/sentences.tsv and speakers.tsv   what was generated, for inspection
The English dirs carry en->X translations (text.de text.fr ...), the others X->en (text.en).
"""
from __future__ import annotations

import argparse
import itertools
import random
import subprocess
import sys
import tempfile
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Set, Tuple

import numpy as np
import soundfile as sf
import soxr

from grammar import LANGS, Lexicon, Sentence, SentenceSampler, render, speech_text
from partlib.common import DataError, atomic_open, atomic_write, get_logger
from partlib.data.kv import write_kv
from partlib.data.validate import validate_data_dir
from partlib.text.overlap import data_dir_texts, find_overlap

log = get_logger("mini_synth")

SAMPLE_RATE = 16000
SPLITS = ("train", "dev", "test")
# espeak-ng voices per language; Chinese is read from tone-numbered pinyin (the character
# dictionary of the plain cmn voice reads many characters as English spellings of pinyin).
VOICES: Dict[str, Tuple[str, ...]] = {
    "en": ("en-us", "en-gb", "en-gb-scotland", "en-029", "en-gb-x-rp", "en-us-nyc"),
    "de": ("de",),
    "fr": ("fr-fr", "fr-be", "fr-ch"),
    "es": ("es", "es-419"),
    "zh": ("cmn-latn-pinyin",),
}
VARIANTS = ("m1", "m2", "m3", "m4", "m5", "m6", "m7", "f1", "f2", "f3", "f4")
RATES = (150, 160, 170, 180, 190)  # words per minute
RATE_OFFSET = {"zh": 30}  # the pinyin voice is slow: keep Chinese utterances as short as the others
PITCHES = (30, 40, 50, 60, 70)  # 0..99, espeak default 50


@dataclass
class Record:
    """One parallel sentence: id, split (``train``, ``dev``, ``test`` or ``extra`` = text-only
    training), meaning, and its text and synthesiser input per language."""

    sid: str
    split: str
    sentence: Sentence
    texts: Dict[str, str] = field(default_factory=dict)
    speech: Dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Speaker:
    """A synthetic speaker: espeak voice + variant + rate + pitch."""

    spk: str
    lang: str
    voice: str
    variant: str
    rate: int
    pitch: int


def build_corpus(
    lex: Lexicon, seed: int, n_train: int, n_dev: int, n_test: int, n_extra: int,
    langs: Sequence[str] = LANGS, max_tries_per_sentence: int = 2000,
) -> List[Record]:
    """Draw the sentences of every split (deterministic by ``seed``); see the module docstring.

    Every rendering is unique in each language over the whole corpus (Chinese leaves number and
    definiteness unmarked, so two meanings may read alike there; one of them is dropped).
    """
    sampler = SentenceSampler(lex, seed)
    seen: Dict[str, Set[str]] = {lang: set() for lang in langs}
    train_keys: Set[tuple] = set()
    heldout_keys: Set[tuple] = set()
    train_lemmas: Set[str] = set()
    records: List[Record] = []

    def accept(split: str, s: Sentence) -> Optional[Dict[str, str]]:
        key = s.key()
        if split in ("dev", "test"):
            # One sentence per key: held-out keys are all distinct and unseen in training.
            if key in train_keys or key in heldout_keys or not s.lemmas() <= train_lemmas:
                return None
        elif key in heldout_keys:
            return None
        texts = {lang: render(lex, s, lang) for lang in langs}
        if any(texts[lang] in seen[lang] for lang in langs):
            return None
        return texts

    for split, n in (("train", n_train), ("dev", n_dev), ("test", n_test), ("extra", n_extra)):
        done = 0
        for _ in range(max_tries_per_sentence * max(n, 1)):
            if done == n:
                break
            s = sampler.sample()
            texts = accept(split, s)
            if texts is None:
                continue
            for lang in langs:
                seen[lang].add(texts[lang])
            (heldout_keys if split in ("dev", "test") else train_keys).add(s.key())
            if split == "train":
                train_lemmas |= s.lemmas()
            rec = Record(f"s{len(records):05d}", split, s, texts,
                         {lang: speech_text(lex, s, lang) for lang in langs})
            records.append(rec)
            done += 1
        if done < n:
            raise DataError(f"could only draw {done} of {n} new {split} sentences; the grammar is "
                            "too small for the requested sizes (lower --num-* options)")
    return records


def make_speakers(seed: int, langs: Sequence[str], counts: Dict[str, int]) -> Dict[str, Dict[str, List[Speaker]]]:
    """Distinct voice/variant/rate/pitch combinations per language; dev and test speakers are
    not training speakers. Returns ``split -> lang -> speakers``."""
    rng = random.Random(seed * 7919 + 1)
    out: Dict[str, Dict[str, List[Speaker]]] = {split: {} for split in SPLITS}
    for lang in langs:
        rates = [r + RATE_OFFSET.get(lang, 0) for r in RATES]
        combos = list(itertools.product(VOICES[lang], VARIANTS, rates, PITCHES))
        chosen = rng.sample(combos, sum(counts[s] for s in SPLITS))
        idx = 0
        for split in SPLITS:
            out[split][lang] = [Speaker(f"{lang}-spk{idx + i:02d}", lang, *chosen[idx + i])
                                for i in range(counts[split])]
            idx += counts[split]
    return out


def synthesize(job: Tuple[str, Speaker, str]) -> float:
    """Speak ``text`` with the speaker's voice into a 16 kHz mono 16-bit wav; return seconds."""
    text, spk, out_path = job
    with tempfile.TemporaryDirectory(prefix="espeak") as tmp:
        raw = Path(tmp) / "raw.wav"
        cmd = ["espeak-ng", "-v", f"{spk.voice}+{spk.variant}", "-s", str(spk.rate),
               "-p", str(spk.pitch), "-w", str(raw), "--", text]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0 or not raw.is_file():
            raise DataError(f"espeak-ng failed ({proc.returncode}): {proc.stderr.strip()}", out_path)
        audio, sr = sf.read(raw, dtype="float32", always_2d=True)
    audio = audio.mean(axis=1)
    if sr != SAMPLE_RATE:
        audio = soxr.resample(audio, sr, SAMPLE_RATE, quality="HQ")
    audio = np.clip(audio, -1.0, 1.0)
    with atomic_open(out_path, "wb", encoding=None) as f:
        sf.write(f, audio, SAMPLE_RATE, format="WAV", subtype="PCM_16")
    return len(audio) / SAMPLE_RATE


def _translations(lang: str, langs: Sequence[str]) -> List[str]:
    """CoVoST2-style directions: English carries en->X, every other language X->en."""
    if lang == "en":
        return [t for t in langs if t != "en"]
    return ["en"] if "en" in langs else []


def write_data_dir(path: Path, lang: str, langs: Sequence[str], utt2rec: Dict[str, Record],
                   utt2spk: Dict[str, str], wav_scp: Optional[Dict[str, str]] = None) -> None:
    """Write one Kaldi data dir (speech when ``wav_scp`` is given, else text-only)."""
    path.mkdir(parents=True, exist_ok=True)
    spk2utt: Dict[str, List[str]] = {}
    for utt in sorted(utt2spk, key=lambda u: u.encode()):
        spk2utt.setdefault(utt2spk[utt], []).append(utt)
    write_kv(path / "text", {u: r.texts[lang] for u, r in utt2rec.items()})
    write_kv(path / "utt2spk", utt2spk)
    write_kv(path / "spk2utt", spk2utt)
    write_kv(path / "utt2lang", {u: lang for u in utt2rec})
    write_kv(path / "utt2sent", {u: r.sid for u, r in utt2rec.items()})
    for tgt in _translations(lang, langs):
        write_kv(path / f"text.{tgt}", {u: r.texts[tgt] for u, r in utt2rec.items()})
    if wav_scp is not None:
        write_kv(path / "wav.scp", wav_scp)


def check_no_overlap(data_dir: Path, langs: Sequence[str]) -> int:
    """Count dev/test sentences (any language, text and translations) occurring in training
    text; raise DataError if there is any."""
    train, heldout = [], []
    for lang in langs:
        for prefix in ("", "text_"):
            for split in SPLITS:
                d = data_dir / f"{prefix}{split}_{lang}"
                if d.is_dir():  # speech dirs are absent with --no-speech
                    (train if split == "train" else heldout).extend(data_dir_texts(d).values())
    overlap = find_overlap(heldout, train)
    if overlap:
        raise DataError(f"{len(overlap)} dev/test sentences occur in training text, e.g. {overlap[:3]}",
                        data_dir)
    return len(overlap)


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", type=Path, default=Path("data"), help="where the Kaldi dirs go")
    p.add_argument("--db", type=Path, default=Path("downloads/mini_synth"), help="where the wavs go")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--langs", default=" ".join(LANGS), help="space-separated subset of en de fr es zh")
    p.add_argument("--num-train", type=int, default=300, help="training sentences (spoken in each language)")
    p.add_argument("--num-dev", type=int, default=40)
    p.add_argument("--num-test", type=int, default=40)
    p.add_argument("--num-text-extra", type=int, default=200,
                   help="extra training sentences that exist as text only (LLM pretraining, text tasks)")
    p.add_argument("--num-spk-train", type=int, default=24, help="speakers per language in train")
    p.add_argument("--num-spk-dev", type=int, default=2)
    p.add_argument("--num-spk-test", type=int, default=2)
    p.add_argument("--nj", type=int, default=2, help="parallel synthesis jobs")
    p.add_argument("--no-speech", action="store_true", help="write the text-only dirs only")
    args = p.parse_args(argv)

    langs = args.langs.split()
    for lang in langs:
        if lang not in LANGS:
            raise SystemExit(f"unknown language {lang!r}; choose from {' '.join(LANGS)}")
    lex = Lexicon()
    records = build_corpus(lex, args.seed, args.num_train, args.num_dev, args.num_test,
                           args.num_text_extra, langs)
    by_split = {split: [r for r in records if r.split == split] for split in ("train", "dev", "test", "extra")}
    log.info("sentences: %s", {k: len(v) for k, v in by_split.items()})
    local = args.data_dir / "local" / "mini_synth"
    atomic_write(local / "sentences.tsv", "".join(
        f"{r.sid}\t{r.split}\t{'|'.join(str(k) for k in r.sentence.key())}\t"
        + "\t".join(r.texts[lang] for lang in langs) + "\n" for r in records))

    # Text-only dirs; the training one also holds the text-only extra sentences.
    for split in SPLITS:
        recs = by_split[split] + (by_split["extra"] if split == "train" else [])
        for lang in langs:
            utt2rec = {f"{lang}-text-{r.sid}": r for r in recs}
            write_data_dir(args.data_dir / f"text_{split}_{lang}", lang, langs, utt2rec,
                           {u: u for u in utt2rec})  # no speakers: each utterance its own

    speech_dirs = []
    if not args.no_speech:
        counts = {"train": args.num_spk_train, "dev": args.num_spk_dev, "test": args.num_spk_test}
        speakers = make_speakers(args.seed, langs, counts)
        atomic_write(local / "speakers.tsv", "".join(
            f"{s.spk}\t{split}\t{s.voice}+{s.variant}\t{s.rate}\t{s.pitch}\n"
            for split in SPLITS for lang in langs for s in speakers[split][lang]))
        rng = random.Random(args.seed)
        db = args.db.resolve()
        jobs = []
        for split in SPLITS:
            for lang in langs:
                recs = list(by_split[split])
                rng.shuffle(recs)  # speakers get a random mix of sentences
                spks = speakers[split][lang]
                utt2rec, utt2spk, wav_scp = {}, {}, {}
                for i, r in enumerate(recs):
                    spk = spks[i % len(spks)]
                    utt = f"{spk.spk}-{r.sid}"
                    wav = db / lang / f"{utt}.wav"
                    utt2rec[utt], utt2spk[utt], wav_scp[utt] = r, spk.spk, str(wav)
                    jobs.append((r.speech[lang], spk, str(wav)))
                write_data_dir(args.data_dir / f"{split}_{lang}", lang, langs, utt2rec, utt2spk, wav_scp)
                speech_dirs.append(args.data_dir / f"{split}_{lang}")
        for lang in langs:
            (db / lang).mkdir(parents=True, exist_ok=True)
        with ProcessPoolExecutor(max_workers=max(1, args.nj)) as pool:
            durs = list(pool.map(synthesize, jobs, chunksize=16))
        log.info("synthesised %d utterances, %.1f min of speech (%.2f-%.2f s, mean %.2f s)",
                 len(durs), sum(durs) / 60, min(durs), max(durs), sum(durs) / len(durs))

    for d in speech_dirs:
        validate_data_dir(d, no_feats=True)
    for split in SPLITS:
        for lang in langs:
            validate_data_dir(args.data_dir / f"text_{split}_{lang}", no_wav=True, no_feats=True)
    check_no_overlap(args.data_dir, langs)
    log.info("train/dev/test text overlap: 0 sentences; data dirs validated")
    return 0


if __name__ == "__main__":
    sys.exit(main())
