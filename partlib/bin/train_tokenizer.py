"""Train the recipe's tokenizer: byte-level BPE (Qwen2 style) with ChatML, saved for AutoTokenizer.

    python -m partlib.bin.train_tokenizer --vocab-size 1000 data/text_train_en data/text_train_de ... OUT_DIR

Inputs are Kaldi data dirs (all of ``text`` and ``text.<lang>``) or Kaldi ``text`` files
(``<utt> <sentence>`` lines; ``--plain`` for one sentence a line). Only give training data.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import List, Optional, Sequence

from partlib import config, tasks
from partlib.bin import cli, nonnegative_int, positive_int
from partlib.common import DataError, get_logger
from partlib.data.kv import iter_lines, read_kv
from partlib.text.overlap import data_dir_texts
from partlib.text.tokenizer import prompt_texts, train_tokenizer

log = get_logger("partlib.train_tokenizer")


def read_texts(paths: Sequence[Path], plain: bool = False) -> List[str]:
    """Sentences of data dirs (text + translations) and text files, in the given order."""
    out: List[str] = []
    for p in paths:
        if p.is_dir():
            out += data_dir_texts(p).values()
        elif plain:
            out += [line for _, line in iter_lines(p) if line.strip()]
        else:
            out += read_kv(p).values()
    return out


@cli
def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("inputs", nargs="+", type=Path, help="training data dirs or text files, then OUT_DIR")
    p.add_argument("--vocab-size", type=positive_int, default=1000)
    p.add_argument("--min-frequency", type=positive_int, default=2, help="least count of a pair to be merged")
    p.add_argument("--langs", default="en de fr es zh",
                   help="languages whose task instructions are added to the training text")
    p.add_argument("--plain", action="store_true", help="text files hold one sentence a line (no utt id)")
    p.add_argument("--model-config", type=Path,
                   help="SpeechLLM config whose prompt.templates are added to the instructions")
    p.add_argument("--prompt-weight", type=nonnegative_int, default=1,
                   help="times the instructions are added (more: shorter prompts in tokens)")
    p.add_argument("--tasks", default=None,
                   help="comma-separated tasks whose instructions are added (default: every registered task)")
    args = p.parse_args(argv)
    if len(args.inputs) < 2:
        p.error("give at least one input and the output directory")
    *inputs, out_dir = args.inputs
    task_names = [t for t in (args.tasks or "").split(",") if t] or None
    for t in task_names or ():
        tasks.get(t)  # an unknown name is an error before any work
    texts = list(dict.fromkeys(read_texts(inputs, args.plain)))  # a sentence once, whatever its copies
    if not texts:
        raise DataError("no training text found", inputs[0])
    templates = None
    if args.model_config:
        if not args.model_config.is_file():
            raise DataError("model config not found", args.model_config)
        templates = (config.load_file(args.model_config).get("prompt") or {}).get("templates")  # base: resolved
    tok = train_tokenizer(texts + prompt_texts(args.langs.split(), templates, args.prompt_weight, task_names),
                          args.vocab_size, out_dir, args.min_frequency)
    n_tokens = sum(len(tok(t, add_special_tokens=False)["input_ids"]) for t in texts)
    log.info("trained on %d sentences: vocabulary %d, %.2f tokens per sentence; saved to %s",
             len(texts), len(tok), n_tokens / len(texts), out_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
