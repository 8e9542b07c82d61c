"""The Kaldi data-dir tools (``utils/*.sh`` call these through ``partlib.bin.datadir``): fix,
combine, split, copy and subset data dirs, as Kaldi's scripts of the same names do.
"""
from __future__ import annotations

import random
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

from partlib.common import DataError, PathLike, atomic_open, get_logger
from partlib.data.datadir import EXTRA_RECO_FILES, EXTRA_SPK_FILES, EXTRA_UTT_FILES, MANAGED_FILES, DataDir
from partlib.data.kv import iter_lines, read_rows, write_kv

log = get_logger(__name__)


def fix_data_dir(path: PathLike) -> None:
    """Repair a data dir in place, like Kaldi's ``fix_data_dir.sh``.

    Sorts every file, drops duplicate keys (keeping the first line) and malformed lines, keeps only
    utterances present in every per-utterance file (and whose recording is in wav.scp), prunes
    speaker and recording files to what is used, and regenerates spk2utt. Kaldi files not modelled
    by :class:`DataDir` (cmvn.scp, vad.scp, utt2uniq, reco2file_and_channel, ...) are filtered to
    the kept ids. The original files are copied to ``<path>/.backup/`` first.
    """
    path = Path(path)
    if not (path / "utt2spk").is_file():
        raise DataError("no such file", path / "utt2spk")
    backup = path / ".backup"
    extras = EXTRA_UTT_FILES + EXTRA_SPK_FILES + EXTRA_RECO_FILES
    for f in [path / n for n in MANAGED_FILES + extras] + sorted(path.glob("text.*")):
        if f.is_file():
            with atomic_open(backup / f.name, "wb") as out:
                out.write(f.read_bytes())
    dd = DataDir._read(path, validate=False, lenient=True)
    keep = set(dd.utt2spk)
    for mapping in (dd.text, dd.utt2lang, dd.utt2sent, dd.utt2dur, dd.utt2num_frames, dd.feats_scp,
                    dd.segments, *dd.translations.values()):
        if mapping is not None:
            keep &= mapping.keys()
    for f in (path / n for n in EXTRA_UTT_FILES):
        if f.is_file():
            keep &= {k for _, k, _ in read_rows(f, allow_empty=True, lenient=True)}
    if dd.wav_scp is not None:
        keep = {u for u in keep if dd.recording(u) in dd.wav_scp}
    if dd.reco2dur is not None:
        keep = {u for u in keep if dd.recording(u) in dd.reco2dur}
    if not keep:
        raise DataError("no utterances remain after keeping those present in every file", path)
    fixed = dd.subset(keep)
    log.info("%s: kept %d of %d utterances; originals in %s", path, len(fixed), len(dd), backup)
    fixed.write(path)
    keys = {"utt": set(fixed.utt2spk), "spk": set(fixed.utt2spk.values()),
            "reco": {fixed.recording(u) for u in fixed.utt2spk}}
    for kind, names in (("utt", EXTRA_UTT_FILES), ("spk", EXTRA_SPK_FILES),
                        ("reco", EXTRA_RECO_FILES)):
        for f in (path / n for n in names):
            if f.is_file():
                rows = read_rows(f, allow_empty=True, lenient=True)
                write_kv(f, {k: v for _, k, v in rows if k in keys[kind]})


def combine_data_dirs(out: PathLike, dirs: Sequence[PathLike]) -> None:
    """Combine data dirs into ``out`` (like Kaldi's ``combine_data.sh``).

    A file present in only some sources is left out (with a warning), except segments: sources
    without segments get whole-recording segments from their utt2dur or reco2dur. An utterance
    (or recording) id found in two sources with different content is an error.
    """
    if not dirs:
        raise DataError("no source directories to combine", out)
    parts = [DataDir.load(d, validate=False) for d in dirs]
    if any(p.segments is not None for p in parts):
        parts = [_with_segments(p) for p in parts]
    fields = ("wav_scp", "segments", "text", "utt2lang", "utt2sent", "utt2dur", "utt2num_frames",
              "feats_scp", "reco2dur", "spk2gender")
    merged: Dict[str, Optional[Dict[str, object]]] = {}
    for field in ("utt2spk",) + fields:
        maps = [getattr(p, field) for p in parts]
        if any(m is None for m in maps):
            if any(m is not None for m in maps):
                log.warning("%s: not combined (missing in some of the sources)", field)
            merged[field] = None
            continue
        merged[field] = _merge(maps, dirs, field)
    langs_all = set.intersection(*(set(p.translations) for p in parts))
    translations = {lang: _merge([p.translations[lang] for p in parts], dirs, f"text.{lang}")
                    for lang in langs_all}
    meta = parts[0].meta if all(p.meta == parts[0].meta for p in parts) else {}
    utt2spk = merged.pop("utt2spk")
    DataDir(utt2spk, translations=translations, meta=meta, **merged).write(out)


