"""Dev evaluation of an alignment stage: the dev loss and a greedy decode scored by the tasks'
quick metrics, split across ranks under ``ddp``; the metric enters the checkpoint manager's
best-N list (``best.json``, written by rank 0) and counts towards early stopping."""
from __future__ import annotations

from typing import Any, Dict, List, Optional

import torch

from partlib import tasks
from partlib.common import ConfigError, get_logger
from partlib.data.batching import collate
from partlib.data.examples import Example
from partlib.scoring import scorers
from partlib.train import distributed as dist_utils
from partlib.train import fsdp
from partlib.train.checkpoint import CheckpointManager
from partlib.train.distributed import DistContext
from partlib.train.loader import move_batch
from partlib.train.schedule import StageConfig
from partlib.train.stage_data import StageData

logger = get_logger("partlib.train")
DEV_BATCH = 16  # dev examples per forward / generate batch


def higher_is_better(metric: str) -> bool:
    """Whether a larger value of a ``dev.metric`` is better: the dev loss is not; a decoded metric
    goes the way its scorer says (:func:`partlib.scoring.scorers.higher_is_better`)."""
    return False if metric == "loss" else scorers.higher_is_better(metric)


def due(stage: StageConfig, data: StageData, step: int) -> bool:
    """Whether the dev set is evaluated after ``step``: every ``dev.interval`` steps and at the end."""
    interval = stage.dev.interval
    return bool(data.dev_examples) and (bool(interval and step % interval == 0) or step == stage.max_steps)


@torch.no_grad()
def evaluate(model, data: StageData, stage: StageConfig, step: int, ctx: DistContext, device: torch.device,
             sharded: bool, writer=None) -> float:
    """Dev loss over the dev subset, and a greedy decode (the decoding path,
    :func:`partlib.infer.decode.generate_hyps`) of the tasks with a dev metric (WER for asr,
    BLEU for s2tt, accuracy for lid: ``partlib.tasks``), scored by :func:`quick_scores`.

    Under ``ddp`` each rank evaluates every W-th example and the loss sums and hypotheses are
    gathered, so every rank returns the metric of the whole dev subset. Under ``fsdp``
    (``sharded``) every rank evaluates all of it: each layer's forward is a collective, which needs
    the same calls (and generated lengths) on every rank.

    Returns the value of ``dev.metric`` (lower is better for loss/wer, higher for bleu/accuracy).
    """
    from partlib.infer.decode import generate_hyps
    from partlib.train.quick_eval import quick_scores

    model.eval()
    exs = data.dev_examples
    split = not sharded and ctx.world_size > 1
    tot_loss = tot_tok = 0.0
    by_kind: Dict[bool, List[Example]] = {}
    for e in exs[ctx.rank::ctx.world_size] if split else exs:
        by_kind.setdefault(tasks.get(e.task).speech, []).append(e)
    for speech, part in by_kind.items():
        for i in range(0, len(part), DEV_BATCH):
            chunk = part[i:i + DEV_BATCH]
            feats = data.features.load([(e.dir_index, e.utt) for e in chunk]) if speech else None
            out = model(move_batch(collate(chunk, feats), device))
            tot_loss += float(out["loss_sum"])
            tot_tok += float(out["n_tokens"])
    hyps: Dict[str, str] = {}
    with fsdp.unsharded_root(model):  # generate bypasses the root forward
        for part in by_kind.values():
            scored = [e for e in part if tasks.get(e.task).dev_metric]
            hyps.update(generate_hyps(model, scored, data.features, batch_size=DEV_BATCH).hyps)
    model.train()
    if split:
        sums = dist_utils.all_reduce_(torch.tensor([tot_loss, tot_tok], dtype=torch.float64, device=device))
        tot_loss, tot_tok = float(sums[0]), float(sums[1])
        for part in dist_utils.all_gather_object(hyps):
            hyps.update(part)
    scores = quick_scores(exs, hyps)
    scores["loss"] = tot_loss / max(1.0, tot_tok)
    msg = ", ".join(f"{k} {v:.4g}" for k, v in sorted(scores.items()))
    if ctx.is_main:
        logger.info("stage %s step %d: dev %s", stage.name, step, msg)
    if writer is not None:
        for k, v in scores.items():
            writer.add_scalar(f"dev/{k}", v, step)
    metric = stage.dev.metric
    if metric not in scores:
        raise ConfigError(f"stage {stage.name}: dev.metric {metric!r} needs dev examples of the matching task")
    return float(scores[metric])


def record(ckpts: CheckpointManager, stats: Dict[str, Any], metric: float, step: int) -> None:
    """Enter ``metric`` of ``step`` into the best-N list (``best.json`` on the writing rank) and
    count the evaluations since the best one in ``stats["evals_since_best"]`` (checkpointed)."""
    ckpts.record_metric(metric, step)
    best = ckpts.best()
    stats["evals_since_best"] = 0 if best and best[0][1] == step else stats.get("evals_since_best", 0) + 1


def patience_exhausted(stage: StageConfig, stats: Dict[str, Any]) -> bool:
    """Whether early stopping ends the stage: ``dev.patience`` evaluations without improvement."""
    return bool(stage.dev.patience) and stats.get("evals_since_best", 0) >= stage.dev.patience


def maybe_evaluate(model, data: StageData, stage: StageConfig, step: int, ctx: DistContext, device: torch.device,
                   sharded: bool, ckpts: CheckpointManager, stats: Dict[str, Any], writer=None) -> Optional[float]:
    """The dev metric after ``step`` when an evaluation is :func:`due` (recorded), else None."""
    if not due(stage, data, step):
        return None
    metric = evaluate(model, data, stage, step, ctx, device, sharded, writer)
    record(ckpts, stats, metric, step)
    return metric
