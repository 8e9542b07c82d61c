"""Long-form decoding of a data dir: its utterances joined into long recordings, segmented by voice
activity, decoded and stitched, next to the same utterances decoded one by one.

    python -m partlib.bin.decode_longform --model-dir exp/part_seed1/s4_text/model \\
        --data-dir dump/raw/test_en --one-by-one exp/part_seed1/s4_text/decode_test_en_asr \\
        [--utts-per-recording 10] [--pause 0.1:0.4] [--max-segment S] [--seed 1] OUT_DIR ONE_BY_ONE_DIR

Groups of ``--utts-per-recording`` consecutive utterances (one language each) are joined with
pauses drawn from ``--pause`` seconds into recordings, transcribed (ASR) by
:class:`partlib.infer.transcribe.Transcriber` and written as an ASR decode dir ``OUT_DIR``
(``hyp``/``ref``/``utt2lang`` by recording, ``segments`` in Kaldi format, ``decode.json`` with the
segmentation statistics and the real-time factor). ``ONE_BY_ONE_DIR`` gets the hypotheses of the
``--one-by-one`` decode dir (the same utterances decoded alone) joined per recording, with the same
references, so that both are scored alike. A finished output (``hyp`` present) is not redone.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import List, Optional

from partlib.bin import cli, nonnegative_float, pair, positive_float, positive_int
from partlib.common import ConfigError, DataError, atomic_write, get_logger

logger = get_logger("partlib.bin.decode_longform")


@cli
def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model-dir", required=True)
    p.add_argument("--data-dir", required=True)
    p.add_argument("--one-by-one", required=True, help="a decode dir of the same data dir (task asr)")
    p.add_argument("--utts-per-recording", type=positive_int, default=10)
    p.add_argument("--pause", type=pair(nonnegative_float), default=(0.1, 0.4),
                   help="LOW:HIGH seconds between utterances")
    p.add_argument("--max-segment", type=positive_float, default=None,
                   help="default: the model's longest training utterance")
    p.add_argument("--seed", type=int, default=0, help="seed of the pauses")
    p.add_argument("--batch-size", type=positive_int, default=8)
    p.add_argument("--threads", type=positive_int, default=None)
    p.add_argument("out_dir")
    p.add_argument("one_by_one_dir")
    args = p.parse_args(argv)
    out, obo = Path(args.out_dir), Path(args.one_by_one_dir)
    if (out / "hyp").is_file() and (obo / "hyp").is_file():
        logger.info("%s/hyp exists: decode already done", out)
        return 0
    from partlib.data import langs
    from partlib.data.audio import TARGET_SR
    from partlib.data.datadir import DataDir
    from partlib.data.kv import read_kv, write_kv
    from partlib.infer import longform
    from partlib.infer.transcribe import Transcriber
    from partlib.scoring.decode_dir import decode_task

    if decode_task(args.one_by_one) != "asr" or not (Path(args.one_by_one) / "hyp").is_file():
        raise DataError("not a finished asr decode dir", args.one_by_one)
    alone = read_kv(Path(args.one_by_one) / "hyp", allow_empty=True)
    data = DataDir.load(args.data_dir)
    if data.text is None:
        raise DataError("no text (references) in this data dir", args.data_dir)
    text = data.text
    recordings = longform.join_utterances(data, args.utts_per_recording, args.pause, args.seed)
    if not recordings:
        raise ConfigError("the data dir has no utterances")
    missing = [u for r in recordings for u in r.utts if u not in alone]
    if missing:
        raise DataError(f"{len(missing)} utterance(s) of the data dir are not decoded there, e.g. {missing[0]}",
                        Path(args.one_by_one) / "hyp")
    model = Transcriber(args.model_dir, threads=args.threads, max_segment_s=args.max_segment)
    start = time.perf_counter()
    results = []
    for lang in sorted({r.lang for r in recordings}):
        group = [r for r in recordings if r.lang == lang]
        results += zip(group, model.transcribe_loaded([(r.name, r.samples) for r in group], task="asr",
                                                      src_lang=lang, batch_size=args.batch_size))
    seconds = time.perf_counter() - start
    audio_s = sum(len(r.samples) for r in recordings) / TARGET_SR
    held = [n for rec, res in results for n in longform.utterances_per_segment(
        rec.spans, [(round(g.start * TARGET_SR), round(g.end * TARGET_SR)) for g in res.segments])]
    refs = {r.name: langs.join_texts([text[u] for u in r.utts], r.lang) for r in recordings}
    utt2lang = {r.name: r.lang for r in recordings}
    stats = {"recordings": len(recordings), "utts_per_recording": args.utts_per_recording,
             "pause_s": list(args.pause), "seed": args.seed, "max_segment_s": model.max_segment_s,
             "segments": len(held), "utterances_per_segment": round(sum(held) / max(1, len(held)), 3),
             "audio_s": round(audio_s, 2), "decode_s": round(seconds, 2), "rtf": round(seconds / audio_s, 4)}
    for d, hyps, extra in ((out, {rec.name: res.text for rec, res in results}, {"longform": stats}),
                           (obo, {r.name: langs.join_texts([alone[u] for u in r.utts], r.lang) for r in recordings},
                            {"one_by_one": str(args.one_by_one)})):
        d.mkdir(parents=True, exist_ok=True)
        write_kv(d / "ref", refs)
        write_kv(d / "utt2lang", utt2lang)
        atomic_write(d / "decode.json", json.dumps({"task": "asr", "num_utts": len(recordings), **extra},
                                                   sort_keys=True, indent=1) + "\n")
        if d == out:
            segs = [(f"{rec.name}-{k:03d}", f"{rec.name} {g.start:.3f} {g.end:.3f}")
                    for rec, res in results for k, g in enumerate(res.segments)]
            write_kv(d / "segments", dict(segs))
        write_kv(d / "hyp", hyps)  # last: its presence marks a finished decode
    logger.info("%d recordings (%.0f s) in %d segments, %.2f utterances per segment, RTF %.3f",
                len(recordings), audio_s, len(held), stats["utterances_per_segment"], stats["rtf"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
