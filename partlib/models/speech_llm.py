"""SpeechLLM: Whisper encoder -> adapter -> causal LLM, trained with task prompts.

Shapes: feats [B, T, M] -> encoder [B, ceil(T/2), D] -> adapter [B, N, H] spliced into the prompt
embeddings [B, L, H] at the speech placeholder -> LLM.

The model config's sections and the trainable spec are defined in :mod:`partlib.models.schema`.
"""
from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor, nn
from transformers import GenerationConfig, LogitsProcessor, LogitsProcessorList

from partlib import tasks
from partlib.common import ConfigError, DataError, PathLike
from partlib.config import to_dict
from partlib.models import io
from partlib.models.adapter import build_adapter
from partlib.models.encoder import SpeechEncoder, load_whisper_encoder, whisper_encoder_from_config
from partlib.models.llm import backbone_and_head, decoder_layers, load_causal_lm, load_tokenizer, parse_dtype
from partlib.models.lora import inject_lora, lora_params_by_layer, normalize_lora_config, unwrap
from partlib.models.pretrained import missing_dir
from partlib.models.prompt import IGNORE_INDEX, TOKEN_KEYS, PromptBuilder, PromptExample
from partlib.models.schema import EncoderTopK, Lora, Trainable, model_config, resolve_layers, trainable

# Default decoding budget: speech arrives at 12.5 embeddings/s (Whisper x2, adapter x4), far more
# than any language's tokens/s; text tasks get a multiple of the source length.
_NEW_TOKENS_MIN = 16
_NEW_TOKENS_PER_SPEECH_EMBED = 1.0
_NEW_TOKENS_PER_SOURCE_TOKEN = 3.0
_NEW_TOKENS_CAP = 512


@dataclass
class Hypothesis:
    """One decoded output: its text, its length in tokens (without the stop token) and whether
    it ended with a stop token (False: it reached its budget)."""

    text: str
    n_tokens: int
    ended: bool


def resolve_relative(value: Optional[str], base_dir: Optional[Path]) -> Optional[str]:
    """A path relative to ``base_dir`` when it exists there; otherwise unchanged (e.g. a hub id)."""
    if value is None or base_dir is None or os.path.isabs(value):
        return value
    candidate = base_dir / value
    return str(candidate) if candidate.exists() else value


