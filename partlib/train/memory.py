"""Training memory planner: the peak memory per GPU of an alignment stage, predicted before it runs.

The model is built on the meta device from architecture configs (no weights). The prediction
counts

* **weights**, **gradients** and **optimizer state**, counted parameter by parameter in their own
  dtypes (AdamW keeps two moments per trainable parameter, in the parameter's dtype); FSDP divides
  them by the number of GPUs and adds the unsharded working set (the root unit and two layers);
* **activations**: the tensors autograd keeps for the backward pass, measured by running the real
  encoder, adapter, LLM, head and loss on meta tensors of the batch's shape under
  ``torch.autograd.graph.saved_tensors_hooks`` (storages counted once, parameters excluded). The
  trainable spec decides what is kept: a frozen linear layer does not keep its input, an encoder
  without trainable parts keeps nothing. Attention is counted as a fused kernel keeps it (query,
  key, value, output, log-sum-exp, mask), as the SDPA flash / memory-efficient kernels do on CPU and
  GPU. With bf16 autocast (CUDA) the probe applies autocast's casting rules itself
  (:class:`_AutocastRules`). Gradient checkpointing keeps each layer's input and recomputes one
  layer at a time;
* the **moment of the peak** (:class:`Plan`): the start of backward, with the loss's gradients
  ([targets, vocab] in float32, twice) beside every activation, or the optimizer step, with every
  gradient and AdamW's temporaries (two buffers the size of the largest tensor on CPU, where AdamW
  goes tensor by tensor; one buffer per tensor, all at once, with the multi-tensor CUDA version).

Batches come from the stage's budget (``max_frames``, ``max_tokens``, ``max_utts``: one global
micro-batch, summed over the GPUs; :class:`partlib.train.schedule.Batch`): for a speech task, a
global micro-batch of utterances of ``utt_seconds``, as many as the budget allows, with
:data:`TARGET_TOKENS_PER_S` target tokens per second; for a text task, ``text_tokens``-long
sequences filling the token budget, half of the text a target (t2tt's source and lm's first half
are in the prompt). Each GPU gets the largest part of it the loaders give a rank (the in-memory
slice, ``ceil(rows / GPUs)``; streaming cuts a rank's batch to ``budget // GPUs``, never more).
A stage's peak is the largest over its tasks.
Activations grow linearly with the number of utterances, which gives the largest ``max_frames``
that fits.

Validation: ``bench/memory_plan.py`` (predicted vs measured peak of real CPU training steps) and
``test/test_plan.py`` (the probe vs what a real forward keeps).
"""
from __future__ import annotations

import copy
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode

from partlib import tasks
from partlib.common import ConfigError
from partlib.data import langs
from partlib.features.whisper_mel import FRAMES_PER_SECOND
from partlib.models.builders import CONFIG_DIR
from partlib.models.llm import backbone_and_head, decoder_layers
from partlib.models.lora import unwrap
from partlib.models.prompt import IGNORE_INDEX, PromptLengths
from partlib.train.schedule import StageConfig, apply_stage_trainable

GIB = 2 ** 30
# The prompt around the speech span when the model's tokenizer is not at hand (a hub id; Qwen2.5
# ChatML prompts have 30-45 tokens); with a local tokenizer the planner counts the prompt exactly.
PROMPT_TOKENS = 40
TARGET_TOKENS_PER_S = 5.0  # target tokens per second of speech (BPE transcripts/translations: 3-5)
PARTS = ("encoder", "adapter", "llm", "loss")


# ---------------------------------------------------------------- the model, on the meta device
def _arch_file(section: dict, kind: str) -> str:
    """The architecture config.json of a model config section: ``arch`` as given; for ``path``, the
    checkpoint's own config.json when it is a local directory, else the bundled config of that hub
    model (``partlib/models/configs/<name>.json``)."""
    if section.get("arch"):
        return section["arch"]
    path = section.get("path")
    if path and (Path(path) / "config.json").is_file():
        return str(Path(path) / "config.json")
    name = str(path).rstrip("/").split("/")[-1].lower()
    bundled = CONFIG_DIR / f"{name}.json"
    if bundled.is_file():
        return str(bundled)
    known = ", ".join(sorted(p.stem for p in CONFIG_DIR.glob("*.json")))
    raise ConfigError(f"{kind}.path {path!r}: no local config.json and no bundled architecture config "
                      f"{bundled.name} (bundled: {known}); point path at a local checkpoint directory")


