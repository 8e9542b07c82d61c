"""Decode a data dir with an exported SpeechLLM model directory.

    python -m partlib.bin.decode --model-dir exp/part_seed1/s4_text/model --data-dir data/test_de \\
        --task s2tt --tgt-lang en [--beam 4] [--batch-frames 60000] [--nj 4] OUT_DIR

Writes OUT_DIR/{hyp,ref,utt2lang[,tgt_lang],decode.json} (and ``troubles`` with --redecode). With --nj N the data dir is split and
N jobs run through --cmd (utils/run.pl by default; utils/slurm.pl on a cluster); finished jobs are
skipped on re-run, and a finished decode (OUT_DIR/hyp present) is not redone.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from partlib import tasks
from partlib.bin import cli, nonnegative_int, positive_float, positive_int
from partlib.common import atomic_write, get_logger, run_jobs
from partlib.features.source import FEATURE_MODES
from partlib.infer import control
from partlib.models import card

logger = get_logger("partlib.bin.decode")


def add_decoding_options(p: argparse.ArgumentParser) -> None:
    """The options of decoding itself (this tool's and ``partlib.bin.decode_sets``')."""
    p.add_argument("--beam", type=positive_int, default=1, help="beam size (1: greedy)")
    p.add_argument("--length-penalty", type=float, default=1.0)
    p.add_argument("--repetition-penalty", type=positive_float, default=1.0)
    p.add_argument("--no-repeat-ngram-size", type=nonnegative_int, default=0)
    p.add_argument("--max-new-tokens", type=positive_int, default=None,
                   help="default: bounded by each input's length")
    p.add_argument("--batch-frames", type=positive_int, default=60000, help="max padded encoder frames per batch")
    p.add_argument("--batch-size", type=positive_int, default=16, help="max utterances per batch")
    p.add_argument("--audio", choices=["real", "shuffled", "none"], default="real",
                   help="controls: shuffled = another utterance's audio (with --nj: from the same job's "
                        "part); none = no speech embeddings")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--features", choices=list(FEATURE_MODES), default="auto",
                   help="dumped: feats.scp; on_the_fly: from wav.scp; auto: feats.scp where present")
    p.add_argument("--script-mask", action="store_true",
                   help="only tokens of the target language's script (partlib.infer.control)")
    p.add_argument("--redecode", action="store_true",
                   help="decode again with beam search the greedy outputs that show trouble: they reach the "
                        "token budget, exceed the training data's tokens/s, or repeat an n-gram 3 times")
    p.add_argument("--redecode-beams", type=positive_int, default=4, help="beam size of the re-decode")
    p.add_argument("--rate-factor", type=positive_float, default=1.5,
                   help="trouble above this times the 99th percentile of the training targets' tokens/s")
    p.add_argument("--nj", type=positive_int, default=1, help="N > 1: split each data dir into N jobs of --cmd")
    p.add_argument("--cmd", default="utils/run.pl", help="job runner (run.pl / slurm.pl interface)")
    p.add_argument("--device", default=None)
    p.add_argument("--threads", type=positive_int, default=None)


def decoding_kwargs(args: argparse.Namespace) -> dict:
    """The keyword arguments of :func:`partlib.infer.decode.decode_dir` from the decoding options."""
    return dict(batch_frames=args.batch_frames, batch_size=args.batch_size, num_beams=args.beam,
                length_penalty=args.length_penalty, repetition_penalty=args.repetition_penalty,
                no_repeat_ngram_size=args.no_repeat_ngram_size, max_new_tokens=args.max_new_tokens,
                audio=args.audio, seed=args.seed, features=args.features, script_mask=args.script_mask,
                trouble=control.Trouble(card.read_info(args.model_dir).get("target_rates", {}), args.rate_factor,
                                        args.redecode_beams) if args.redecode else None)


def load_model(args: argparse.Namespace):
    """The SpeechLLM of ``--model-dir`` on ``--device``, torch using ``--threads`` CPU threads."""
    import torch

    from partlib.models.speech_llm import SpeechLLM

    if args.threads:
        torch.set_num_threads(args.threads)
    model = SpeechLLM.from_pretrained(args.model_dir, key="--model-dir")
    if args.device:
        model.to(args.device)
    return model


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model-dir", required=True)
    p.add_argument("--data-dir", required=True)
    p.add_argument("--task", choices=tasks.names(scored=True), default="asr")
    p.add_argument("--tgt-lang", default=None, help="target language of a cross-lingual task (s2tt, t2tt)")
    add_decoding_options(p)
    p.add_argument("out_dir")
    return p


def _forward_args(args: argparse.Namespace, data: str, out: str) -> list:
    skip = {"model_dir", "data_dir", "nj", "cmd", "out_dir"}
    argv = ["--model-dir", args.model_dir, "--data-dir", data]
    for k, v in vars(args).items():
        if k in skip or v is None or v is False:
            continue
        argv += [f"--{k.replace('_', '-')}"] + ([] if v is True else [str(v)])
    return argv + [out]


def decode_in_jobs(args: argparse.Namespace) -> None:
    """Split the data dir into ``args.nj`` parts, decode each as a job of ``args.cmd`` (this tool
    with ``--nj 1``), and merge the parts into ``args.out_dir``; a failed job is an error naming
    its log."""
    from partlib.data.dirtools import split_data_dir
    from partlib.data.kv import read_kv, write_kv

    out = Path(args.out_dir)
    splits = split_data_dir(args.data_dir, args.nj, by_speaker=False)
    n = len(splits)
    # split_data_dir names the parent split<n>utt (per-utterance split): take it from its result
    sub = _forward_args(args, str(splits[0].parent / "JOB"), str(out / f"split{n}" / "JOB"))
    run_jobs(args.cmd, n, out / "log" / "decode.JOB.log", ["-m", "partlib.bin.decode"] + sub, "decoding",
             failed=lambda: [j for j in range(1, n + 1) if not (out / f"split{n}" / str(j) / "hyp").is_file()])
    names = ("ref", "utt2lang", "troubles", "hyp") if args.redecode else ("ref", "utt2lang", "hyp")
    merged = {name: {} for name in names}
    for j in range(1, n + 1):
        for name, table in merged.items():
            table.update(read_kv(out / f"split{n}" / str(j) / name, allow_empty=True))
    tgt = out / f"split{n}" / "1" / "tgt_lang"
    if tgt.is_file():
        atomic_write(out / "tgt_lang", tgt.read_text())
    opts = json.loads((out / f"split{n}" / "1" / "decode.json").read_text())
    opts.update(num_utts=len(merged["hyp"]), nj=n)
    if args.redecode:
        opts["redecode"]["counts"] = control.trouble_counts(merged["troubles"].values())
    atomic_write(out / "decode.json", json.dumps(opts, sort_keys=True, indent=1) + "\n")
    for name, table in merged.items():  # hyp last: its presence marks a finished decode
        write_kv(out / name, table)


@cli
def main(argv=None) -> int:
    args = get_parser().parse_args(argv)
    out = Path(args.out_dir)
    if (out / "hyp").is_file():
        logger.info("%s/hyp exists: decode already done", out)
        return 0
    if args.nj > 1:
        decode_in_jobs(args)
        return 0
    from partlib.infer.decode import decode_dir

    decode_dir(load_model(args), args.data_dir, out, task=args.task, tgt_lang=args.tgt_lang, **decoding_kwargs(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