def _with_segments(dd: DataDir) -> DataDir:
    """Give a dir without segments whole-recording segments (recording id = utterance id)."""
    if dd.segments is not None:
        return dd
    durs = dd.reco2dur or dd.utt2dur
    if durs is None or dd.wav_scp is None:
        raise DataError("cannot combine a dir without segments with dirs that have them: "
                        "it needs wav.scp and utt2dur or reco2dur", dd.path)
    dd.segments = {u: (u, 0.0, durs[u]) for u in dd.utt2spk}
    dd.reco2dur = dict(durs)
    return dd


def _merge(maps: Sequence[Mapping[str, object]], dirs: Sequence[PathLike], name: str) -> Dict:
    out: Dict[str, object] = {}
    where: Dict[str, PathLike] = {}
    for m, d in zip(maps, dirs):
        for k, v in m.items():
            if k in out and out[k] != v:
                raise DataError(f"'{k}' is in {where[k]} and {d} with different {name} entries",
                                Path(d) / name, utt=k)
            out[k] = v
            where.setdefault(k, d)
    return out


def split_data_dir(path: PathLike, n: int, by_speaker: bool = True) -> List[Path]:
    """Split a data dir into ``n`` parts ``<path>/split<n>/<1..n>`` (``split<n>utt`` per utterance).

    By speaker (the default), each speaker's utterances stay in one part and the parts have
    about the same number of utterances; this needs at least ``n`` speakers. Per utterance,
    the parts are contiguous runs of utterances whose sizes differ by at most one.
    """
    path = Path(path)
    dd = DataDir.load(path, validate=False)
    if n < 1:
        raise DataError(f"number of parts must be >= 1, got {n}", path)
    if by_speaker:
        groups = list(dd.spk2utt.values())
        if n > len(groups):
            raise DataError(f"cannot split {len(groups)} speakers into {n} parts "
                            "(use per-utterance splitting)", path / "spk2utt")
    else:
        if n > len(dd):
            raise DataError(f"cannot split {len(dd)} utterances into {n} parts", path)
        groups = [[u] for u in dd.utts]
    out_root = path / (f"split{n}" if by_speaker else f"split{n}utt")
    parts = []
    for i, chunk in enumerate(_balanced_chunks(groups, n), start=1):
        part = out_root / str(i)
        dd.subset([u for g in chunk for u in g]).write(part)
        parts.append(part)
    return parts


def _balanced_chunks(groups: List[List[str]], n: int) -> List[List[List[str]]]:
    """Cut ``groups`` (in order) into ``n`` non-empty contiguous runs of about equal total size:
    run ``i`` ends at the group boundary closest to ``i/n`` of the total."""
    sizes = [len(g) for g in groups]
    total = sum(sizes)
    cum = [0]
    for s in sizes:
        cum.append(cum[-1] + s)
    cuts = [0]
    for i in range(1, n):
        target = total * i / n
        # nearest boundary, leaving at least one group for each remaining run
        lo, hi = cuts[-1] + 1, len(groups) - (n - i)
        best = min(range(lo, hi + 1), key=lambda b: (abs(cum[b] - target), b))
        cuts.append(best)
    cuts.append(len(groups))
    return [groups[a:b] for a, b in zip(cuts, cuts[1:])]


def copy_data_dir(src: PathLike, dst: PathLike, utt_prefix: str = "", spk_prefix: str = "",
                  utt_suffix: str = "") -> None:
    """Copy a data dir, optionally renaming utterances (``<utt_prefix><utt><utt_suffix>``) and
    speakers (``<spk_prefix><spk>``), like Kaldi's ``copy_data_dir.sh``. Recording ids change
    with the utterance ids only when there is no segments file."""
    dd = DataDir.load(src, validate=False)
    utt_map = {u: f"{utt_prefix}{u}{utt_suffix}" for u in dd.utt2spk}
    spk_map = {s: f"{spk_prefix}{s}" for s in set(dd.utt2spk.values())}
    dd.map_ids(utt_map, spk_map).write(dst)


def subset_data_dir(src: PathLike, dst: PathLike, *, first: Optional[int] = None,
                    last: Optional[int] = None, utt_list: Optional[PathLike] = None,
                    spk_list: Optional[PathLike] = None, random_n: Optional[int] = None,
                    seed: int = 0) -> None:
    """Write a subset of ``src`` to ``dst``: the first/last N utterances (C-sorted order), the
    utterances or speakers listed in a file (first field of each line), or N utterances drawn at
    random with ``seed``. Exactly one selector must be given."""
    chosen = [x for x in (first, last, utt_list, spk_list, random_n) if x is not None]
    if len(chosen) != 1:
        raise DataError("give exactly one of first, last, utt_list, spk_list, random_n", src)
    dd = DataDir.load(src, validate=False)
    utts = dd.utts
    for n in (first, last, random_n):
        if n is not None and (n < 1 or n > len(utts)):
            raise DataError(f"cannot select {n} of {len(utts)} utterances", src)
    if first is not None:
        keep = utts[:first]
    elif last is not None:
        keep = utts[-last:]
    elif random_n is not None:
        keep = random.Random(seed).sample(utts, random_n)
    else:
        ids = {line.split()[0] for _, line in iter_lines(utt_list or spk_list) if line.strip()}
        keep = ([u for u in utts if u in ids] if utt_list is not None
                else [u for u, s in dd.utt2spk.items() if s in ids])
        if not keep:
            raise DataError("none of the listed ids is in the source dir",
                            utt_list or spk_list)
    dd.subset(keep).write(dst)