def meta_model(model_cfg: dict, base_dir: Optional[Path] = None):
    """The SpeechLLM of ``model_cfg`` on the meta device, from architecture configs alone (no
    weights, no download), without gradient checkpointing (see :class:`Activations`); with the
    tokenizer where it is a local directory (the planner then counts prompts exactly)."""
    from partlib.models.speech_llm import SpeechLLM, resolve_relative

    cfg = copy.deepcopy(model_cfg)
    tokenizer = resolve_relative(cfg["llm"].get("tokenizer") or cfg["llm"].get("path"), base_dir)
    for kind in ("encoder", "llm"):
        sec = cfg[kind]
        for key in ("path", "arch"):
            if sec.get(key):
                sec[key] = resolve_relative(sec[key], base_dir)
        sec["arch"], sec["path"] = _arch_file(sec, kind), None
        sec["gradient_checkpointing"] = False  # the probe sees every layer; checkpointing is counted apart
    cfg["llm"]["tokenizer"] = tokenizer if tokenizer and Path(tokenizer).is_dir() else None
    cfg.pop("lora", None)
    return SpeechLLM.from_config(cfg, device="meta")


# ---------------------------------------------------------------- batch shapes
@dataclass(frozen=True)
class BatchShape:
    """One micro-batch on one GPU: ``rows`` sequences of ``tokens`` LLM positions each (padded),
    speech rows with ``frames`` log-mel frames each, ``targets`` target tokens in all."""

    task: str
    rows: int
    frames: int
    tokens: int
    targets: int

    def scaled(self, rows: int) -> "BatchShape":
        """The same sequences, ``rows`` of them."""
        return replace(self, rows=rows, targets=self.targets * rows // self.rows)

    def describe(self) -> str:
        speech = f", {self.frames / FRAMES_PER_SECOND:.0f} s of speech each" if self.frames else ""
        return f"{self.task}: {self.rows} x {self.tokens} tokens{speech}, {self.targets} targets"


def batch_shape(model, batch: dict) -> BatchShape:
    """The shape of a real training ``batch`` (one task) as ``model`` builds it: its rows, padded
    frames, padded LLM length (prompt, speech embeddings, target) and target tokens."""
    frames = int(batch["feats"].shape[1]) if batch.get("feats") is not None else 0
    n = len(batch["tasks"])
    lens = batch["feat_lens"].tolist() if frames else [0] * n
    examples = [model.prompt.build(batch["tasks"][i], batch["src_langs"][i], batch["tgt_langs"][i],
                                   n_speech=model.speech_embed_length(lens[i]) if lens[i] else 0,
                                   src_text=(batch.get("src_texts") or [None] * n)[i], target=batch["targets"][i])
                for i in range(n)]
    t = model.prompt.collate(examples, left_pad=False)
    return BatchShape(batch["tasks"][0], n, frames, int(t["input_ids"].shape[1]),
                      int((t["labels"][:, 1:] != IGNORE_INDEX).sum()))


def _rank_rows(global_rows: int, gpus: int) -> int:
    """Sequences of the largest slice of a global micro-batch of ``global_rows`` (rank r takes rows
    r, r + gpus, ...; a rank whose slice is empty, or a budget smaller than one sequence, runs one)."""
    return max(1, -(-global_rows // gpus))


def budget_shapes(stage: StageConfig, model, gpus: int, utt_seconds: float = 10.0,
                  text_tokens: int = 256) -> List[BatchShape]:
    """The per-GPU micro-batch of each task of ``stage`` at the stage's batch budget: the largest
    share of a global micro-batch of equal sequences that a rank gets (at least one sequence)."""
    b = stage.batch
    shapes = []
    for name in dict.fromkeys(spec.task for spec in stage.tasks):
        task = tasks.get(name)
        prompt = longest_prompt(stage, model, name) if model.prompt is not None else PROMPT_TOKENS
        if task.speech:
            frames = int(utt_seconds * FRAMES_PER_SECOND)
            targets = max(2, round(TARGET_TOKENS_PER_S * utt_seconds))  # a bound for short targets (lid)
            tokens = prompt + model.speech_embed_length(frames) + targets
            rows = _rank_rows(min(b.max_utts, b.max_frames // frames, b.max_tokens // tokens), gpus)
            shapes.append(BatchShape(name, rows, frames, tokens, rows * targets))
        else:
            tokens = text_tokens
            rows = _rank_rows(min(b.max_utts, b.max_tokens // tokens), gpus)
            # the text tasks' source (t2tt) or first half (lm) is in the prompt: half of the text is target
            shapes.append(BatchShape(name, rows, 0, tokens, rows * max(1, (tokens - prompt) // 2)))
    return shapes


def longest_prompt(stage: StageConfig, model, task: str) -> int:
    """Tokens of the longest prompt of ``task`` (its target's end-of-turn token included, the speech
    span and the target's text not; a text task's source text as one word) over the languages and
    directions the stage's specs of it name (every language of :mod:`partlib.data.langs` where
    they name none), as the model's prompt builder counts them
    (:class:`partlib.models.prompt.PromptLengths`). Without named directions, a cross-lingual task
    takes the longest source language, then the longest target for it: a language name sits in its
    own place of the template."""
    lengths = PromptLengths(model.prompt)
    text = None if tasks.get(task).speech else "text"
    cross = tasks.get(task).cross_lingual

    def length(src: str, tgt: str) -> int:
        return lengths(task, [(src, tgt, text, "")])[0]

    longest = 0
    for spec in (s for s in stage.tasks if s.task == task):
        srcs = sorted({langs.canonical(x) for x in (spec.langs or langs.codes())})
        if not cross:
            longest = max([longest, *(length(src, src) for src in srcs)])
        elif spec.directions:
            pairs = [(langs.canonical(d.partition("-")[0]), langs.canonical(d.partition("-")[2]))
                     for d in spec.directions]
            longest = max([longest, *(length(src, tgt) for src, tgt in pairs if src in srcs)])
        else:
            tgts = sorted({langs.canonical(x) for x in (spec.tgt_langs or langs.codes())})
            src = max(srcs, key=lambda x: length(x, tgts[0]))
            longest = max([longest, *(length(src, tgt) for tgt in tgts)])
    return longest


# ---------------------------------------------------------------- activations, measured on meta
class _FusedAttention(torch.autograd.Function):
    """Scaled dot-product attention as a fused kernel runs it: the output, and for backward the
    inputs, the output, the log-sum-exp per query and the mask (a boolean mask becomes an additive one)."""

    @staticmethod
    def forward(ctx, q: Tensor, k: Tensor, v: Tensor, mask: Optional[Tensor]) -> Tensor:  # type: ignore[override]
        # the flash kernels (CPU, CUDA) give the output q's layout: for a q [B, heads, N, d] that views
        # a [B, N, ...] projection, [B, N, heads, d] in memory, so that the transpose back is no copy
        if q.dim() == 4 and q.stride(1) < q.stride(2):
            out = q.new_empty(q.shape[0], q.shape[2], q.shape[1], v.shape[-1]).transpose(1, 2)
        else:
            out = q.new_empty(*q.shape[:-1], v.shape[-1])
        lse = q.new_empty(q.shape[:-1], dtype=torch.float32)
        saved = [q, k, v, out, lse]
        if mask is not None:
            saved.append(mask.to(q.dtype) if mask.dtype == torch.bool else mask)
        ctx.save_for_backward(*saved)
        return out

    @staticmethod
    def backward(ctx, grad: Tensor):  # type: ignore[override]
        q, k, v = ctx.saved_tensors[:3]
        return torch.empty_like(q), torch.empty_like(k), torch.empty_like(v), None


def _fused_sdpa(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, enable_gqa=False):
    return _FusedAttention.apply(query, key, value, attn_mask)


_LOWER = {nn.functional.linear, nn.functional.conv1d, nn.functional.conv2d, torch.matmul, torch.bmm,
          torch.baddbmm, torch.addmm, torch.Tensor.matmul, torch.Tensor.__matmul__, _fused_sdpa}
_FP32 = {nn.functional.layer_norm, nn.functional.group_norm, nn.functional.softmax, nn.functional.log_softmax,
         nn.functional.cross_entropy, torch.Tensor.softmax, torch.Tensor.log_softmax}


class _AutocastRules(TorchFunctionMode):
    """bf16 autocast's casting rules, applied above autograd as CUDA autocast does: matrix
    products in bf16 (casts of trainable leaf weights cached for the forward, as autocast caches
    them), norms, softmax and loss in float32; the casts themselves become saved tensors."""

    def __init__(self) -> None:
        super().__init__()
        self.cache: Dict[int, Tensor] = {}

    def _cast(self, x, dtype: torch.dtype):
        if not isinstance(x, Tensor) or not x.is_floating_point() or x.dtype == dtype:
            return x
        if x.is_leaf and x.requires_grad:
            if id(x) not in self.cache:
                self.cache[id(x)] = x.to(dtype)
            return self.cache[id(x)]
        return x.to(dtype)

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        dtype = torch.bfloat16 if func in _LOWER else torch.float32 if func in _FP32 else None
        if dtype is not None:
            args = tuple(self._cast(a, dtype) for a in args)
            kwargs = {k: self._cast(v, dtype) for k, v in kwargs.items()}
        return func(*args, **kwargs)


@dataclass
class Activations:
    """Bytes kept for backward by one micro-batch, without checkpointing, per part (:data:`PARTS`);
    per checkpointable part the layers' own share, their inputs and the largest single layer."""

    saved: Dict[str, int]
    layers: Dict[str, int] = field(default_factory=dict)
    layer_inputs: Dict[str, int] = field(default_factory=dict)
    largest_layer: int = 0
    logits: int = 0  # the float32 [targets, vocab] logits

    def times(self, k: int) -> "Activations":
        """The activations of ``k`` such micro-batches side by side (every count is per sequence)."""
        return Activations({p: v * k for p, v in self.saved.items()}, {p: v * k for p, v in self.layers.items()},
                           {p: v * k for p, v in self.layer_inputs.items()}, self.largest_layer * k, self.logits * k)

    def total(self, checkpointed: Sequence[str] = ()) -> int:
        """Bytes kept, with gradient checkpointing in the ``checkpointed`` parts: each layer keeps its
        input, and the backward pass recomputes one layer at a time."""
        kept = sum(self.saved.values())
        for part in checkpointed:
            kept += self.layer_inputs.get(part, 0) - self.layers.get(part, 0)
        return kept + (self.largest_layer if checkpointed else 0)


@contextmanager
def _saved_bytes(model: nn.Module, layer_modules: Dict[str, Sequence[nn.Module]]) -> Iterator[dict]:
    """Count the storages autograd saves (each once; parameters and buffers excluded), by current
    part (``counts["part"]`` set by the caller) and by transformer layer."""
    own = {t.untyped_storage()._cdata for t in [*model.parameters(), *model.buffers()]}
    seen: set = set()
    counts: dict = {"part": None, "by_part": {p: 0 for p in PARTS}, "layer": None, "by_layer": {},
                    "inputs": {p: 0 for p in PARTS}}

    def pack(t: Tensor) -> Tensor:
        storage = t.untyped_storage()
        key = storage._cdata
        if key not in own and key not in seen:
            seen.add(key)
            counts["by_part"][counts["part"]] += storage.nbytes()
            if counts["layer"] is not None:
                counts["by_layer"][counts["layer"]] = counts["by_layer"].get(counts["layer"], 0) + storage.nbytes()
        return t

    handles = []
    for part, modules in layer_modules.items():
        for i, module in enumerate(modules):
            def enter(mod, args, kwargs, part=part, i=i):
                h = args[0] if args else kwargs["hidden_states"]
                counts["layer"] = (part, i)
                counts["inputs"][part] += h.untyped_storage().nbytes() if h.requires_grad else 0

            def leave(mod, args, kwargs, out):
                counts["layer"] = None
            handles += [module.register_forward_pre_hook(enter, with_kwargs=True),
                        module.register_forward_hook(leave, with_kwargs=True)]
    try:
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            yield counts
    finally:
        for h in handles:
            h.remove()


def probe_activations(model, shape: BatchShape, amp: bool = False) -> Activations:
    """Run one training forward of a ``shape`` batch through ``model`` (on the meta device) and
    count what autograd keeps, as :class:`Activations`. ``amp``: under bf16 autocast rules."""
    if model.device.type != "meta":
        raise ConfigError("probe_activations runs on a model built on the meta device (meta_model)")
    base = unwrap(model.llm)
    llm_ckpt = (base.is_activation_checkpointing if hasattr(base, "is_activation_checkpointing")  # transformers >= 5
                else base.is_gradient_checkpointing)
    if model.encoder.gradient_checkpointing or llm_ckpt:
        raise ConfigError("probe_activations needs a model without gradient checkpointing (meta_model)")
    llm = unwrap(model.llm)
    backbone, head = backbone_and_head(llm)
    hidden = llm.config.hidden_size
    layer_modules = {"encoder": list(model.encoder.whisper.layers), "llm": list(decoder_layers(llm))}
    was_training = model.training
    model.train()
    sdpa = nn.functional.scaled_dot_product_attention
    nn.functional.scaled_dot_product_attention = _fused_sdpa
    n, length = shape.rows, shape.tokens
    try:
        with _saved_bytes(model, layer_modules) as counts, (_AutocastRules() if amp else _null()):
            speech = None
            if shape.frames:
                counts["part"] = "encoder"
                enc_dtype = next(model.encoder.parameters()).dtype
                feats = torch.empty(n, shape.frames, model.n_mels, device="meta", dtype=enc_dtype)
                h, h_lens = model.encoder(feats, torch.full((n,), shape.frames))
                counts["part"] = "adapter"
                adapter_dtype = next(model.adapter.parameters()).dtype
                speech, _ = model.adapter(h.to(adapter_dtype), h_lens)
            counts["part"] = "llm"
            embeds = llm.get_input_embeddings()(torch.zeros(n, length, dtype=torch.long, device="meta"))
            if speech is not None:  # the speech span spliced into the token embeddings
                mask = torch.zeros(n, length, 1, dtype=torch.bool, device="meta")
                embeds = embeds.masked_scatter(mask, speech.to(embeds.dtype))
            causal = torch.ones(length, length, dtype=torch.bool, device="meta").tril()
            attention = causal.expand(n, 1, length, length)  # padded batches carry a 4-d mask
            positions = torch.arange(length, device="meta").expand(n, length)
            states = backbone(inputs_embeds=embeds, attention_mask=attention, position_ids=positions,
                              use_cache=False).last_hidden_state
            counts["part"] = "loss"
            rows = torch.zeros(shape.targets, dtype=torch.long, device="meta")
            picked = states[:, :-1].reshape(-1, hidden).index_select(0, rows)
            logits = head(picked).float()
            nn.functional.cross_entropy(logits, rows, reduction="sum")
    finally:
        nn.functional.scaled_dot_product_attention = sdpa
        model.train(was_training)
    by_layer = counts["by_layer"]
    return Activations(
        saved=dict(counts["by_part"]),
        layers={p: sum(v for (q, _), v in by_layer.items() if q == p) for p in layer_modules},
        layer_inputs={p: counts["inputs"][p] for p in layer_modules},
        largest_layer=max(by_layer.values(), default=0),
        logits=shape.targets * head.out_features * 4)


@contextmanager
def _null() -> Iterator[None]:
    yield


# ---------------------------------------------------------------- parameters and the peak
@dataclass
class ParamCounts:
    """Parameters (total, trainable) and their bytes per module of the SpeechLLM."""

    total: Dict[str, int]
    trainable: Dict[str, int]
    bytes: Dict[str, int]
    trainable_bytes: Dict[str, int]
    largest_trainable: int  # bytes of the largest trainable tensor
    units: List[int]  # bytes of each FSDP layer unit
    root: int  # bytes of the FSDP root unit (everything outside the layers)


def param_counts(model) -> ParamCounts:
    """Count parameters per module: encoder, adapter, llm (base weights) and lora."""
    total: Dict[str, int] = {}
    trainable: Dict[str, int] = {}
    nbytes: Dict[str, int] = {}
    tbytes: Dict[str, int] = {}
    largest = 0
    for name, p in model.named_parameters():
        part = "lora" if "lora_" in name else name.split(".")[0]
        size = p.numel() * p.element_size()
        total[part] = total.get(part, 0) + p.numel()
        nbytes[part] = nbytes.get(part, 0) + size
        trainable.setdefault(part, 0)
        tbytes.setdefault(part, 0)
        if p.requires_grad:
            trainable[part] += p.numel()
            tbytes[part] += size
            largest = max(largest, size)
    units = [sum(p.numel() * p.element_size() for p in u.parameters()) for u in model.shard_units()]
    return ParamCounts(total, trainable, nbytes, tbytes, largest, units, sum(nbytes.values()) - sum(units))


@dataclass
class Plan:
    """Predicted peak memory per GPU of one training step (bytes)::

        peak = weights + optimizer + max(held_grads + activations + loss_grads, grads + step_temps)

    The backward pass starts with the loss's gradients beside everything kept for it; the
    optimizer step holds every gradient and the optimizer's temporaries. With gradient
    accumulation (``accum_grad`` > 1) the gradients of earlier micro-batches are held during the
    next one's passes (``held_grads``): unsharded under FSDP, which reduce-scatters only after the
    last micro-batch (the trainer turns gradient sync off before it); 0 without accumulation.
    """

    stage: str
    shape: BatchShape
    params: ParamCounts
    weights: int
    grads: int
    optimizer: int
    activations: int
    loss_grads: int
    step_temps: int
    held_grads: int
    peak: int
    checkpointing: Tuple[str, ...]

    def fits(self, gpu_bytes: float) -> bool:
        return self.peak <= gpu_bytes


@dataclass(frozen=True)
class Setup:
    """Where and how a stage trains: ``device`` cuda (bf16 autocast, multi-tensor AdamW) or cpu."""

    gpus: int = 1
    strategy: str = "ddp"
    device: str = "cuda"
    accum_grad: int = 1
    optimizer: str = "adamw"
    momentum: float = 0.0

    @property
    def sharded(self) -> bool:
        return self.strategy == "fsdp" and self.gpus > 1


def predict(model, shape: BatchShape, setup: Setup, checkpointing: Sequence[str] = (),
            activations: Optional[Activations] = None, stage: str = "",
            counts: Optional[ParamCounts] = None) -> Plan:
    """The peak memory per GPU of one training step of ``model`` (trainable spec already applied)
    on a ``shape`` micro-batch; ``checkpointing``: the parts ("encoder", "llm") recomputed in backward.
    ``activations`` (probed when not given) and ``counts`` (:func:`param_counts`) may be passed in."""
    counts = counts or param_counts(model)
    acts = activations or probe_activations(model, shape, amp=setup.device == "cuda")
    trainable = sum(counts.trainable_bytes.values())
    weights = sum(counts.bytes.values())
    states = {"adamw": 2, "sgd": 1 if setup.momentum else 0}[setup.optimizer]
    grads, optimizer = trainable, states * trainable
    if setup.sharded:
        top2 = sum(sorted(counts.units)[-2:])
        weights = weights // setup.gpus + counts.root + top2  # the root stays gathered; two layers in flight
        grads, optimizer = grads // setup.gpus, optimizer // setup.gpus
    kept = acts.total(checkpointing)
    loss_grads = 2 * acts.logits  # the float32 [targets, vocab] gradients of log-softmax, in and out
    # AdamW's temporaries: multi-tensor on CUDA, a buffer per state tensor at once; tensor by tensor
    # on CPU, the sqrt and the division of the largest tensor's second moment
    step_temps = (grads if setup.device == "cuda" else 2 * counts.largest_trainable) if states else 0
    held = (trainable if setup.sharded else grads) if setup.accum_grad > 1 else 0
    peak = weights + optimizer + max(held + kept + loss_grads, grads + step_temps)
    return Plan(stage, shape, counts, weights, grads, optimizer, kept, loss_grads, step_temps, held, peak,
                tuple(checkpointing))


CHECKPOINTING = {"on": ("encoder", "llm"), "off": ()}  # the two settings every stage is planned with


def checkpointed_parts(model_cfg: dict, grad_ckpt: Optional[bool]) -> Tuple[str, ...]:
    """The parts trained with gradient checkpointing: as the model config says, or all/none."""
    if grad_ckpt is not None:
        return CHECKPOINTING["on" if grad_ckpt else "off"]
    return tuple(p for p in CHECKPOINTING["on"] if model_cfg[p].get("gradient_checkpointing"))


@dataclass
class StagePlan:
    """A stage's plans with and without checkpointing (the task whose batch needs the most memory)
    and, per setting, the largest global ``max_frames`` that fits (``max_tokens`` scaled alike; the
    smallest over the stage's tasks, 0 when not even one utterance per GPU fits)."""

    stage: StageConfig
    plans: Dict[str, Plan]
    max_frames: Dict[str, int]


def plan_stage(model, stage: StageConfig, setup: Setup, gpu_bytes: float, utt_seconds: float = 10.0,
               probes: Optional[Dict] = None) -> StagePlan:
    """Plan ``stage`` at its batch budget. Activations are probed once per task for one sequence and
    scaled (they grow linearly with the sequences of a batch; weights, gradients and optimizer state
    do not), which also gives the largest batch that fits. ``probes``: a dict kept by the caller
    across the stages it plans on this ``model`` (several schedules, several GPU counts), so that a
    sequence's activations are probed once per trainable state and shape."""
    apply_stage_trainable(model, stage)
    setup = replace(setup, accum_grad=stage.accum_grad, optimizer=stage.optim.type, momentum=stage.optim.momentum)
    plans: Dict[str, Plan] = {}
    fit: Dict[str, int] = {}
    counts = param_counts(model)
    probes = {} if probes is None else probes
    # what decides the activations besides the shape: which parameters exist (LoRA wrapped or not) and train
    state = tuple((name, tuple(p.shape), p.requires_grad) for name, p in model.named_parameters())
    amp = setup.device == "cuda"
    for shape in budget_shapes(stage, model, setup.gpus, utt_seconds):
        key = (state, shape.scaled(1), amp)
        if key not in probes:
            probes[key] = probe_activations(model, shape.scaled(1), amp=amp)
        one = probes[key]
        for name, parts in CHECKPOINTING.items():
            plan = predict(model, shape, setup, parts, one.times(shape.rows), stage.name, counts)
            if name not in plans or plan.peak > plans[name].peak:
                plans[name] = plan
            frames = _largest_fitting(model, shape, one, setup, parts, gpu_bytes, stage, counts)
            fit[name] = min(fit.get(name, frames), frames)
    return StagePlan(stage, plans, fit)


def _largest_fitting(model, shape: BatchShape, one: Activations, setup: Setup, parts: Sequence[str],
                     gpu_bytes: float, stage: StageConfig, counts: ParamCounts) -> int:
    """The largest global max_frames whose micro-batch of ``shape``'s sequences fits (0: none does)."""
    def fits(rows: int) -> bool:
        return predict(model, shape.scaled(rows), setup, parts, one.times(rows), counts=counts).peak <= gpu_bytes

    if not fits(1):
        return 0
    lo, hi = 1, 2
    while fits(hi):  # the peak grows with the rows: double, then bisect
        lo, hi = hi, hi * 2
        if hi > 2 ** 40:  # an unbounded memory
            return lo * max(1, shape.frames) * setup.gpus
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if fits(mid) else (lo, mid)
    if shape.frames:
        return lo * shape.frames * setup.gpus
    return int(lo * shape.tokens * setup.gpus * stage.batch.max_frames / stage.batch.max_tokens)


def gib(n: float) -> str:
    """``n`` bytes in GiB, one decimal."""
    return f"{n / GIB:.1f}"


def fmt_params(n: int) -> str:
    """A parameter count as 7.62B / 18.4M / 12.3k."""
    for unit, div in (("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= div:
            return f"{n / div:.{2 if unit == 'B' else 1}f}{unit}"
    return str(n)


__all__ = ["Activations", "BatchShape", "CHECKPOINTING", "GIB", "Plan", "Setup", "StagePlan", "batch_shape", "budget_shapes",
           "checkpointed_parts", "meta_model", "param_counts", "plan_stage", "predict", "probe_activations"]
