"""Train a Qwen2-style byte-level BPE tokenizer on a corpus and save it as a Hugging Face fast tokenizer.

The result loads with ``AutoTokenizer.from_pretrained(dir)`` like Qwen2.5's: the same
pre-tokenisation regex (letters runs, single digits, punctuation runs) over byte-level symbols,
so every Unicode string (Chinese included) is encodable without unknown tokens; the special
tokens ``<|endoftext|>`` (EOS and padding, as in the base models), ``<|im_start|>`` and
``<|im_end|>``; and the ChatML chat template.
"""
from __future__ import annotations

from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence

from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from partlib import tasks
from partlib.common import ConfigError, PathLike
from partlib.data import langs

# Qwen2's pre-tokenizer split pattern (tokenizer.json of the Qwen2/Qwen2.5 releases).
QWEN2_SPLIT_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)

# Qwen2.5's special tokens and ChatML chat template: those of every tokenizer the recipes train
# (here) or the tests build (partlib.models.builders).
CHATML_TEMPLATE = (
    "{%- if messages[0]['role'] == 'system' %}"
    "{{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}"
    "{%- else %}{{- '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' }}{%- endif %}"
    "{%- for message in messages %}{%- if message['role'] != 'system' %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{%- endif %}{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]


def prompt_texts(lang_codes: Sequence[str], templates: Optional[Dict[str, str]] = None,
                 weight: int = 1, task_names: Optional[Sequence[str]] = None) -> List[str]:
    """The instructions of ``task_names`` (default: every registered task; ``templates`` over the
    registry's defaults) for every language and direction, plus the chat roles and default system
    message, each ``weight`` times, so that the words of prompts get merges of their own (a
    pretrained LLM's tokenizer has seen them often)."""
    templates = templates or {}
    chosen = [templates.get(t) or tasks.get(t).template for t in (task_names or tasks.names())]
    # the roles and the system message occur in every prompt: as often as each instruction
    out = ["system", "user", "assistant", "You are a helpful assistant."] * len(lang_codes) ** 2
    for src in lang_codes:
        for tgt in lang_codes:
            for template in chosen:
                out.append(template.format(src_lang=langs.name(src), tgt_lang=langs.name(tgt), text="",
                                           speech="").strip())
    return out * weight


def train_tokenizer(texts: Iterable[str], vocab_size: int, out_dir: PathLike,
                    min_frequency: int = 2) -> PreTrainedTokenizerFast:
    """Train byte-level BPE on ``texts`` (one string per sentence) and save it to ``out_dir``.

    ``vocab_size`` counts the 256 byte symbols and the 3 special tokens; training stops earlier
    when no pair occurs ``min_frequency`` times, so a small corpus may give a smaller vocabulary.
    """
    if vocab_size < 256 + len(SPECIAL_TOKENS) + 1:
        raise ConfigError(f"vocab_size must exceed the 256 byte symbols + special tokens, got {vocab_size}")
    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(QWEN2_SPLIT_PATTERN), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, min_frequency=min_frequency, special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(texts, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token="<|endoftext|>", pad_token="<|endoftext|>",
        additional_special_tokens=["<|im_start|>", "<|im_end|>"], model_max_length=32768,
        clean_up_tokenization_spaces=False)
    fast.chat_template = CHATML_TEMPLATE
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    fast.save_pretrained(str(out_dir))
    return fast
