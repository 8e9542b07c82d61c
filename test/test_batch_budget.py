"""One global batch budget: ``batch.max_frames / max_tokens / max_utts`` bound a micro-batch summed
over all ranks, in memory and streamed from shards (two gloo processes); the in-memory global
batches do not depend on the number of ranks; the memory planner's per-GPU batch is the largest a
rank gets."""
import os
from itertools import zip_longest
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import yaml

from train_fixtures import audio_data, audio_dir, spawn_ranks

BUDGET = {"max_frames": 300, "max_tokens": 500, "max_utts": 4}
MICRO_BATCHES = 12  # 4 optimizer steps of accum_grad 3
PATHS = ("on_the_fly", "shards")  # in memory (features computed on the fly) and streamed


def _schedule(budget: dict, task_names=("asr", "s2tt", "t2tt")) -> dict:
    return {"seed": 5, "stages": [{
        "name": "s", "max_steps": MICRO_BATCHES // 3, "accum_grad": 3, "batch": budget, "sampling": {"window": 9},
        "tasks": [{"task": t, "data": ["train_*"]} for t in task_names],
        "trainable": {"encoder": "full", "adapter": "full", "llm": "frozen"}}]}


def _stage(root: Path, features: str, world_size: int, sched: dict):
    from partlib.models.speech_llm import SpeechLLM
    from partlib.train.schedule import parse_schedule
    from partlib.train.stage_data import make_stage_data

    model = SpeechLLM.from_config(yaml.safe_load((root / "model.yaml").read_text()))
    stage = parse_schedule(sched).stages[0]
    return make_stage_data(stage, model, str(root / "data"), 5, features, world_size), model


def _measure(model, batch: dict) -> dict:
    """Keys, loss weight, and the padded sizes of a rank's collated batch as the model sees it: rows,
    rows x feature frames, rows x the prompt builder's padded sequence length."""
    from partlib.train.memory import batch_shape

    shape = batch_shape(model, batch)
    return {"keys": batch["keys"], "weight": batch["loss_weight"], "utts": shape.rows,
            "frames": shape.rows * shape.frames, "tokens": shape.rows * shape.tokens, "targets": shape.targets}


def _micro_batches(root: Path, features: str, rank: int, world_size: int, sched: dict) -> list:
    """This rank's first micro-batches, from the loaders the trainer builds."""
    from partlib.train.loader import BatchDataset, StreamDataset

    data, model = _stage(root, features, world_size, sched)
    if data.streaming:
        batches = iter(StreamDataset(data.plan, model.n_mels, rank, world_size, 0, 0, MICRO_BATCHES))
    else:
        dataset = BatchDataset(data.sampler, data.features, rank, world_size)
        batches = (dataset[m] for m in range(MICRO_BATCHES))
    return [_measure(model, b) for b in batches]


def _rank(rank: int, port: int, out, root: Path) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE="2",
                      LOCAL_RANK=str(rank), PART_DEVICE="cpu")
    torch.set_num_threads(1)
    from partlib.train import distributed as dist_utils

    ctx = dist_utils.init()  # as the trainer starts
    try:
        mine = {f: _micro_batches(root, f, ctx.rank, ctx.world_size, _schedule(BUDGET)) for f in PATHS}
        everyone = [None] * ctx.world_size
        dist.all_gather_object(everyone, mine)
        if ctx.rank == 0:
            out.put(everyone)
    finally:
        dist.destroy_process_group()



@pytest.fixture(scope="module")
def root(tmp_path_factory):
    from partlib.data import shards
    from partlib.models.builders import tiny_model_config

    root = tmp_path_factory.mktemp("budget")
    audio_data(root / "data", n_train=24, n_dev=2)
    for lang in ("en", "de"):
        shards.export(root / "data" / f"train_{lang}", opts=shards.ExportOptions(shard_utts=10))
    (root / "model.yaml").write_text(yaml.safe_dump(tiny_model_config(root / "models", lora=False)))
    return root


