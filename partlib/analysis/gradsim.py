"""Gradient similarity between (task, language) groups of a stage model (the paper's Figure 3).

For one stage's model, with that stage's trainable spec applied, every group of a fixed probe set
(``n`` examples per (task, source language, target language) of the stage's task mixture, drawn by
a seeded hash from the analysis data dirs) gets the gradient of its mean per-token loss with
respect to the parameters the stage trains; the groups are compared by the cosine similarity of
these gradients. Definitions and how to read them: ``docs/analysis.md``.

- Loss: the model's own training forward (``SpeechLLM.forward``: summed target-token NLL), summed
  over the group and divided by the group's target tokens, as the trainer normalises a step.
- Deterministic: eval mode (no dropout), no SpecAugment.
- Parameters: those the stage's trainable spec sets trainable (``StageProbe.apply_trainable``, the
  trainer's own function); frozen parameters are left out. A LoRA stage contributes the gradient
  with respect to the weight matrices its LoRA adapts (target modules of the layers LoRA trains at
  some step of the stage), not LoRA's factors: the export merged them into those weights, and a
  fresh LoRA (B = 0) would give A a zero gradient and B a random projection of this one. Our choice;
  the paper does not say.

:func:`cosine_matrix` and :func:`summarize` are pure; :func:`stage_gradient_similarity` runs a model.
"""
from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch import nn

from partlib import tasks
from partlib.common import ConfigError, get_logger
from partlib.data.batching import collate
from partlib.data.datadir import DataDir
from partlib.data.examples import Example, TaskSpec, build_examples
from partlib.features.source import FeatureSource
from partlib.models.lora import lora_base_weights
from partlib.models.prompt import PromptLengths
from partlib.models.speech_llm import SpeechLLM

log = get_logger(__name__)
_GRAM_CHUNK = 1 << 22  # parameters per slice of the Gram product (bounds the float64 copy)


@dataclass(frozen=True)
class Group:
    """A probe group: one task, one source language and (cross-lingual tasks) one target language."""

    task: str
    src_lang: str
    tgt_lang: str

    @property
    def label(self) -> str:
        """``asr:de``, or ``s2tt:de->en`` for a cross-lingual task."""
        if tasks.get(self.task).cross_lingual:
            return f"{self.task}:{self.src_lang}->{self.tgt_lang}"
        return f"{self.task}:{self.src_lang}"


@dataclass
class StageProbe:
    """What the analysis needs of the stage that made a model: its name, its task mixture (the
    specs' task, languages and targets are applied to the analysis data dirs; their ``data``
    patterns are not used) and the function that sets what the stage trains on a model
    (``partlib.train.schedule.apply_stage_trainable`` bound to the stage)."""

    stage: str
    tasks: Sequence[TaskSpec]
    apply_trainable: Callable[[SpeechLLM], None]


# ------------------------------------------------------------------------------------------
# Pure part: cosine matrix and its summary
# ------------------------------------------------------------------------------------------
def gram(vectors: Union[torch.Tensor, np.ndarray]) -> np.ndarray:
    """``[G, G]`` float64 inner products of the rows of ``vectors [G, P]`` (summed over slices of P)."""
    v = torch.as_tensor(vectors)
    out = torch.zeros(v.shape[0], v.shape[0], dtype=torch.float64)
    for start in range(0, v.shape[1], _GRAM_CHUNK):
        part = v[:, start:start + _GRAM_CHUNK].to(torch.float64)
        out += (part @ part.T).cpu()
    return out.numpy()


def cosine_from_gram(g: np.ndarray) -> np.ndarray:
    """Cosine similarities from a Gram matrix: symmetric, unit diagonal, values clipped to [-1, 1];
    rows and columns of zero vectors are NaN (no direction)."""
    g = np.asarray(g, dtype=np.float64)
    norms = np.sqrt(np.clip(np.diag(g), 0.0, None))
    with np.errstate(divide="ignore", invalid="ignore"):
        c = g / np.outer(norms, norms)
    c = np.clip((c + c.T) / 2, -1.0, 1.0)
    c[norms == 0, :] = np.nan
    c[:, norms == 0] = np.nan
    np.fill_diagonal(c, np.where(norms > 0, 1.0, np.nan))
    return c


def cosine_matrix(vectors: Union[torch.Tensor, np.ndarray]) -> np.ndarray:
    """``[G, G]`` cosine similarities between the rows of ``vectors [G, P]``."""
    return cosine_from_gram(gram(vectors))


def _mean(values: List[float]) -> Optional[float]:
    values = [v for v in values if np.isfinite(v)]
    return float(np.mean(values)) if values else None


