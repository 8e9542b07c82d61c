"""The model card (``README.md``) and provenance (``info.json``) of an exported model folder.

``info.json`` is written by the training export and completed by ``python -m partlib.bin.export``
with the dev/test scores of the model's decodes::

    {"stage": ..., "experiment": ..., "description": ..., "git_commit": ..., "created": ...,
     "tasks": [{"task": "asr", "weight": 1.0}, ...], "languages": [...], "target_languages": [...],
     "data": {"<task>": {"<lang>": {"utterances": N, "hours": H}}},
     "directions": {"<cross-lingual task>": {"<source lang>": ["<target lang>", ...]}},
     "checkpoints": [...], "averaged": false, "stage_config": {...},
     "scores": {"<decode dir>": {"metric": "wer", "value": 12.3, "utterances": N}}}
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, List, Optional

from partlib import tasks
from partlib.common import DataError, PathLike, atomic_write

INFO = "info.json"
CARD = "README.md"


def read_info(folder: PathLike) -> Dict[str, Any]:
    """The provenance of a model folder ({} when it has none)."""
    path = Path(folder) / INFO
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except ValueError as e:
        raise DataError(f"not valid JSON ({e})", path) from None


def trained_on(info: Dict[str, Any]) -> Optional[Dict[str, Dict[str, List[str]]]]:
    """``{task: {source language: [target languages]}}`` the model was trained on (a within-language
    task's target is its source), from its provenance; None when that names no training data (folders
    exported before it was recorded). Folders from before ``directions`` was recorded: every
    translation target of the model counts for every source of a cross-lingual task."""
    data = info.get("data")
    if not data:
        return None
    cross = set(tasks.names(cross_lingual=True))
    out: Dict[str, Dict[str, List[str]]] = {}
    for task, by_lang in data.items():
        if task not in cross:
            out[task] = {src: [src] for src in by_lang}
        elif "directions" in info:
            out[task] = {src: list(info["directions"].get(task, {}).get(src, [])) for src in by_lang}
        else:
            out[task] = {src: [t for t in info.get("target_languages", []) if t != src] for src in by_lang}
    return out


def untrained(info: Dict[str, Any], task: str, src_lang: Optional[str], tgt_lang: Optional[str]) -> Optional[str]:
    """What of a request (``task`` from ``src_lang`` into ``tgt_lang``; ``src_lang`` None: to be
    identified, ``tgt_lang`` None: within-language) the model was not trained on, in words that list
    what it was trained on; None when it was trained on all of it or its provenance names no data
    (canonical language codes)."""
    known = trained_on(info)
    if known is None:
        return None
    if task not in known:
        return f"the model was not trained on task {task} (its tasks: {', '.join(sorted(known))})"
    if src_lang is None:
        return None
    if src_lang not in known[task]:
        return (f"the model was not trained on {task} from language {src_lang} "
                f"(its {task} source languages: {', '.join(sorted(known[task]))})")
    target = tgt_lang or src_lang
    if target not in known[task][src_lang]:
        pairs = ", ".join(f"{s}->{t}" for s, ts in sorted(known[task].items()) for t in sorted(ts))
        return f"the model was not trained on {task} {src_lang}->{target} (its {task} directions: {pairs or 'none'})"
    return None


def write(folder: PathLike, info: Dict[str, Any], model_config: Dict[str, Any]) -> None:
    """Write ``info.json`` and the ``README.md`` card rendered from it into ``folder``."""
    folder = Path(folder)
    atomic_write(folder / INFO, json.dumps(info, indent=1, sort_keys=True, ensure_ascii=False) + "\n")
    atomic_write(folder / CARD, render(info, model_config))


def _table(header: List[str], rows: List[List[Any]]) -> List[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return out


def render(info: Dict[str, Any], model_config: Dict[str, Any]) -> str:
    """The model card: what the model is, what it was trained on, how it scores, how to run it."""
    adapter = model_config.get("adapter", {})
    lines = [f"# SpeechLLM: {info.get('experiment', '?')} / {info.get('stage', '?')}", ""]
    if info.get("description"):
        lines += [info["description"], ""]
    lines += ["Whisper-architecture encoder -> `{}` adapter -> causal LLM, trained with the PART recipes "
              "(partlib). Everything needed to run it is in this folder.".format(adapter.get("type", "?")), ""]
    lines += ["## Training", ""]
    lines += [f"- commit `{info.get('git_commit', 'unknown')}`, exported {info.get('created', '?')}"]
    if info.get("checkpoints"):
        how = "average of" if info.get("averaged") else "checkpoint"
        lines += [f"- {how} step(s) {', '.join(str(s) for s in info['checkpoints'])} of this stage"]
    if info.get("tasks"):
        lines += ["- tasks (mixture weights): " + ", ".join(f"{t['task']} ({t['weight']:g})" for t in info["tasks"])]
    if info.get("languages"):
        lines += ["- source languages: " + ", ".join(info["languages"])]
    if info.get("directions"):
        lines += ["- translation directions: " + "; ".join(
            f"{task} " + ", ".join(f"{src}->{t}" for src, ts in sorted(by_src.items()) for t in ts)
            for task, by_src in sorted(info["directions"].items()))]
    elif info.get("target_languages"):
        lines += ["- translation targets: " + ", ".join(info["target_languages"])]
    rows = [[task, lang, d["utterances"], f"{d['hours']:.2f}" if d.get("hours") is not None else "text"]
            for task, by_lang in sorted(info.get("data", {}).items()) for lang, d in sorted(by_lang.items())]
    if rows:
        lines += ["", "Training data of this stage:", ""] + _table(["task", "language", "utterances", "hours"], rows)
    scores = info.get("scores") or {}
    if scores:
        lines += ["", "## Scores", ""]
        lines += _table(["decode", "metric", "value", "utterances"],
                        [[name, s["metric"], f"{s['value']:.2f}" if s["value"] is not None else "n/a",
                          s["utterances"]] for name, s in sorted(scores.items())])
    lines += ["", "## Use", "", "```bash",
              "python -m partlib.bin.decode --model-dir <this folder> --data-dir <Kaldi data dir> --task asr <out dir>",
              "```", ""]
    return "\n".join(lines)
