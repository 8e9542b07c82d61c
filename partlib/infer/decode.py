"""Batched decoding of a data dir with an exported SpeechLLM.

Examples are built by the same code as training examples (``partlib.data.examples.build_examples``),
sorted by length and cut into batches bounded by encoder frames and utterances, then decoded with
the model's ``generate`` (KV cache; greedy or beam search). Outputs, in Kaldi text format::

    OUT_DIR/hyp        <utt> <hypothesis>
    OUT_DIR/ref        <utt> <reference>   (text, or text.<tgt> for translation)
    OUT_DIR/utt2lang   <utt> <source language>
    OUT_DIR/tgt_lang   the target language (translation tasks only)
    OUT_DIR/decode.json the decoding options
    OUT_DIR/troubles   <utt> <reasons>  (with a re-decode on trouble: the utterances re-decoded)

Controls that show whether speech is used: ``audio="shuffled"`` feeds each utterance another
utterance's features (a fixed derangement); ``audio="none"`` gives the LLM the prompt without any
speech embeddings.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch

from partlib import tasks
from partlib.common import ConfigError, PathLike, atomic_write, get_logger
from partlib.data.batching import collate, make_batches
from partlib.data.datadir import DataDir
from partlib.data.kv import write_kv
from partlib.data.examples import Example, TaskSpec, build_examples
from partlib.features.source import FeatureSource
from partlib.features.whisper_mel import FRAMES_PER_SECOND
from partlib.infer import control
from partlib.models.prompt import PromptLengths
from partlib.models.speech_llm import Hypothesis

logger = get_logger("partlib.infer")

AUDIO_MODES = ("real", "shuffled", "none")


def derangement(n: int, seed: int) -> np.ndarray:
    """A permutation of range(n) without fixed points (n >= 2), deterministic in seed."""
    if n < 2:
        raise ConfigError("the shuffled-audio control needs at least 2 utterances")
    rng = np.random.default_rng(seed)
    while True:
        perm = rng.permutation(n)
        if not np.any(perm == np.arange(n)):
            return perm


def decode_examples(model, data_dir: PathLike, task: str, tgt_lang: Optional[str]) -> List[Example]:
    """The examples of ``task`` (one per utterance) in a data dir."""
    t = tasks.get(task)
    if t.cross_lingual and not tgt_lang:
        raise ConfigError(f"task {task} needs --tgt-lang")
    if not t.cross_lingual and tgt_lang:
        raise ConfigError(f"task {task} is within-language: --tgt-lang does not apply")
    d = DataDir.load(data_dir)
    spec = TaskSpec(task=task, weight=1.0, data=[str(data_dir)],
                    tgt_langs=[tgt_lang] if tgt_lang else None)
    return build_examples(spec, [d], PromptLengths(model.prompt), model.speech_embed_length)


@dataclass
class Decoded:
    """What :func:`generate_hyps` returns: hypotheses by ``Example.key``, and for each example whose
    greedy hypothesis showed trouble (:func:`partlib.infer.control.troubles`) the reasons; those
    examples were re-decoded with beam search."""

    hyps: Dict[str, str]
    troubles: Dict[str, List[str]] = field(default_factory=dict)


@torch.no_grad()
def generate_hyps(model, examples: Sequence[Example], source: FeatureSource, batch_frames: int = 60000,
                  batch_size: int = 16, audio: str = "real", seed: int = 0, progress: bool = False,
                  script_mask: bool = False, trouble: Optional[control.Trouble] = None,
                  **generate_opts) -> Decoded:
    """Hypotheses of ``examples`` (all of speech tasks, or all of text tasks).

    Examples are sorted by length and cut into batches of at most ``batch_frames`` encoder input
    frames and ``batch_size`` utterances, then decoded by the model's ``generate`` (greedy or beam
    search: ``generate_opts``). ``audio`` selects the controls of the module docstring; ``progress``
    shows a progress bar (utterances) on stderr. ``script_mask`` keeps each hypothesis in its target
    language's script; with ``trouble``, greedy hypotheses that show trouble are decoded again with
    ``trouble.beams`` beams (:mod:`partlib.infer.control`). Training's dev evaluation, decoding and
    :mod:`partlib.infer.transcribe` all come here.
    """
    if audio not in AUDIO_MODES:
        raise ConfigError(f"audio must be one of {AUDIO_MODES}")
    if batch_size < 1 or batch_frames < 1 or generate_opts.get("num_beams", 1) < 1:
        raise ConfigError(f"batch_size, batch_frames and num_beams must be >= 1, got {batch_size}, {batch_frames}, "
                          f"{generate_opts.get('num_beams', 1)}")
    if not examples:
        return Decoded({})
    kinds = {tasks.get(e.task).speech for e in examples}
    if len(kinds) > 1:
        raise ValueError("generate_hyps takes examples of speech tasks or of text tasks, not both")
    speech = kinds.pop()
    if audio != "real" and not speech:
        raise ConfigError(f"audio={audio} is a control for speech tasks, not {examples[0].task}")
    if trouble is not None and generate_opts.get("num_beams", 1) != 1:
        raise ConfigError("the re-decode on trouble follows a greedy decode: num_beams must be 1")
    mask = control.script_mask(model) if script_mask else None
    # The shuffled control: example i is decoded with the features of example perm[i].
    feat_of = {e.key: e for e in examples}
    if audio == "shuffled":
        perm = derangement(len(examples), seed)
        feat_of = {e.key: examples[int(j)] for e, j in zip(examples, perm)}
    sources = [feat_of[e.key] for e in examples]
    by_source = {feat_of[e.key].key: e for e in examples}
    max_frames = max(batch_frames, max(e.num_frames for e in examples))

    def run(srcs: Sequence[Example], opts: Dict, bar) -> Dict[str, Hypothesis]:
        out: Dict[str, Hypothesis] = {}
        for b in make_batches(srcs, max_frames, 10**9, batch_size):
            exs = [by_source[s.key] for s in b]  # the examples whose prompts/targets we decode
            feats = None
            if speech:
                if audio == "none":
                    feats = [torch.zeros(0, model.n_mels) for _ in b]
                else:
                    feats = source.load([(s.dir_index, s.utt) for s in b])
            batch = collate(exs, feats)
            batch["targets"] = None
            procs = [mask.processor(batch["tgt_langs"], opts.get("num_beams", 1))] if mask else []
            for e, h in zip(exs, model.hypotheses(batch, logits_processors=procs, **opts)):
                out[e.key] = h
            bar.update(len(exs))
        return out

    from tqdm import tqdm

    with tqdm(total=len(examples), disable=not progress, unit="utt", mininterval=1.0, dynamic_ncols=True) as bar:
        hyps = run(sources, generate_opts, bar)
        found: Dict[str, List[str]] = {}
        if trouble is not None:
            for e in examples:
                h = hyps[e.key]
                # the rate counts the audio decoded, which the shuffled control takes from another utterance
                seconds = feat_of[e.key].num_frames / FRAMES_PER_SECOND
                why = control.troubles(h.text, h.n_tokens, h.ended, seconds, e.tgt_lang,
                                       trouble.bound(e.task, e.tgt_lang) if speech else None)
                if why:
                    found[e.key] = why
            if found:
                bar.reset(total=len(found))
                again = [feat_of[e.key] for e in examples if e.key in found]
                hyps.update(run(again, {**generate_opts, "num_beams": trouble.beams}, bar))
    return Decoded({k: " ".join(h.text.split()) for k, h in hyps.items()}, found)


@torch.no_grad()
def decode_dir(
    model,
    data_dir: PathLike,
    out_dir: PathLike,
    task: str = "asr",
    tgt_lang: Optional[str] = None,
    batch_frames: int = 60000,
    batch_size: int = 16,
    num_beams: int = 1,
    length_penalty: float = 1.0,
    repetition_penalty: float = 1.0,
    no_repeat_ngram_size: int = 0,
    max_new_tokens: Optional[int] = None,
    audio: str = "real",
    seed: int = 0,
    features: str = "auto",
    script_mask: bool = False,
    trouble: Optional[control.Trouble] = None,
) -> Dict[str, str]:
    """Decode every utterance of ``data_dir`` and write hyp/ref/utt2lang into ``out_dir``; with
    ``trouble`` also ``troubles`` (the re-decoded utterances and why) and their counts in
    ``decode.json`` (output controls: :mod:`partlib.infer.control`)."""
    model.eval()
    examples = decode_examples(model, data_dir, task, tgt_lang)
    source = FeatureSource([DataDir.load(data_dir)], model.n_mels, features)
    decoded = generate_hyps(model, examples, source, batch_frames, batch_size, audio, seed,
                            script_mask=script_mask, trouble=trouble,
                            max_new_tokens=max_new_tokens, num_beams=num_beams, length_penalty=length_penalty,
                            repetition_penalty=repetition_penalty, no_repeat_ngram_size=no_repeat_ngram_size)
    hyps = {e.utt: decoded.hyps[e.key] for e in examples}
    out_dir = Path(out_dir)
    write_kv(out_dir / "ref", {e.utt: e.target for e in examples})
    write_kv(out_dir / "utt2lang", {e.utt: e.src_lang for e in examples})
    if tgt_lang:
        atomic_write(out_dir / "tgt_lang", f"{examples[0].tgt_lang}\n")
    opts = {"task": task, "tgt_lang": tgt_lang, "num_beams": num_beams, "length_penalty": length_penalty,
            "repetition_penalty": repetition_penalty, "no_repeat_ngram_size": no_repeat_ngram_size,
            "max_new_tokens": max_new_tokens, "audio": audio, "seed": seed, "batch_size": batch_size,
            "batch_frames": batch_frames, "num_utts": len(examples), "script_mask": script_mask, "redecode": None}
    if trouble is not None:
        troubles = {e.utt: ",".join(decoded.troubles[e.key]) for e in examples if e.key in decoded.troubles}
        write_kv(out_dir / "troubles", troubles)
        opts["redecode"] = {"beams": trouble.beams, "rate_factor": trouble.rate_factor,
                            "counts": control.trouble_counts(troubles.values())}
    atomic_write(out_dir / "decode.json", json.dumps(opts, sort_keys=True, indent=1) + "\n")
    write_kv(out_dir / "hyp", hyps)  # last: its presence marks a finished decode
    logger.info("decoded %d utterances of %s (%s%s, audio=%s) into %s", len(hyps), data_dir, task,
                f"->{tgt_lang}" if tgt_lang else "", audio, out_dir)
    return hyps
