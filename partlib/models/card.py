"""The model card (``README.md``) and provenance (``info.json``) of an exported model folder.

``info.json`` is written by the training export and completed by ``python -m partlib.bin.export``
with the dev/test scores of the model's decodes::

    {"stage": ..., "experiment": ..., "description": ..., "git_commit": ..., "created": ...,
     "tasks": [{"task": "asr", "weight": 1.0}, ...], "languages": [...], "target_languages": [...],
     "data": {"<task>": {"<lang>": {"utterances": N, "hours": H}}},
     "checkpoints": [...], "averaged": false, "stage_config": {...},
     "scores": {"<decode dir>": {"metric": "wer", "value": 12.3, "utterances": N}}}
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, List

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
    if info.get("target_languages"):
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