def summarize(groups: Sequence[Group], matrix: np.ndarray) -> Dict[str, object]:
    """Means of the off-diagonal cosines over kinds of group pairs (None where no pair exists):

    - ``cross_language_by_task``: ``{task: mean}`` over pairs of one task with different source
      languages (for ``asr`` the paper's observation: ASR gradients of different languages);
    - ``same_language_cross_task``: pairs of different tasks with the same source language;
    - ``cross_language``: all pairs with different source languages.
    """
    by_task: Dict[str, List[float]] = {}
    same_lang: List[float] = []
    cross_lang: List[float] = []
    for i, a in enumerate(groups):
        for j in range(i + 1, len(groups)):
            b, v = groups[j], float(matrix[i, j])
            if a.src_lang != b.src_lang:
                cross_lang.append(v)
                if a.task == b.task:
                    by_task.setdefault(a.task, []).append(v)
            elif a.task != b.task:
                same_lang.append(v)
    return {"cross_language_by_task": {t: _mean(v) for t, v in by_task.items()},
            "same_language_cross_task": _mean(same_lang), "cross_language": _mean(cross_lang)}


# ------------------------------------------------------------------------------------------
# Probe set
# ------------------------------------------------------------------------------------------
def probe_set(model: SpeechLLM, specs: Sequence[TaskSpec], dirs: Sequence[DataDir], n_per_group: int,
              seed: int = 0) -> Dict[Group, List[Example]]:
    """At most ``n_per_group`` examples per group of the stage's tasks over ``dirs`` (an example's
    ``dir_index`` indexes ``dirs``), groups in the order of the stage's tasks, then languages.

    A data dir that does not serve a task (no audio for a speech task, no ``text.<tgt>`` for a
    direction, none of the spec's languages) is skipped for it. Examples are ranked by a hash of
    the seed and their parallel-sentence id (``utt2sent``; the utterance id without it), so that
    the groups of different languages read the same sentences where the data is parallel.
    """
    count = PromptLengths(model.prompt)
    pool: Dict[Group, Dict[str, Example]] = {}
    for spec in specs:
        for i, d in enumerate(dirs):
            try:
                exs = build_examples(spec, [d], count, model.speech_embed_length, dir_offset=i)
            except ConfigError:
                continue
            for e in exs:
                pool.setdefault(Group(e.task, e.src_lang, e.tgt_lang), {})[e.key] = e

    def rank(e: Example) -> Tuple[str, str]:
        sent = (dirs[e.dir_index].utt2sent or {}).get(e.utt, e.utt)
        return hashlib.sha1(f"{seed}/{sent}".encode("utf-8")).hexdigest(), e.key

    task_order = {t: i for i, t in reversed(list(enumerate(s.task for s in specs)))}
    order = sorted(pool, key=lambda g: (task_order[g.task], g.src_lang, g.tgt_lang))
    return {g: sorted(pool[g].values(), key=rank)[:n_per_group] for g in order}


# ------------------------------------------------------------------------------------------
# Gradients
# ------------------------------------------------------------------------------------------
def gradient_params(model: SpeechLLM) -> List[Tuple[str, nn.Parameter]]:
    """The parameters whose gradient is taken, by name, once a stage's trainable spec is applied to
    ``model``: every trainable one, with LoRA's factors replaced by the weights they adapt in the
    active LoRA layers. Sets ``requires_grad`` to match (the model must be the analysis's own)."""
    active = set(model.lora_active_layers) if model.lora_config is not None else set()
    adapted = {id(p) for layer, ps in lora_base_weights(model.llm).items() if layer in active for p in ps}
    out = []
    for name, p in model.named_parameters():
        if "lora_" in name:
            p.requires_grad_(False)
            continue
        if id(p) in adapted:
            p.requires_grad_(True)
        if p.requires_grad:
            out.append((name, p))
    return out


def _module(name: str) -> str:
    """``encoder``, ``adapter`` or ``llm``: the part of the SpeechLLM a parameter belongs to."""
    return name.split(".", 1)[0]


@dataclass
class GroupGradient:
    """A group's mean per-token loss gradient, one flat float32 CPU vector per model part."""

    vectors: Dict[str, torch.Tensor]
    n_utts: int
    n_tokens: int
    loss: float  # mean per-token loss
    split_half: Optional[float]  # cosine between the gradients of the group's two halves