def concat_data_dir(src: PathLike, audio_dir: PathLike, dst: PathLike, sizes: Tuple[int, int] = (2, 3),
                    pause_s: Tuple[float, float] = (0.1, 0.4), fraction: float = 1.0,
                    max_dur: Optional[float] = None, seed: int = 0) -> int:
    """A data dir of longer utterances made by joining utterances of one speaker and language.

    A ``fraction`` of ``src``'s utterances (drawn with ``seed``) is shuffled per speaker and cut
    into groups of ``sizes[0]..sizes[1]`` utterances (kept within ``max_dur`` seconds, at least two
    per group); each group becomes one utterance: the audio joined with pauses drawn from
    ``pause_s`` (FLAC, 16 kHz, in ``audio_dir``), the texts joined (``text`` and every
    ``text.<lang>`` all members have). Training on them teaches a model outputs of several
    sentences, which segments of a long recording hold. Returns the number of utterances written.
    """
    import numpy as np
    import soundfile as sf

    from partlib.data import audio, langs

    lo, hi = sizes
    if not 2 <= lo <= hi:
        raise DataError(f"group sizes must be 2 <= min <= max, got {lo}:{hi}", src)
    if not 0 < fraction <= 1 or not 0 <= pause_s[0] <= pause_s[1]:
        raise DataError(f"fraction must be in (0, 1] and pauses 0 <= low <= high, got {fraction}, {pause_s}", src)
    dd = DataDir.load(src)
    if dd.text is None or dd.utt2lang is None or dd.wav_scp is None:
        raise DataError("joining utterances needs wav.scp, text and utt2lang", src)
    rng = np.random.default_rng(seed)
    chosen = set(rng.choice(dd.utts, size=max(1, int(round(fraction * len(dd.utts)))), replace=False).tolist())
    by_spk: Dict[Tuple[str, str], List[str]] = {}
    for u in dd.utts:
        if u in chosen:
            by_spk.setdefault((dd.utt2spk[u], dd.utt2lang[u]), []).append(u)
    reader = audio.AudioReader(dd)
    out_audio = Path(audio_dir)
    out_audio.mkdir(parents=True, exist_ok=True)
    tables: Dict[str, Dict[str, str]] = {"utt2spk": {}, "wav.scp": {}, "text": {}, "utt2lang": {}}
    translations: Dict[str, Dict[str, str]] = {}
    durations: Dict[str, float] = {}
    for (spk, lang), utts in sorted(by_spk.items()):
        utts = [utts[i] for i in rng.permutation(len(utts))]
        k = 0
        while len(utts) >= 2:
            n = int(rng.integers(lo, hi + 1))
            group, utts = utts[:n], utts[n:]
            clips = [reader[u] for u in group]
            pauses = rng.uniform(*pause_s, size=len(group))
            while max_dur is not None and len(group) > 2 and (sum(map(len, clips)) / audio.TARGET_SR
                                                              + pauses[:len(group)].sum()) > max_dur:
                utts = [group[-1]] + utts  # back to the pool
                group, clips = group[:-1], clips[:-1]
            if max_dur is not None and sum(map(len, clips)) / audio.TARGET_SR + pauses[:2].sum() > max_dur:
                utts = group[1:] + utts  # the first is too long to be joined to any other
                continue
            samples, _ = audio.concatenate(clips, pauses[:len(group)])
            utt = f"{spk}-concat{k:04d}"
            k += 1
            path = out_audio / f"{utt}.flac"
            with atomic_open(path, "wb") as f:
                sf.write(f, samples, audio.TARGET_SR, format="FLAC", subtype="PCM_16")
            tables["utt2spk"][utt] = spk
            tables["wav.scp"][utt] = str(path.resolve())
            tables["text"][utt] = langs.join_texts([dd.text[u] for u in group], lang)
            tables["utt2lang"][utt] = lang
            durations[utt] = round(len(samples) / audio.TARGET_SR, 4)
            for tgt, table in dd.translations.items():
                if all(u in table for u in group):
                    translations.setdefault(tgt, {})[utt] = langs.join_texts([table[u] for u in group], tgt)
    if not durations:
        raise DataError("no speaker has two utterances to join", src)
    DataDir(tables["utt2spk"], wav_scp=tables["wav.scp"], text=tables["text"], utt2lang=tables["utt2lang"],
            translations=translations, utt2dur=durations).write(dst)
    log.info("%s: %d utterances joined from %d of %s", dst, len(durations), len(chosen), src)
    return len(durations)