def test_two_ranks_stay_within_the_global_budget_and_memory_batches_match_one_rank(root):
    (ranks,) = spawn_ranks(_rank, root, results=1, timeout=300)
    for features in PATHS:
        bound = {"utts": 0, "frames": 0, "tokens": 0}
        for m in range(MICRO_BATCHES):
            # a weightless stand-in (a rank whose slice of a small global batch is empty) is no part of it
            parts = [r[features][m] for r in ranks if r[features][m]["weight"]]
            assert parts, (features, m)
            for k in bound:
                total = sum(p[k] for p in parts)
                assert total <= BUDGET[f"max_{k}"], f"{features} micro-batch {m}: {total} {k} over 2 ranks"
                bound[k] = max(bound[k], total / BUDGET[f"max_{k}"])
        # the budget is used, not only respected: each bound is approached somewhere
        assert min(bound.values()) > 0.4, (features, bound)
    # in memory, the two ranks' slices interleave into the global batches a single process draws
    one = _micro_batches(root, "on_the_fly", 0, 1, _schedule(BUDGET))
    for m, single in enumerate(one):
        a, b = (r["on_the_fly"][m]["keys"] if r["on_the_fly"][m]["weight"] else [] for r in ranks)
        assert [k for pair in zip_longest(a, b) for k in pair if k is not None] == single["keys"], m
    # streamed, a single rank's batches use the whole budget, each of two ranks' at most half of it
    stream_one = _micro_batches(root, "shards", 0, 1, _schedule(BUDGET))
    assert max(x["frames"] for x in stream_one) > BUDGET["max_frames"] // 2
    assert max(r["shards"][m]["frames"] for r in ranks for m in range(MICRO_BATCHES)) <= BUDGET["max_frames"] // 2


def test_the_planners_per_gpu_batch_is_the_largest_rank_batch(root, tmp_path):
    """Equal utterances (0.4 s, one sentence): the planner's per-GPU batch at utt_seconds=0.4 has the
    rows and padded frames of the largest in-memory slice, and its sequences the same prompt and
    speech span (counted by the model's own prompt builder; the target's length is the planner's
    rate, not the sentence's); streamed batches are no larger."""
    import numpy as np

    from partlib.data import shards
    from partlib.train import memory
    from partlib.train.loader import BatchDataset, StreamDataset

    same = tmp_path / "data"
    audio_dir(same / "train_en", "en", range(0, 6 * 10, 6), "de", np.random.default_rng(0))
    shards.export(same / "train_en", opts=shards.ExportOptions(shard_utts=5))
    (tmp_path / "model.yaml").write_text((root / "model.yaml").read_text())
    budget = {"max_frames": 200, "max_tokens": 100000, "max_utts": 256}  # global batches of 5 x 40 frames
    sched = _schedule(budget, ("asr",))
    sched["stages"][0]["tasks"][0]["langs"] = ["en"]  # the planner's longest prompt is then the data's
    data, model = _stage(tmp_path, "on_the_fly", 2, sched)
    real = [_measure(model, BatchDataset(data.sampler, data.features, rank, 2)[m]) for rank in (0, 1) for m in range(4)]
    assert sorted({r["utts"] for r in real}) == [2, 3]  # 5 per global micro-batch: 3 and 2
    streamed, _ = _stage(tmp_path, "shards", 2, sched)
    stream = [_measure(model, b) for rank in (0, 1)
              for b in StreamDataset(streamed.plan, model.n_mels, rank, 2, 0, 0, 4)]

    meta = memory.meta_model(yaml.safe_load((tmp_path / "model.yaml").read_text()))
    (shape,) = memory.budget_shapes(data.stage, meta, gpus=2, utt_seconds=0.4)
    largest = max(real, key=lambda r: r["utts"])
    assert (shape.rows, shape.rows * shape.frames) == (largest["utts"], largest["frames"]) == (3, 120)
    # a real row's labels are its target's tokens and end of turn; the planner's are its text only
    assert shape.tokens - shape.targets // shape.rows == (largest["tokens"] - largest["targets"]) // 3 + 1
    for r in stream:
        assert r["utts"] <= shape.rows and r["frames"] <= shape.rows * shape.frames
        assert r["tokens"] <= shape.rows * shape.tokens

