"""The validator against a table of fixture dirs, each with the verdict of Kaldi's validator.

Every row is a small data dir (a base dir with some files replaced or removed), the validator
flags, and the exit verdict Kaldi's ``egs/wsj/s5/utils/validate_data_dir.sh`` gives it (recorded
by running Kaldi's script on the same fixture). Ours must agree on every row, except the one
deliberate difference: a malformed utt2spk line is rejected here, where Kaldi exits 0.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Dict, Optional

import pytest

from partlib.common import DataError
from partlib.data.validate import validate_data_dir

REPO = Path(__file__).resolve().parents[1]

BASE: Dict[str, bytes] = {
    "utt2spk": b"spkA-u1 spkA\nspkA-u2 spkA\nspkB-u1 spkB\n",
    "spk2utt": b"spkA spkA-u1 spkA-u2\nspkB spkB-u1\n",
    "text": b"spkA-u1 hello world\nspkA-u2 good morning\nspkB-u1 thank you\n",
    "wav.scp": b"spkA-u1 /corpus/a1.wav\nspkA-u2 sox /corpus/a2.flac -t wav - |\n"
               b"spkB-u1 /corpus/b1.wav\n",
    "feats.scp": b"spkA-u1 feats.ark:10\nspkA-u2 feats.ark:200\nspkB-u1 feats.ark:390\n",
}
# Segmented variant: wav.scp keyed by recording.
SEG = {
    "segments": b"spkA-u1 recA 0.0 1.5\nspkA-u2 recA 1.5 3.25\nspkB-u1 recB 0 2\n",
    "wav.scp": b"recA /corpus/recA.wav\nrecB /corpus/recB.wav\n",
}
TEXT_ONLY = {"wav.scp": None, "feats.scp": None}

# name: (file overrides (None removes the file), flags, Kaldi accepts?)
CASES: Dict[str, tuple] = {
    "valid": ({}, [], True),
    "valid_text_only": (TEXT_ONLY, ["--no-wav", "--no-feats"], True),
    "text_only_without_flags": (TEXT_ONLY, [], False),
    "missing_wav": ({"wav.scp": None}, [], False),
    "missing_wav_no_wav": ({"wav.scp": None}, ["--no-wav"], True),
    "missing_feats": ({"feats.scp": None}, [], False),
    "missing_feats_no_feats": ({"feats.scp": None}, ["--no-feats"], True),
    "missing_text": ({"text": None}, [], False),
    "missing_text_no_text": ({"text": None}, ["--no-text"], True),
    "no_text_skips_text_checks": (
        {"text": b"spkA-u1 <s> hi\nspkB-u1 x\n"}, ["--no-text"], True),
    "missing_spk2utt": ({"spk2utt": None}, [], False),
    "missing_utt2spk": ({"utt2spk": None}, [], False),
    "empty_utt2spk": ({"utt2spk": b""}, [], False),
    "utt2spk_unsorted": (
        {"utt2spk": b"spkA-u2 spkA\nspkA-u1 spkA\nspkB-u1 spkB\n"}, [], False),
    "utt2spk_duplicate": (
        {"utt2spk": b"spkA-u1 spkA\nspkA-u1 spkA\nspkA-u2 spkA\nspkB-u1 spkB\n"}, [], False),
    "utt2spk_no_final_newline": (
        {"utt2spk": b"spkA-u1 spkA\nspkA-u2 spkA\nspkB-u1 spkB"}, [], False),
    "utt2spk_not_speaker_sorted": (
        {"utt2spk": b"a1 s2\nb1 s1\n", "spk2utt": b"s1 b1\ns2 a1\n", "text": b"a1 x\nb1 y\n",
         "wav.scp": b"a1 a.wav\nb1 b.wav\n", "feats.scp": b"a1 f:1\nb1 f:2\n"}, [], False),
    "utt2spk_not_speaker_sorted_no_spk_sort": (
        {"utt2spk": b"a1 s2\nb1 s1\n", "spk2utt": b"s1 b1\ns2 a1\n", "text": b"a1 x\nb1 y\n",
         "wav.scp": b"a1 a.wav\nb1 b.wav\n", "feats.scp": b"a1 f:1\nb1 f:2\n"},
        ["--no-spk-sort"], False),
    "utt2spk_speaker_field_spacing": (  # sort -k2 compares the blanks before the speaker too
        {"utt2spk": b"spkA-u1 spkA\nspkA-u2  spkA\nspkB-u1 spkB\n"}, [], False),
    "utt2spk_speaker_field_spacing_no_spk_sort": (
        {"utt2spk": b"spkA-u1 spkA\nspkA-u2  spkA\nspkB-u1 spkB\n"}, ["--no-spk-sort"], True),
    "utt2spk_tab_separated": (
        {"utt2spk": b"spkA-u1\tspkA\nspkA-u2\tspkA\nspkB-u1\tspkB\n"}, [], True),
    "utt2spk_three_fields": (  # Kaldi prints an error but exits 0; ours rejects
        {"utt2spk": b"spkA-u1 spkA x\nspkA-u2 spkA\nspkB-u1 spkB\n"}, [], True),
    "spk2utt_missing_utt": ({"spk2utt": b"spkA spkA-u1\nspkB spkB-u1\n"}, [], False),
    "spk2utt_wrong_order": ({"spk2utt": b"spkA spkA-u2 spkA-u1\nspkB spkB-u1\n"}, [], False),
    "spk2utt_trailing_empty_speaker": (
        {"spk2utt": b"spkA spkA-u1 spkA-u2\nspkB spkB-u1\nspkC\n"}, [], True),
    "spk2utt_empty_speaker_in_middle": (
        {"spk2utt": b"spkA spkA-u1 spkA-u2\nspkAB\nspkB spkB-u1\n"}, [], False),
    "spk2utt_unsorted": ({"spk2utt": b"spkB spkB-u1\nspkA spkA-u1 spkA-u2\n"}, [], False),
    "one_speaker": (
        {"utt2spk": b"spkA-u1 spkA\nspkA-u2 spkA\n", "spk2utt": b"spkA spkA-u1 spkA-u2\n",
         "text": b"spkA-u1 a\nspkA-u2 b\n", "wav.scp": b"spkA-u1 a.wav\nspkA-u2 b.wav\n",
         "feats.scp": None}, ["--no-feats"], True),
    "non_ascii_ids_c_order": (
        {"utt2spk": b"s-z s\ns-\xc3\xa9 s\n", "spk2utt": b"s s-z s-\xc3\xa9\n",
         "text": b"s-z a\ns-\xc3\xa9 b\n", "wav.scp": None, "feats.scp": None},
        ["--no-wav", "--no-feats"], True),
    "non_ascii_ids_locale_order": (
        {"utt2spk": b"s-\xc3\xa9 s\ns-z s\n", "spk2utt": b"s s-\xc3\xa9 s-z\n",
         "text": b"s-\xc3\xa9 b\ns-z a\n", "wav.scp": None, "feats.scp": None},
        ["--no-wav", "--no-feats"], False),
    "text_bos": ({"text": BASE["text"].replace(b"hello", b"<s> hello")}, [], False),
    "text_eos": ({"text": BASE["text"].replace(b"world", b"world </s>")}, [], False),
    "text_disambig": ({"text": BASE["text"].replace(b"good", b"#0 good")}, [], False),
    "text_bos_inside_word": ({"text": BASE["text"].replace(b"hello", b"a<s>b")}, [], True),
    "text_disambig_prefix": ({"text": BASE["text"].replace(b"good", b"#01")}, [], True),
    "text_cr": ({"text": BASE["text"].replace(b"world\n", b"world\r\n")}, [], False),
    "text_cr_non_print": (
        {"text": BASE["text"].replace(b"world\n", b"world\r\n")}, ["--non-print"], False),
    "text_nbsp": ({"text": BASE["text"].replace(b"hello ", b"hello\xc2\xa0")}, [], False),
    "text_ideographic_space": (
        {"text": BASE["text"].replace(b"hello ", b"hello\xe3\x80\x80")}, [], False),
    "text_vertical_tab": ({"text": BASE["text"].replace(b"hello ", b"hello\x0b")}, [], False),
    "text_control_char": ({"text": BASE["text"].replace(b"hello", b"he\x01llo")}, [], False),
    "text_control_char_non_print": (
        {"text": BASE["text"].replace(b"hello", b"he\x01llo")}, ["--non-print"], True),
    "text_delete_char": ({"text": BASE["text"].replace(b"hello", b"he\x7fllo")}, [], False),
    "text_zero_width_space": (
        {"text": BASE["text"].replace(b"hello", b"he\xe2\x80\x8bllo")}, [], True),
    "text_unit_separator": ({"text": BASE["text"].replace(b"hello", b"he\x1fllo")}, [], False),
    "text_latin1": ({"text": BASE["text"].replace(b"hello", b"h\xe9llo")}, [], True),
    "text_cjk": ({"text": BASE["text"].replace(b"hello world", "你好世界".encode())}, [], True),
    "text_empty_transcript": ({"text": BASE["text"].replace(b" hello world", b"")}, [], True),
    "text_no_final_newline": ({"text": BASE["text"].rstrip(b"\n")}, [], False),
    "text_missing_utt": ({"text": b"spkA-u1 hello world\nspkB-u1 thank you\n"}, [], False),
    "text_duplicate": ({"text": BASE["text"] + b"spkB-u1 again\n"}, [], False),
    "text_empty_file": ({"text": b""}, [], False),
    "wav_unsorted": (
        {"wav.scp": b"spkA-u2 a2.wav\nspkA-u1 a1.wav\nspkB-u1 b1.wav\n"}, [], False),
    "wav_extra_utt": ({"wav.scp": BASE["wav.scp"] + b"spkC-u1 c.wav\n"}, [], False),
    "wav_tilde_path": ({"wav.scp": BASE["wav.scp"].replace(b"/corpus/a1", b"~/a1")}, [], False),
    "wav_tilde_in_command": (
        {"wav.scp": BASE["wav.scp"].replace(b"sox /corpus", b"sox ~/corpus")}, [], True),
    "segments_valid": (SEG, [], True),
    "segments_end_equals_start": (
        {**SEG, "segments": SEG["segments"].replace(b"0 2\n", b"2 2\n")}, [], False),
    "segments_end_before_start": (
        {**SEG, "segments": SEG["segments"].replace(b"0 2\n", b"3 2\n")}, [], False),
    "segments_numeric_compare": (  # 10 > 9 numerically although "10" < "9" as strings
        {**SEG, "segments": SEG["segments"].replace(b"0 2\n", b"9 10\n")}, [], True),
    "segments_three_fields": (
        {**SEG, "segments": SEG["segments"].replace(b" 0 2\n", b" 2\n")}, [], False),
    "segments_orphan_recording": (
        {**SEG, "wav.scp": SEG["wav.scp"] + b"recC /corpus/recC.wav\n"}, [], False),
    "segments_missing_recording": (
        {**SEG, "wav.scp": b"recA /corpus/recA.wav\n"}, [], False),
    "segments_without_wav": ({**SEG, "wav.scp": None}, ["--no-wav"], False),
    "segments_utt_mismatch": (
        {**SEG, "segments": SEG["segments"] + b"spkB-u2 recB 2 3\n"}, [], False),
    "segments_utt_mismatch_without_text": (  # Kaldi compares them only when text exists
        {**SEG, "segments": SEG["segments"] + b"spkB-u2 recB 2 3\n", "text": None},
        ["--no-text"], True),
    "segments_unsorted": (
        {**SEG, "segments": b"spkA-u2 recA 1.5 3.25\nspkA-u1 recA 0.0 1.5\nspkB-u1 recB 0 2\n"},
        [], False),
    "reco2dur_segments": ({**SEG, "reco2dur": b"recA 3.5\nrecB 2.0\n"}, [], True),
    "reco2dur_keyed_by_utt_with_segments": (
        {**SEG, "reco2dur": b"spkA-u1 1\nspkA-u2 2\nspkB-u1 3\n"}, [], False),
    "reco2dur_zero": ({**SEG, "reco2dur": b"recA 0\nrecB 2.0\n"}, [], False),
    "reco2dur_no_segments": ({"reco2dur": b"spkA-u1 1\nspkA-u2 2\nspkB-u1 3\n"}, [], True),
    "feats_missing_utt": ({"feats.scp": b"spkA-u1 f:1\nspkB-u1 f:2\n"}, [], False),
    "feats_unsorted": ({"feats.scp": b"spkA-u2 f:1\nspkA-u1 f:1\nspkB-u1 f:2\n"}, [], False),
    "cmvn_speakers": ({"cmvn.scp": b"spkA c:1\nspkB c:2\n"}, [], True),
    "cmvn_missing_speaker": ({"cmvn.scp": b"spkA c:1\n"}, [], False),
    "utt2dur_valid": ({"utt2dur": b"spkA-u1 1.5\nspkA-u2 1.75\nspkB-u1 2\n"}, [], True),
    "utt2dur_zero": ({"utt2dur": b"spkA-u1 1.5\nspkA-u2 0\nspkB-u1 2\n"}, [], False),
    "utt2dur_negative": ({"utt2dur": b"spkA-u1 1.5\nspkA-u2 -1\nspkB-u1 2\n"}, [], False),
    "utt2dur_missing_utt": ({"utt2dur": b"spkA-u1 1.5\nspkB-u1 2\n"}, [], False),
    "utt2dur_extra_field": ({"utt2dur": b"spkA-u1 1.5\nspkA-u2 1 2\nspkB-u1 2\n"}, [], False),
    "utt2num_frames_valid": ({"utt2num_frames": b"spkA-u1 150\nspkA-u2 1e2\nspkB-u1 7\n"},
                             [], True),
    "utt2num_frames_fraction": ({"utt2num_frames": b"spkA-u1 150\nspkA-u2 10.5\nspkB-u1 7\n"},
                                [], False),
    "utt2num_frames_zero": ({"utt2num_frames": b"spkA-u1 150\nspkA-u2 0\nspkB-u1 7\n"},
                            [], False),
    "utt2num_frames_word": ({"utt2num_frames": b"spkA-u1 150\nspkA-u2 ten\nspkB-u1 7\n"},
                            [], False),
    "spk2gender_valid": ({"spk2gender": b"spkA f\nspkB m\n"}, [], True),
    "spk2gender_bad_value": ({"spk2gender": b"spkA f\nspkB male\n"}, [], False),
    "spk2gender_missing_speaker": ({"spk2gender": b"spkA f\n"}, [], False),
    "utt2lang_valid": ({"utt2lang": b"spkA-u1 en\nspkA-u2 de\nspkB-u1 zh\n"}, [], True),
    "utt2lang_unknown_code_not_checked": (
        {"utt2lang": b"spkA-u1 en\nspkA-u2 xx-unknown\nspkB-u1 zh\n"}, [], True),
    "utt2lang_missing_utt": ({"utt2lang": b"spkA-u1 en\nspkB-u1 zh\n"}, [], False),
    "utt2lang_unsorted": ({"utt2lang": b"spkA-u2 en\nspkA-u1 de\nspkB-u1 zh\n"}, [], False),
    "utt2uniq_missing_utt": ({"utt2uniq": b"spkA-u1 u\nspkB-u1 v\n"}, [], False),
}
# Rows where we deliberately differ from Kaldi.
OURS_DIFFER = {"utt2spk_three_fields"}


def make_dir(root: Path, name: str) -> Path:
    """Create the fixture dir of row ``name`` under ``root``."""
    files, _, _ = CASES[name]
    d = root / name
    d.mkdir()
    for fname, content in {**BASE, **files}.items():
        if content is not None:
            (d / fname).write_bytes(content)
    return d


def expected_ok(name: str) -> bool:
    return CASES[name][2] and name not in OURS_DIFFER


def _flags(flags) -> Dict[str, bool]:
    return {f.lstrip("-").replace("-", "_"): True for f in flags}


@pytest.mark.parametrize("name", sorted(CASES))
def test_verdict_matches_kaldi(tmp_path: Path, name: str) -> None:
    d = make_dir(tmp_path, name)
    try:
        validate_data_dir(d, **_flags(CASES[name][1]))
        ok, err = True, None
    except DataError as e:
        ok, err = False, e
    assert ok == expected_ok(name), f"{name}: {err}"
    if err is not None:
        assert err.path is not None and Path(err.path).is_relative_to(d)


@pytest.mark.parametrize("name,file,line,utt", [
    ("utt2spk_unsorted", "utt2spk", 2, "spkA-u1"),
    ("utt2spk_duplicate", "utt2spk", 2, "spkA-u1"),
    ("utt2spk_three_fields", "utt2spk", 1, "spkA-u1"),
    ("text_bos", "text", 1, "spkA-u1"),
    ("text_cr", "text", 1, "spkA-u1"),
    ("text_control_char", "text", 1, "spkA-u1"),
    ("text_missing_utt", "text", 2, "spkB-u1"),
    ("segments_end_equals_start", "segments", 3, "spkB-u1"),
    ("utt2dur_zero", "utt2dur", 2, "spkA-u2"),
    ("utt2num_frames_fraction", "utt2num_frames", 2, "spkA-u2"),
    ("wav_tilde_path", "wav.scp", 1, "spkA-u1"),
    ("spk2gender_bad_value", "spk2gender", 2, "spkB"),
])
def test_error_names_file_line_and_key(tmp_path: Path, name: str, file: str, line: int,
                                       utt: str) -> None:
    d = make_dir(tmp_path, name)
    with pytest.raises(DataError) as ei:
        validate_data_dir(d, **_flags(CASES[name][1]))
    e = ei.value
    assert (Path(e.path).name, e.line, e.utt) == (file, line, utt)
    assert f"{file}:{line}" in str(e) and utt in str(e)


def run_script(*args: str, cwd: Optional[Path] = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHON": sys.executable}
    return subprocess.run([str(REPO / "utils" / "validate_data_dir.sh"), *args], cwd=cwd,
                          env=env, capture_output=True, text=True)


@pytest.mark.parametrize("name", ["valid", "valid_text_only", "text_bos", "utt2spk_three_fields",
                                  "missing_feats_no_feats", "text_control_char_non_print"])
def test_shell_wrapper_exit_status(tmp_path: Path, name: str) -> None:
    d = make_dir(tmp_path, name)
    r = run_script(*CASES[name][1], str(d))
    assert (r.returncode == 0) == expected_ok(name), r.stdout + r.stderr
    if r.returncode == 0:
        assert "Successfully validated" in r.stdout
    else:
        assert "[ERROR]" in r.stderr and str(d) in r.stderr  # one line naming the data dir


def test_shell_wrapper_usage_errors(tmp_path: Path) -> None:
    assert run_script().returncode != 0
    assert run_script("--bogus", str(tmp_path)).returncode != 0
    assert run_script(str(tmp_path / "nope")).returncode != 0
