"""The model's config sections, in the grammar of :mod:`partlib.config`.

A model YAML (``conf/model.yaml``)::

    encoder: {path: openai/whisper-large-v3, pad_to_30s: false, gradient_checkpointing: false}
    adapter: {type: stack, stack: 4, hidden: 1024}     # a registered adapter and its options
    llm: {path: Qwen/Qwen2.5-7B-Instruct, dtype: bfloat16, tokenizer: <default: path>}
    prompt: {system: null, templates: {asr: "Transcribe the {src_lang} speech."}}

``path`` is a pretrained checkpoint (local dir or hub id), ``arch`` a config.json for random
weights; exactly one of them. What trains, and the LoRA shape, is not part of the model: it is a
schedule's ``trainable`` spec (:class:`Trainable`), checked here too so that there is one validator.
A saved model directory's ``config.yaml`` adds ``lora`` (the shape of the LoRA adapters it carries).

Layer specs (one grammar for LoRA ``layers`` and the schedules' ``activation``): ``all``, an index
or a list of indices (negative ones count from the top), ``{top: N}``, ``{bottom: N}`` or
``{top_frac: F}`` (the top ``round(F * L)`` of L layers, at least one).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Literal, Optional, Sequence, Union

from partlib import config, tasks
from partlib.common import ConfigError, PathLike
from partlib.config import Invalid, join
from partlib.models.adapter import adapter_options

DTYPE_NAMES = ("float32", "bfloat16", "float16")
Dtype = Literal["float32", "bfloat16", "float16"]
Mode = Literal["frozen", "full"]


class LayerSpec:
    """Syntax of a layer spec (ranges are checked by :func:`resolve_layers` against the LLM)."""

    DESCRIPTION = "all | an index | [indices] | {top: N} | {bottom: N} | {top_frac: F}"

    @staticmethod
    def config_check(value: Any, path: str) -> Any:
        if value == "all" or (isinstance(value, int) and not isinstance(value, bool)):
            return value
        if isinstance(value, list) and value and all(isinstance(i, int) and not isinstance(i, bool) for i in value):
            return list(value)
        if isinstance(value, dict) and len(value) == 1:
            (kind, n), = value.items()
            if kind in ("top", "bottom") and isinstance(n, int) and not isinstance(n, bool) and n >= 0:
                return dict(value)
            if kind == "top_frac" and isinstance(n, (int, float)) and not isinstance(n, bool) and 0 < n <= 1:
                return {kind: float(n)}
        raise Invalid(path, f"expected {LayerSpec.DESCRIPTION} (N >= 0, 0 < F <= 1), got {value!r}")


def resolve_layers(spec: Any, num_layers: int, where: str = "layers") -> List[int]:
    """A layer spec as sorted indices of an LLM with ``num_layers`` layers; out-of-range indices
    raise :class:`ConfigError` naming ``where``."""
    try:
        spec = LayerSpec.config_check("all" if spec is None else spec, where)
    except Invalid as e:
        raise ConfigError(str(e)) from None
    if spec == "all":
        return list(range(num_layers))
    if isinstance(spec, dict):
        (kind, n), = spec.items()
        if kind == "top_frac":
            kind, n = "top", max(1, round(float(n) * num_layers))
        if n > num_layers:
            raise ConfigError(f"{where}: {kind}: {n} is out of range for an LLM with {num_layers} layers")
        return list(range(num_layers - n, num_layers)) if kind == "top" else list(range(n))
    out = set()
    for i in [spec] if isinstance(spec, int) else spec:
        if not -num_layers <= i < num_layers:
            raise ConfigError(f"{where}: layer index {i} is out of range for an LLM with {num_layers} layers")
        out.add(i % num_layers)
    return sorted(out)


# ---------------------------------------------------------------------------------------------
# trainable spec
# ---------------------------------------------------------------------------------------------
@dataclass
class Lora:
    """LoRA adapters on the LLM's ``target_modules`` of the candidate ``layers`` (peft, B = 0)."""

    r: int = field(default=8, metadata={"min": 1})
    alpha: float = field(default=16.0, metadata={"gt": 0})
    dropout: float = field(default=0.05, metadata={"min": 0.0, "max": 0.99})
    target_modules: List[str] = field(default_factory=lambda: ["q_proj", "v_proj"])
    layers: LayerSpec = "all"  # type: ignore[assignment]

    def validate(self) -> None:
        if not self.target_modules:
            raise Invalid("target_modules", "expected at least one module name")

    def shape(self) -> Dict[str, Any]:
        """What fixes the adapters' parameters (everything but ``layers``)."""
        return {"r": self.r, "alpha": self.alpha, "dropout": self.dropout, "target_modules": list(self.target_modules)}


@dataclass
class EncoderTopK:
    """Train the top ``top_k`` encoder layers (and the final norm)."""

    top_k: int = field(metadata={"min": 0})


