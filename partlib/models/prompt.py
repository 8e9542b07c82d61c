"""Task prompts, shared by training and decoding.

Every example becomes ``[chat prefix | speech span | instruction + assistant header | target]``:
the LLM's own chat template renders one user turn whose content is a speech marker followed by the
task instruction; the text is cut at the marker and the speech embeddings are spliced in between.
Targets end with the end-of-turn token (``<|im_end|>`` for ChatML) and only target tokens carry
labels, so the model learns to stop.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor

from partlib import config, tasks
from partlib.common import ConfigError, DataError
from partlib.data import langs
from partlib.models.schema import PromptSection

IGNORE_INDEX = -100
# the tensors of a tokenised batch (:meth:`PromptBuilder.collate`)
TOKEN_KEYS = ("input_ids", "speech_mask", "attention_mask", "position_ids", "labels")
_MARKER = "\u2063SPEECH\u2063"  # never produced by real text; only used to split the rendered prompt


@dataclass
class PromptExample:
    """Token ids of one example; the speech span sits between ``prefix`` and ``suffix``."""

    prefix: List[int]
    n_speech: int
    suffix: List[int]
    target: List[int] = field(default_factory=list)  # includes the end-of-turn id when training

    @property
    def n_input(self) -> int:
        """Length of the prompt without the target."""
        return len(self.prefix) + self.n_speech + len(self.suffix)


class PromptBuilder:
    """Builds token ids, labels and padded batches for all tasks from the ``prompt`` config section.

    Config keys: ``system`` (system message or null for the chat template's default),
    ``templates`` (per task, over the task registry's defaults; each task allows some of the fields
    ``{src_lang}``, ``{tgt_lang}``, ``{text}`` and, for speech tasks, ``{speech}``, which places the
    speech span; without it the speech goes before the instruction),
    ``end_token`` (end-of-turn token; default ``<|im_end|>`` when the vocabulary has it, else EOS).
    """

    def __init__(self, tokenizer, cfg: Union[PromptSection, dict, None] = None) -> None:
        if not isinstance(cfg, PromptSection):
            cfg = config.parse(PromptSection, cfg or {}, "model config", "prompt")
        if not getattr(tokenizer, "chat_template", None):
            raise ConfigError("the LLM tokenizer has no chat template; use an instruction-tuned tokenizer")
        self.tokenizer = tokenizer
        self.system: Optional[str] = cfg.system
        self.templates: Dict[str, str] = dict(cfg.templates)
        end = cfg.end_token
        if end is None:
            vocab = tokenizer.get_vocab()
            end = "<|im_end|>" if "<|im_end|>" in vocab else tokenizer.eos_token
        end_id = tokenizer.convert_tokens_to_ids(end)
        if end_id is None or end_id == tokenizer.unk_token_id:
            raise ConfigError(f"end-of-turn token {end!r} is not in the tokenizer vocabulary")
        self.end_token: str = end
        self.end_id: int = int(end_id)
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        self.pad_id: int = int(pad if pad is not None else self.end_id)
        self.stop_ids: List[int] = sorted({self.end_id} | ({tokenizer.eos_token_id} - {None}))

    def _encode(self, text: str) -> List[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"] if text else []

    def template(self, task: str) -> str:
        """The instruction template of a task: the config's, else the task registry's default."""
        return self.templates.get(task) or tasks.get(task).template

    def instruction(self, task: str, src_lang: str, tgt_lang: Optional[str], src_text: Optional[str]) -> str:
        """The task instruction with language names (and the source text for text tasks)."""
        src = langs.name(src_lang)
        tgt = langs.name(tgt_lang) if tgt_lang else src
        return self.template(task).format(src_lang=src, tgt_lang=tgt, text=src_text or "", speech=_MARKER)

    def build(self, task: str, src_lang: str, tgt_lang: Optional[str], *, n_speech: int = 0,
              src_text: Optional[str] = None, target: Optional[str] = None,
              utt: Optional[str] = None) -> PromptExample:
        """Token ids of one example. ``target=None`` builds a decoding prompt.

        A speech task with ``n_speech=0`` gets the same prompt with an empty speech span.
        """
        speech, head, tail = self._render(task, src_lang, tgt_lang, src_text, utt)
        tgt_ids = [] if target is None else self._encode(target) + [self.end_id]
        return PromptExample(self._encode(head), n_speech if speech else 0,
                             self._encode(tail), tgt_ids)

    def _render(self, task: str, src_lang: str, tgt_lang: Optional[str], src_text: Optional[str],
                utt: Optional[str] = None) -> Tuple[bool, str, str]:
        """Whether the task has speech, and the chat prompt's text before and after its speech span
        (all of it before for a text task)."""
        try:
            speech = tasks.get(task).speech
        except ConfigError as e:
            raise DataError(str(e), utt=utt) from None
        if not speech and not src_text:
            raise DataError(f"task {task} needs a source text", utt=utt)
        instruction = self.instruction(task, src_lang, tgt_lang, src_text)
        # Speech goes where the template says ``{speech}``, else before the instruction.
        content = instruction if _MARKER in instruction or not speech else _MARKER + instruction
        messages = ([{"role": "system", "content": self.system}] if self.system is not None else [])
        messages.append({"role": "user", "content": content})
        rendered = self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        if speech:
            head, tail = rendered.split(_MARKER)
            return True, head, tail
        return False, rendered, ""

    def _encode_many(self, texts: Sequence[str]) -> List[List[int]]:
        """:meth:`_encode` of many texts in one tokenizer call."""
        if not texts:
            return []
        return [ids if text else [] for text, ids in
                zip(texts, self.tokenizer(list(texts), add_special_tokens=False)["input_ids"])]

    def tokenise(self, batch: dict, n_speech: Sequence[int], train: bool, left_pad: bool
                 ) -> Tuple[Dict[str, Tensor], List[PromptExample]]:
        """The padded token tensors (:meth:`collate`) and examples of a batch dict
        (``partlib.data.batching.collate``) whose rows get ``n_speech`` speech embeddings each;
        ``train`` adds the targets (an error without them)."""
        n = len(batch["tasks"])
        targets = batch.get("targets") if train else None
        if train and targets is None:
            raise ConfigError("training batch without targets")
        src_texts = batch.get("src_texts") or [None] * n
        examples = [self.build(batch["tasks"][i], batch["src_langs"][i], batch["tgt_langs"][i], n_speech=n_speech[i],
                               src_text=src_texts[i], target=None if targets is None else targets[i],
                               utt=batch["utt_ids"][i])
                    for i in range(n)]
        return self.collate(examples, left_pad=left_pad), examples

    def collate(self, examples: Sequence[PromptExample], left_pad: bool) -> Dict[str, Tensor]:
        """Pad examples into one batch.

        Returns ``input_ids`` [B, L] (speech positions hold the pad id), ``speech_mask`` [B, L]
        (True where speech embeddings go, in order), ``attention_mask`` [B, L], ``position_ids``
        [B, L] (0.. over real tokens) and ``labels`` [B, L] (IGNORE_INDEX except target tokens).
        Training uses right padding; generation uses left padding so all prompts end together.
        """
        seqs, spm, labs = [], [], []
        for ex in examples:
            ids = ex.prefix + [self.pad_id] * ex.n_speech + ex.suffix + ex.target
            seqs.append(ids)
            spm.append([False] * len(ex.prefix) + [True] * ex.n_speech + [False] * (len(ex.suffix) + len(ex.target)))
            labs.append([IGNORE_INDEX] * ex.n_input + ex.target)
        n = max(len(s) for s in seqs)
        b = len(seqs)
        input_ids = torch.full((b, n), self.pad_id, dtype=torch.long)
        speech_mask = torch.zeros((b, n), dtype=torch.bool)
        attention_mask = torch.zeros((b, n), dtype=torch.long)
        labels = torch.full((b, n), IGNORE_INDEX, dtype=torch.long)
        for i, (ids, sm, lab) in enumerate(zip(seqs, spm, labs)):
            sl = slice(n - len(ids), n) if left_pad else slice(0, len(ids))
            input_ids[i, sl] = torch.tensor(ids, dtype=torch.long)
            speech_mask[i, sl] = torch.tensor(sm, dtype=torch.bool)
            attention_mask[i, sl] = 1
            labels[i, sl] = torch.tensor(lab, dtype=torch.long)
        position_ids = (attention_mask.cumsum(-1) - 1).clamp(min=0)
        return {"input_ids": input_ids, "speech_mask": speech_mask, "attention_mask": attention_mask,
                "position_ids": position_ids, "labels": labels}


class PromptLengths:
    """The exact LLM length of training examples outside their speech span: the chat prompt around
    it, the target and its end-of-turn token, token for token as :meth:`PromptBuilder.build` makes
    them. It is the ``text_lengths`` of :func:`partlib.data.examples.finish_examples`, so the dynamic
    batcher, the memory planner and the model count the same tokens; picklable, for the DataLoader
    workers that build streamed examples. A speech task's prompt depends only on its task,
    languages and source text (none for the registry's speech tasks) and is tokenised once each."""

    def __init__(self, builder: PromptBuilder) -> None:
        self.builder = builder
        self._prompts: Dict[Tuple[str, str, str, Optional[str]], int] = {}

    def prompt(self, task: str, src_lang: str, tgt_lang: str, src_text: Optional[str] = None) -> int:
        """Tokens of one example's prompt without its speech span and target."""
        key = (task, src_lang, tgt_lang, src_text)
        n = self._prompts.get(key)
        if n is None:
            _, head, tail = self.builder._render(task, src_lang, tgt_lang, src_text)
            n = sum(len(ids) for ids in self.builder._encode_many([head, tail]))
            if tasks.get(task).speech:  # a text task's prompt holds its text: not worth keeping
                self._prompts[key] = n
        return n

    def __call__(self, task: str, rows: Sequence[Tuple[str, str, Optional[str], str]]) -> List[int]:
        """Tokens outside the speech span of each ``(src_lang, tgt_lang, src_text, target)`` of ``task``."""
        b = self.builder
        targets = b._encode_many([r[3] for r in rows])
        if tasks.get(task).speech:
            prompts = [self.prompt(task, src, tgt, text) for src, tgt, text, _ in rows]
        else:
            rendered = [b._render(task, src, tgt, text)[1] for src, tgt, text, _ in rows]
            prompts = [len(ids) for ids in b._encode_many(rendered)]
        return [p + len(t) + 1 for p, t in zip(prompts, targets)]