def group_gradient(model: SpeechLLM, examples: Sequence[Example], features: FeatureSource,
                   params: Sequence[Tuple[str, nn.Parameter]], batch_size: int = 8) -> GroupGradient:
    """Gradient of the group's summed target-token NLL divided by its target tokens, over
    ``params`` (batches of ``batch_size``, in order of length; the model must be in eval mode).
    The two halves of the group (first and second half of ``examples``) are also compared."""
    half = (len(examples) + 1) // 2
    sums: List[List[torch.Tensor]] = []
    n_tokens: List[int] = []
    loss = 0.0
    for part in (examples[:half], examples[half:]):
        if not part:
            continue
        acc = [torch.zeros(p.shape, dtype=torch.float32, device=p.device) for _, p in params]
        tokens = 0
        ordered = sorted(part, key=lambda e: (e.num_frames, e.n_tokens, e.key))
        for start in range(0, len(ordered), batch_size):
            chunk = ordered[start:start + batch_size]
            speech = tasks.get(chunk[0].task).speech
            feats = features.load([(e.dir_index, e.utt) for e in chunk]) if speech else None
            with torch.enable_grad():
                out = model(collate(chunk, feats))
                loss_sum = out["loss_sum"]
                # a loss that no trained parameter reaches (a text task, only the adapter trains): zero gradient
                grads = (torch.autograd.grad(loss_sum, [p for _, p in params], allow_unused=True)
                         if loss_sum.requires_grad else [None] * len(params))
            for a, g in zip(acc, grads):
                if g is not None:
                    a += g.float()
            tokens += int(out["n_tokens"])
            loss += float(loss_sum.detach())
        sums.append(acc)
        n_tokens.append(tokens)
    total = max(1, sum(n_tokens))
    flat = [torch.cat([a.flatten() for a in acc]).cpu() for acc in sums]
    split_half = float(cosine_matrix(torch.stack(flat))[0, 1]) if len(flat) == 2 else None
    vectors: Dict[str, torch.Tensor] = {}
    for m in dict.fromkeys(_module(n) for n, _ in params):
        parts = [torch.cat([a.flatten() for (n, _), a in zip(params, acc) if _module(n) == m]) for acc in sums]
        vectors[m] = (sum(parts) / total).cpu()
    return GroupGradient(vectors, len(examples), sum(n_tokens), loss / total, split_half)


def stage_gradient_similarity(model: SpeechLLM, probe: StageProbe, dirs: Sequence[DataDir], n_per_group: int,
                              *, seed: int = 0, batch_size: int = 8) -> Dict[str, object]:
    """The gradient similarity of a stage model (see the module docstring); ``model`` is changed
    (the stage's trainable spec is applied, LoRA adapters may be added) and left in eval mode.

    Returns ``{"stage", "utts_per_group", "n_params": {"all", <part>...}, "lora_layers", "groups",
    "group_stats": {label: {...}}, "matrix", "matrix_by_module", "summary", "summary_by_module"}``
    (docs/analysis.md), or ``{"skipped": reason}``.
    """
    start = time.time()
    probe.apply_trainable(model)
    model.eval()
    params = gradient_params(model)
    if not params:
        return {"skipped": f"stage {probe.stage} trains no parameter"}
    groups = probe_set(model, probe.tasks, dirs, n_per_group, seed)
    if not groups:
        return {"skipped": f"the analysis data serves none of the tasks of stage {probe.stage}"}
    features = FeatureSource(dirs, model.n_mels)
    grads = {g: group_gradient(model, exs, features, params, batch_size) for g, exs in groups.items()}
    modules = list(dict.fromkeys(_module(n) for n, _ in params))
    grams = {m: gram(torch.stack([grads[g].vectors[m] for g in groups])) for m in modules}
    total = sum(grams.values())
    keys = list(groups)
    matrices = {m: cosine_from_gram(grams[m]) for m in modules}
    matrix = cosine_from_gram(total)
    n_params = {m: sum(p.numel() for n, p in params if _module(n) == m) for m in modules}
    result = {
        "stage": probe.stage,
        "utts_per_group": n_per_group,
        "n_params": {"all": sum(n_params.values()), **n_params},
        "lora_layers": model.lora_active_layers if model.lora_config is not None else None,
        "groups": [g.label for g in keys],
        "group_stats": {g.label: {"task": g.task, "src_lang": g.src_lang, "tgt_lang": g.tgt_lang,
                                  "n_utts": grads[g].n_utts, "n_tokens": grads[g].n_tokens, "loss": grads[g].loss,
                                  "grad_norm": float(np.sqrt(total[i, i])), "split_half": grads[g].split_half}
                        for i, g in enumerate(keys)},
        "matrix": matrix.tolist(),
        "matrix_by_module": {m: c.tolist() for m, c in matrices.items()},
        "summary": summarize(keys, matrix),
        "summary_by_module": {m: summarize(keys, c) for m, c in matrices.items()},
    }
    log.info("gradient similarity of stage %s: %d groups x <= %d examples, %d parameters (%.1f s)", probe.stage,
             len(keys), n_per_group, result["n_params"]["all"], time.time() - start)
    return result