@dataclass
class LLMLora:
    """The LLM trains through LoRA only."""

    lora: Lora = field(default_factory=Lora)


@dataclass
class Trainable:
    """What trains in a stage; a module left out keeps its default."""

    encoder: Union[Mode, EncoderTopK] = "frozen"
    adapter: Mode = "full"
    llm: Union[Mode, LLMLora] = "frozen"

    @property
    def lora(self) -> Optional[Lora]:
        """The LoRA section when the LLM trains through LoRA."""
        return self.llm.lora if isinstance(self.llm, LLMLora) else None


def trainable(spec: Union[Trainable, Dict[str, Any]], where: str = "trainable spec") -> Trainable:
    """A :class:`Trainable` from a mapping (the one validator of trainable specs)."""
    return spec if isinstance(spec, Trainable) else config.parse(Trainable, spec, where, "trainable")


# ---------------------------------------------------------------------------------------------
# model config
# ---------------------------------------------------------------------------------------------
def _one_source(section: Any) -> None:
    if (section.path is None) == (section.arch is None):
        raise Invalid("", "needs exactly one of 'path' (pretrained: local dir or hub id) or 'arch' (config.json)")


@dataclass
class EncoderSection:
    """The Whisper encoder."""

    path: Optional[str] = None
    arch: Optional[str] = None
    pad_to_30s: bool = False
    gradient_checkpointing: bool = False
    dtype: Optional[Dtype] = None

    def validate(self) -> None:
        _one_source(self)


@dataclass
class LLMSection:
    """The causal LLM and its tokenizer (default: the one at ``path``)."""

    path: Optional[str] = None
    arch: Optional[str] = None
    tokenizer: Optional[str] = None
    dtype: Optional[Dtype] = None
    gradient_checkpointing: bool = False
    autocast: bool = True

    def validate(self) -> None:
        _one_source(self)


class AdapterSpec:
    """``{type: <registered adapter>, <its options>}`` (:mod:`partlib.models.adapter`)."""

    DESCRIPTION = "a mapping with 'type' and that adapter's options"

    @staticmethod
    def config_check(value: Any, path: str) -> Dict[str, Any]:
        return adapter_options(value, path)


@dataclass
class PromptSection:
    """Task prompts: system message, per-task instruction templates, end-of-turn token."""

    system: Optional[str] = None
    templates: Dict[str, str] = field(default_factory=dict)
    end_token: Optional[str] = None

    def validate(self) -> None:
        for name, template in self.templates.items():
            where = join("templates", name)
            try:
                tasks.check_template(tasks.get(name), template)
                template.format(src_lang="", tgt_lang="", text="", speech="")
            except ConfigError as e:
                raise Invalid(where, str(e)) from None
            except (KeyError, IndexError, ValueError, AttributeError) as e:
                raise Invalid(where, f"{template!r}: fields are {{src_lang}}, {{tgt_lang}}, {{text}}, "
                                     f"{{speech}} ({e!r})") from None


@dataclass
class ModelConfig:
    """A SpeechLLM: encoder -> adapter -> LLM, with prompts. ``lora`` is written by
    :func:`partlib.models.io.save_model` for a model that carries LoRA adapters."""

    encoder: EncoderSection
    llm: LLMSection
    adapter: AdapterSpec = field(default_factory=lambda: {"type": "stack"})  # type: ignore[assignment]
    prompt: PromptSection = field(default_factory=PromptSection)
    lora: Optional[Lora] = None

    def __post_init__(self) -> None:  # the default adapter section gets its options filled in too
        if isinstance(self.adapter, dict) and set(self.adapter) == {"type"}:
            self.adapter = adapter_options(self.adapter)


def model_config(cfg: Union[ModelConfig, Dict[str, Any]], where: str = "model config") -> ModelConfig:
    """A checked :class:`ModelConfig` from a mapping."""
    return cfg if isinstance(cfg, ModelConfig) else config.parse(ModelConfig, cfg, where)


def load_model_config(path: PathLike, overrides: Sequence[str] = ()) -> Dict[str, Any]:
    """A user's model YAML (``base:`` allowed), overridden and checked in full; returned resolved
    (every default filled in) as a plain mapping. The LoRA shape is refused here: it belongs to
    the schedules' ``trainable.llm.lora``."""
    raw = config.apply_overrides(config.load_file(path), overrides)
    if "lora" in raw:
        raise ConfigError(f"{path}: lora: the LoRA shape is part of a schedule's trainable spec "
                          f"(trainable.llm.lora), not of the model config")
    return config.to_dict(model_config(raw, str(path)))


__all__ = ["DTYPE_NAMES", "EncoderSection", "EncoderTopK", "LLMLora", "LLMSection", "LayerSpec", "Lora",
           "ModelConfig", "PromptSection", "Trainable", "load_model_config", "model_config", "resolve_layers",
           "trainable"]