class SpeechLLM(nn.Module):
    """Speech encoder + adapter + causal LLM with LoRA and task prompts.

    Build with :meth:`from_config` (model YAML) or :meth:`from_pretrained` (a saved directory).
    A new model trains the adapter only (encoder and LLM frozen) until :meth:`apply_trainable`.
    """

    def __init__(self, encoder: SpeechEncoder, adapter: nn.Module, llm: nn.Module, tokenizer,
                 config: dict) -> None:
        super().__init__()
        self.encoder = encoder
        self.adapter = adapter
        self.llm = llm
        self.tokenizer = tokenizer
        self.config = config
        self.n_mels: int = encoder.n_mels
        self.prompt: Optional[PromptBuilder] = (
            PromptBuilder(tokenizer, config["prompt"]) if tokenizer is not None else None)
        self.lora_config: Optional[dict] = None  # normalised lora section once adapters exist
        # Weights that were trained (or are random) are saved; untouched pretrained ones are referenced.
        self.encoder_weights_modified = False
        self.llm_weights_modified = False
        self.register_buffer("lora_active", torch.zeros(self.num_llm_layers(), dtype=torch.bool))
        self.register_load_state_dict_post_hook(lambda module, _keys: module._sync_lora_grads())
        if config.get("lora") is not None:
            self._add_lora(config["lora"])
        self.apply_trainable({"encoder": "frozen", "adapter": "full", "llm": "frozen"})

    # ----------------------------------------------------------------- construction
    @classmethod
    def from_config(cls, cfg: dict, base_dir: Optional[PathLike] = None,
                    device: Optional[str] = None) -> "SpeechLLM":
        """Build from a model config (sections encoder/adapter/llm/lora/prompt).

        ``encoder``/``llm`` take ``path`` (pretrained: a local dir or hub id) or ``arch`` (a config.json
        for random weights). Relative paths are looked up in ``base_dir`` first. ``device="meta"``
        builds random-weight modules without allocating memory.
        """
        cfg = model_config(cfg)
        base = Path(base_dir) if base_dir is not None else None
        enc, llm_sec = cfg.encoder, cfg.llm
        for sec in (enc, llm_sec):
            sec.path, sec.arch = resolve_relative(sec.path, base), resolve_relative(sec.arch, base)
        llm_sec.tokenizer = resolve_relative(llm_sec.tokenizer, base)
        with torch.device(device or "cpu"):
            if enc.path is not None:
                whisper = load_whisper_encoder(enc.path, parse_dtype(enc.dtype), base_dir=base)
            else:
                whisper = whisper_encoder_from_config(enc.arch).to(parse_dtype(enc.dtype))
            encoder = SpeechEncoder(whisper, enc.pad_to_30s, enc.gradient_checkpointing)
            llm = load_causal_lm(llm_sec.path, llm_sec.arch, parse_dtype(llm_sec.dtype), base_dir=base)
            adapter = build_adapter(cfg.adapter, encoder.d_model, llm.config.hidden_size, encoder.frame_rate)
        tokenizer = load_tokenizer(llm_sec.tokenizer or llm_sec.path, base_dir=base,
                                   key="llm.tokenizer" if llm_sec.tokenizer else "llm.path")
        model = cls(encoder, adapter, llm, tokenizer, to_dict(cfg))
        model.set_gradient_checkpointing(enc.gradient_checkpointing, llm_sec.gradient_checkpointing)
        return model

    @classmethod
    def from_pretrained(cls, path: PathLike, key: Optional[str] = None) -> "SpeechLLM":
        """Load a directory written by :meth:`save_pretrained` (``partlib.models.io``); a directory
        that is not there, or lacks a file, is a :class:`~partlib.common.PartError` (naming the
        option or config key ``key`` that gave ``path``, when given)."""
        if not Path(path).is_dir():
            raise missing_dir(path, key)
        try:
            model = cls.from_config(io.read_config(path), base_dir=path)
            io.load_weights(model, path)
            return model
        except FileNotFoundError as e:  # e.g. adapter.safetensors, state.json, lora/ deleted
            raise DataError(f"incomplete model directory: {e.strerror or e}"
                            + (f": {e.filename}" if e.filename else ""), path) from None

    def save_pretrained(self, path: PathLike, merge_lora: bool = False, self_contained: bool = False) -> None:
        """Write the model to a directory, atomically (layout and options: ``partlib.models.io``)."""
        io.save_model(self, path, merge_lora, self_contained)

    def set_gradient_checkpointing(self, encoder: bool, llm: bool) -> None:
        """Recompute the encoder's / the LLM's layer activations in the backward pass (or not)."""
        self.encoder.gradient_checkpointing = encoder
        base = unwrap(self.llm)
        if hasattr(base, "activation_checkpointing_enable"):  # transformers >= 5
            if llm:
                base.activation_checkpointing_enable({"use_reentrant": False})
            else:
                base.activation_checkpointing_disable()
        elif llm:
            base.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        else:
            base.gradient_checkpointing_disable()

    # ----------------------------------------------------------------- trainable parts
    def num_llm_layers(self) -> int:
        """Number of transformer layers of the LLM."""
        return int(unwrap(self.llm).config.num_hidden_layers)

    def shard_units(self) -> List[nn.Module]:
        """The modules that become FSDP units below the root: the encoder's and the LLM's
        transformer layers (the root keeps convolutions, adapter, embeddings, norms and head)."""
        return [*self.encoder.whisper.layers, *decoder_layers(unwrap(self.llm))]

    @property
    def lora_active_layers(self) -> List[int]:
        """LLM layers whose LoRA adapters are trained (saved in the state dict)."""
        return [int(i) for i in torch.nonzero(self.lora_active).flatten().tolist()]

    def _add_lora(self, lora: Union[Lora, dict]) -> None:
        norm = normalize_lora_config(lora, unwrap(self.llm), self.num_llm_layers())
        self.llm = inject_lora(self.llm, norm)
        self.lora_config = norm
        self.config["lora"] = dict(norm)

    def set_lora_active_layers(self, layers: Sequence[int]) -> None:
        """Train LoRA on ``layers`` only (a subset of the layers that have adapters)."""
        if self.lora_config is None:
            raise ConfigError("the model has no LoRA adapters (trainable: {llm: {lora: ...}} adds them)")
        idx = resolve_layers(list(layers), self.num_llm_layers(), "active LoRA layers") if layers else []
        outside = sorted(set(idx) - set(self.lora_config["layers"]))
        if outside:
            raise ConfigError(f"LoRA layers {outside} have no adapters; candidates are {self.lora_config['layers']}")
        self.lora_active.zero_()
        self.lora_active[idx] = True
        self._sync_lora_grads()

    def _sync_lora_grads(self) -> None:
        """requires_grad of LoRA parameters follows the active set."""
        if self.lora_config is None:
            return
        active = set(self.lora_active_layers)
        for layer, params in lora_params_by_layer(self.llm).items():
            for p in params:
                p.requires_grad_(layer in active)

    def apply_trainable(self, spec: Union[Trainable, dict]) -> None:
        """Set what trains (:class:`partlib.models.schema.Trainable`, or its mapping form)::

            {encoder: frozen | full | {top_k: N}, adapter: full | frozen, llm: frozen | full | {lora: {...}}}

        ``{lora: {...}}``: its ``layers`` is the active set. LoRA adapters are added if the model has
        none; otherwise the spec's shape (r, alpha, dropout, target_modules) must be theirs.
        """
        spec = trainable(spec)
        encoder = spec.encoder.top_k if isinstance(spec.encoder, EncoderTopK) else spec.encoder
        self.encoder.set_trainable(encoder)
        self.encoder_weights_modified |= encoder != "frozen"
        self.adapter.requires_grad_(spec.adapter == "full")
        lora = spec.lora
        if lora is None:
            unwrap(self.llm).requires_grad_(spec.llm == "full")
            self.llm_weights_modified |= spec.llm == "full"
            if self.lora_config is not None:
                self.set_lora_active_layers([])
            return
        if self.lora_config is None:
            self._add_lora(lora)
        else:
            have = {k: v for k, v in self.lora_config.items() if k != "layers"}
            if lora.shape() != have:
                raise ConfigError(f"trainable.llm.lora {lora.shape()} differs from the model's LoRA adapters "
                                  f"{have}; their shape is fixed when they are created")
        unwrap(self.llm).requires_grad_(False)
        self.set_lora_active_layers(resolve_layers(lora.layers, self.num_llm_layers(), "trainable.llm.lora.layers"))

    # ----------------------------------------------------------------- computation
    @property
    def device(self) -> torch.device:
        """Device of the LLM weights."""
        return next(self.llm.parameters()).device

    @property
    def vocab_size(self) -> int:
        """Width of the LLM's output layer: the token ids a logits processor sees scores for."""
        return int(unwrap(self.llm).get_output_embeddings().weight.shape[0])

    def _autocast(self):
        enabled = self.device.type == "cuda" and self.config["llm"].get("autocast", True)
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=enabled)

    def speech_embed_length(self, num_frames: int) -> int:
        """Number of speech embeddings the encoder + adapter make of ``num_frames`` log-mel frames."""
        enc = self.encoder.output_lengths(torch.tensor([int(num_frames)]))
        return int(self.adapter.output_lengths(enc)[0])

    def _encode(self, feats: Tensor, feat_lens: Tensor) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
        """Encoder states [B, T', D] and lengths, then adapter embeddings [B, N, H] and lengths."""
        if feats.shape[-1] != self.n_mels:
            raise ConfigError(f"features have {feats.shape[-1]} mel bins but the encoder expects {self.n_mels}")
        enc_dtype = next(self.encoder.parameters()).dtype
        h, h_lens = self.encoder(feats.to(self.device, enc_dtype), feat_lens)  # lengths stay on the host
        adapter_trains = any(p.requires_grad for p in self.adapter.parameters())
        with torch.set_grad_enabled(torch.is_grad_enabled() and (adapter_trains or h.requires_grad)):
            emb, lens = self.adapter(h.to(next(self.adapter.parameters()).dtype), h_lens)
        return h, h_lens, emb, lens

    def _prompt_batch(self, batch: dict, train: bool, left_pad: Optional[bool] = None
                      ) -> Tuple[Dict[str, Tensor], List[PromptExample]]:
        """Token/label tensors and ``inputs_embeds`` with speech spliced in.

        ``train`` adds the targets (and labels); padding is on the left for generation unless
        ``left_pad`` says otherwise. A training batch that carries its token tensors
        (:data:`~partlib.models.prompt.TOKEN_KEYS`, made in the loader's workers:
        :class:`partlib.train.loader.PromptTokens`) is not tokenised again; its speech spans must
        match the embeddings made here. The speech rows' encoder and adapter outputs come along as
        ``encoder``/``encoder_lens``/``adapter``/``adapter_lens`` (rows in batch order).
        """
        if self.prompt is None:
            raise ConfigError("the model has no tokenizer (set llm.tokenizer)")
        n = len(batch["tasks"])
        speech_task = []
        for name, utt in zip(batch["tasks"], batch["utt_ids"]):
            try:
                speech_task.append(tasks.get(name).speech)
            except ConfigError as e:
                raise DataError(str(e), utt=utt) from None
        # A speech-task row with 0 frames gets the prompt without speech embeddings (no-audio control).
        speech_rows = [i for i in range(n) if speech_task[i]
                       and (batch.get("feat_lens") is None or int(batch["feat_lens"][i]) > 0)]
        n_speech = [0] * n
        speech: List[Tensor] = []
        encoded: Dict[str, Tensor] = {}
        if speech_rows:
            if batch.get("feats") is None:
                raise ConfigError("speech tasks in a batch without feats")
            rows = torch.tensor(speech_rows)
            lens = batch["feat_lens"][rows]
            too_long = [batch["utt_ids"][i] for i, n in zip(speech_rows, lens.tolist()) if n > self.encoder.max_frames]
            if too_long:
                raise DataError(f"longer than the encoder's {self.encoder.max_frames} frames "
                                f"({self.encoder.max_frames // 100} s); segment the audio first", utt=too_long[0])
            feats = batch["feats"][rows, : int(lens.max())]
            h, h_lens, emb, emb_lens = self._encode(feats, lens)
            encoded = {"encoder": h, "encoder_lens": h_lens, "adapter": emb, "adapter_lens": emb_lens}
            for j, i in enumerate(speech_rows):
                n_speech[i] = int(emb_lens[j])
                speech.append(emb[j, : n_speech[i]])
        if train and "input_ids" in batch:  # tokenised by the training loader (its DataLoader workers)
            t = {k: batch[k].to(self.device) for k in TOKEN_KEYS}
            examples = []
            got = t["speech_mask"].sum(1).tolist()
            if got != n_speech:
                i = next(i for i, (a, b) in enumerate(zip(got, n_speech)) if a != b)
                raise DataError(f"the loader's prompt has {got[i]} speech positions where the model makes "
                                f"{n_speech[i]} speech embeddings", utt=batch["utt_ids"][i])
        else:
            left = not train if left_pad is None else left_pad
            t, examples = self.prompt.tokenise(batch, n_speech, train, left)
            t = {k: v.to(self.device) for k, v in t.items()}
        embed = unwrap(self.llm).get_input_embeddings()
        embeds = embed(t["input_ids"])
        if speech:
            flat = torch.cat(speech).to(embeds.dtype)
            embeds = embeds.masked_scatter(t["speech_mask"][..., None], flat)
        t["inputs_embeds"] = embeds
        t.update(encoded)
        return t, examples

    def hidden_states(self, batch: dict, layers: Sequence[int]) -> Dict[str, object]:
        """The states of a decoding prompt (no target) at every point of the model, computed in the
        weights' own dtype (no autocast: the representation analysis compares them with text states).

        Returns ``encoder``/``encoder_lens`` and ``adapter``/``adapter_lens`` (the speech rows, in
        batch order; absent without speech), ``llm``: ``{k: [B, L, H]}`` for each requested hidden
        state ``k`` (0 = input embeddings, i = output of decoder layer i, negative from the end),
        ``speech_mask`` and ``attention_mask`` ``[B, L]`` (right padding).
        """
        t, _ = self._prompt_batch(batch, train=False, left_pad=False)
        hidden: Tuple[Tensor, ...] = ()
        if layers:  # the LLM runs only when its states are asked for
            backbone, _ = backbone_and_head(unwrap(self.llm))
            hidden = backbone(inputs_embeds=t["inputs_embeds"], attention_mask=t["attention_mask"],
                              position_ids=t["position_ids"], output_hidden_states=True,
                              use_cache=False).hidden_states
        states: Dict[str, object] = {k: t[k] for k in ("encoder", "encoder_lens", "adapter", "adapter_lens") if k in t}
        states["llm"] = {k: hidden[k] for k in layers}
        states["speech_mask"], states["attention_mask"] = t["speech_mask"], t["attention_mask"]
        return states

    def _target_logits(self, batch: dict) -> Tuple[Tensor, Tensor, Tensor]:
        """Logits [N, V] at the N target-token positions of the batch, their labels [N] and the
        [B, L-1] mask of those positions."""
        t, _ = self._prompt_batch(batch, train=True)
        backbone, head = backbone_and_head(unwrap(self.llm))
        hidden = backbone(inputs_embeds=t["inputs_embeds"], attention_mask=t["attention_mask"],
                          position_ids=t["position_ids"], use_cache=False).last_hidden_state
        labels = t["labels"][:, 1:]
        sel = labels != IGNORE_INDEX  # logits only where a target token is predicted
        return head(hidden[:, :-1][sel]).float(), labels[sel], sel

    def forward(self, batch: dict) -> dict:
        """Summed NLL of the target tokens (incl. end-of-turn): ``{"loss_sum", "n_tokens"}``."""
        with self._autocast():
            logits, labels, _ = self._target_logits(batch)
            loss_sum = nn.functional.cross_entropy(logits, labels, reduction="sum")
        return {"loss_sum": loss_sum, "n_tokens": int(labels.numel())}

    @torch.no_grad()
    def target_log_probs(self, batch: dict) -> Tensor:
        """Log-probability [B] of each example's target (incl. end-of-turn) given its prompt: scores
        candidate outputs, e.g. the labels of a closed set."""
        with self._autocast():
            logits, labels, sel = self._target_logits(batch)
            nll = nn.functional.cross_entropy(logits, labels, reduction="none")
        rows = torch.nonzero(sel)[:, 0]  # row of each target token (a host sync: kept off the training path)
        return -torch.zeros(len(batch["tasks"]), device=nll.device).index_add_(0, rows, nll)

    def _budget(self, ex: PromptExample, src_text: Optional[str]) -> int:
        if ex.n_speech:
            n = _NEW_TOKENS_PER_SPEECH_EMBED * ex.n_speech
        else:
            n = _NEW_TOKENS_PER_SOURCE_TOKEN * len(self.tokenizer(src_text or "", add_special_tokens=False)["input_ids"])
        return min(_NEW_TOKENS_CAP, _NEW_TOKENS_MIN + int(n))

    @torch.no_grad()
    def generate(self, batch: dict, max_new_tokens: Optional[int] = None, num_beams: int = 1,
                 length_penalty: float = 1.0, repetition_penalty: float = 1.0,
                 no_repeat_ngram_size: int = 0, logits_processors: Sequence[LogitsProcessor] = ()
                 ) -> List[str]:
        """The text of :meth:`hypotheses`: one hypothesis per example."""
        return [h.text for h in self.hypotheses(batch, max_new_tokens, num_beams, length_penalty,
                                                repetition_penalty, no_repeat_ngram_size, logits_processors)]

    @torch.no_grad()
    def hypotheses(self, batch: dict, max_new_tokens: Optional[int] = None, num_beams: int = 1,
                   length_penalty: float = 1.0, repetition_penalty: float = 1.0,
                   no_repeat_ngram_size: int = 0, logits_processors: Sequence[LogitsProcessor] = ()
                   ) -> List[Hypothesis]:
        """Decode one hypothesis per example (greedy or beam search, KV cache), special tokens removed.

        Without ``max_new_tokens`` each example gets a budget from its input length; hypotheses
        are cut to their own budget, so greedy results do not depend on the batch composition.
        ``logits_processors`` (``transformers`` logits processors, applied in order) change the
        next-token scores ``[B * num_beams, vocab_size]`` at each step; the beams of an example are
        consecutive rows (the decoder's script mask is one).
        """
        with self._autocast():
            t, examples = self._prompt_batch(batch, train=False)
            src_texts = batch.get("src_texts") or [None] * len(examples)
            budgets = [max_new_tokens or self._budget(ex, s) for ex, s in zip(examples, src_texts)]
            gen_cfg = GenerationConfig(
                max_new_tokens=max(budgets), num_beams=num_beams, do_sample=False,
                length_penalty=length_penalty, repetition_penalty=repetition_penalty,
                no_repeat_ngram_size=no_repeat_ngram_size, eos_token_id=self.prompt.stop_ids,
                pad_token_id=self.prompt.pad_id, use_cache=True)
            processors = LogitsProcessorList(logits_processors) if logits_processors else None
            with warnings.catch_warnings():
                # penalties apply to the hypothesis only, which is what we want: silence the notice
                warnings.filterwarnings("ignore", message=r"Passing `\w+` with `inputs_embeds`")
                out = unwrap(self.llm).generate(inputs_embeds=t["inputs_embeds"], attention_mask=t["attention_mask"],
                                                generation_config=gen_cfg, logits_processor=processors)
        hyps = []
        stops = set(self.prompt.stop_ids)
        for row, budget in zip(out.tolist(), budgets):
            row = row[:budget]
            cut = next((j for j, tok in enumerate(row) if tok in stops), None)
            ended = cut is not None
            ids = row[:cut] if ended else row
            hyps.append(Hypothesis(self.tokenizer.decode(ids, skip_special_tokens=True).strip(), len(ids), ended))
        return hyps
