"""Transcribe or translate audio files with an exported model folder.

    python -m partlib.bin.transcribe --model exp/model_part_seed1 a.wav b.flac
    python -m partlib.bin.transcribe --model DIR --task s2tt --tgt-lang en --output-format jsonl \\
        --output out.jsonl --wav-scp data/test_de/wav.scp

One result per input, in input order, on stdout or written atomically to ``--output``:
``text`` (one line per input), ``jsonl`` (``file``, ``text``, ``language``, ``task``,
``tgt_lang``, ``segments`` with ``start``/``end``/``text``), or ``srt`` / ``vtt`` subtitles of one
input. Without ``--src-lang`` the model names the spoken language first (``lid``). A recording
longer than ``--max-segment`` (default: the model's longest training utterance) is cut at pauses
(voice activity) and decoded in segments, each with its start and end. ``--script-mask`` and
``--redecode`` are the output controls of ``partlib.infer.control``. An unreadable file stops the
run naming it; ``--skip-bad`` goes on, lists the skipped files and fails only if every file failed.
A task, source language or direction the model was not trained on (by its ``info.json``) is
refused before any audio is read, naming what it was trained on; ``--allow-untrained`` decodes it
anyway, with a warning.
"""
from __future__ import annotations

import argparse
import json
import sys
from typing import List, Optional, Sequence, Tuple

import numpy as np

from partlib.bin import cli, positive_float, positive_int
from partlib.common import ConfigError, DataError, atomic_write, get_logger
from partlib.data import audio
from partlib.infer.transcribe import Transcriber, check_request, text_tasks
from partlib.models import card

logger = get_logger("partlib.bin.transcribe")
FORMATS = ("text", "jsonl", "srt", "vtt")


def _timestamp(seconds: float, sep: str) -> str:
    ms = int(round(seconds * 1000))
    h, rest = divmod(ms, 3600000)
    m, rest = divmod(rest, 60000)
    s, ms = divmod(rest, 1000)
    return f"{h:02d}:{m:02d}:{s:02d}{sep}{ms:03d}"


def render(results: Sequence, fmt: str) -> str:
    """The results in an output format of :data:`FORMATS`."""
    if fmt == "text":
        return "".join(r.text + "\n" for r in results)
    if fmt == "jsonl":
        return "".join(json.dumps(r.to_dict(), ensure_ascii=False) + "\n" for r in results)
    if len(results) != 1:
        raise ConfigError(f"--output-format {fmt} writes the subtitles of one input, got {len(results)} inputs")
    sep = "," if fmt == "srt" else "."
    blocks = []
    for i, seg in enumerate([g for g in results[0].segments if g.text], 1):
        span = f"{_timestamp(seg.start, sep)} --> {_timestamp(seg.end, sep)}"
        blocks.append((f"{i}\n" if fmt == "srt" else "") + f"{span}\n{seg.text}\n")
    return ("WEBVTT\n\n" if fmt == "vtt" else "") + "\n".join(blocks)


def _inputs(args: argparse.Namespace) -> List[Tuple[str, Optional[str]]]:
    """``(name, wav.scp value or None for a plain file)`` of every input, in order."""
    if args.wav_scp:
        from partlib.data.kv import read_kv

        return [(utt, value) for utt, value in read_kv(args.wav_scp).items()]
    return [(f, None) for f in args.files]


@cli
def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="an exported model folder")
    p.add_argument("--task", default="asr", choices=text_tasks())
    p.add_argument("--src-lang", default=None, help="the spoken language (default: identified by the model)")
    p.add_argument("--tgt-lang", default=None, help="target language of s2tt")
    p.add_argument("--output-format", choices=FORMATS, default="text")
    p.add_argument("--output", default=None, help="write here (atomically) instead of stdout")
    p.add_argument("--beam", type=positive_int, default=1)
    p.add_argument("--batch-size", type=positive_int, default=8)
    p.add_argument("--max-new-tokens", type=positive_int, default=None)
    p.add_argument("--max-segment", type=positive_float, default=None,
                   help="seconds: longer recordings are cut at pauses (default: the longest training utterance)")
    p.add_argument("--script-mask", action="store_true", help="only tokens of the target language's script")
    p.add_argument("--redecode", action="store_true",
                   help="decode again with beam search when the output shows trouble (budget, rate, repetition)")
    p.add_argument("--device", default=None, help="cpu | cuda | cuda:N (default: cpu)")
    p.add_argument("--threads", type=positive_int, default=None, help="torch CPU threads")
    p.add_argument("--skip-bad", action="store_true", help="skip unreadable files (listed on stderr)")
    p.add_argument("--allow-untrained", action="store_true",
                   help="decode a task, source language or direction the model was not trained on (with a warning)")
    p.add_argument("--wav-scp", default=None, help="a Kaldi wav.scp of inputs (instead of FILES)")
    p.add_argument("files", nargs="*")
    args = p.parse_args(argv)
    if bool(args.files) == bool(args.wav_scp):
        p.error("give audio FILES or --wav-scp (one of the two)")
    inputs = _inputs(args)
    if args.output_format in ("srt", "vtt") and len(inputs) != 1:
        p.error(f"--output-format {args.output_format} writes the subtitles of one input, got {len(inputs)}")
    if not args.allow_untrained:  # refuse early, before audio and weights load (else the Transcriber warns)
        check_request(args.model, card.read_info(args.model), args.task, args.src_lang, args.tgt_lang)
    loaded: List[Tuple[str, np.ndarray]] = []
    skipped = []
    for name, value in inputs:
        try:
            loaded.append((name, audio.load_file(name) if value is None else audio.load_audio(value, key=name)))
        except DataError as e:
            if not args.skip_bad:
                raise
            skipped.append(name)
            logger.warning("skipped: %s", e)
    if skipped:
        logger.warning("%d of %d inputs skipped: %s", len(skipped), len(skipped) + len(loaded), " ".join(skipped))
    if not loaded:
        raise DataError("no input could be read", args.wav_scp or args.files[0])
    model = Transcriber(args.model, device=args.device, threads=args.threads, progress=True,
                        max_segment_s=args.max_segment, allow_untrained=args.allow_untrained)
    results = model.transcribe_loaded(loaded, task=args.task, src_lang=args.src_lang, tgt_lang=args.tgt_lang,
                                      num_beams=args.beam, batch_size=args.batch_size,
                                      max_new_tokens=args.max_new_tokens, script_mask=args.script_mask,
                                      redecode=args.redecode)
    text = render(results, args.output_format)
    if args.output:
        atomic_write(args.output, text)
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
