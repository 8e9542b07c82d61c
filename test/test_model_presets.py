"""The PART-2B and PART-8B model presets: the bundled architecture configs against the published
model sizes, the presets built offline on the meta device, and the memory plan of every stage of
every TEMPLATE schedule preset for both sizes."""
import json
from pathlib import Path

import pytest
import torch
from transformers import Qwen2Config, Qwen2ForCausalLM, WhisperConfig
from transformers.models.whisper.modeling_whisper import WhisperEncoder

from partlib.models.builders import CONFIG_DIR
from partlib.models.schema import load_model_config
from partlib.train import memory
from partlib.train.schedule import load_schedule

REPO = Path(__file__).resolve().parents[1]
CONF = REPO / "egs" / "TEMPLATE" / "part1" / "conf"
PRESETS = {"model_part2b.yaml": ("Qwen/Qwen2.5-1.5B", "qwen2.5-1.5b.json"),
           "model_part8b.yaml": ("Qwen/Qwen2.5-7B", "qwen2.5-7b.json")}
SCHEDULES = ["part", "part_3stage", "part_asr", "baseline_2stage", "ablation_1", "ablation_2", "ablation_3",
             "joint_lora"]


def _hf_config(name: str) -> dict:
    cfg = json.loads((CONFIG_DIR / name).read_text())
    cfg.pop("model_type")
    cfg.pop("architectures", None)
    return cfg


def _meta_llm(name: str) -> Qwen2ForCausalLM:
    """The LLM of a bundled config.json, built by transformers alone (not by partlib)."""
    with torch.device("meta"):
        return Qwen2ForCausalLM(Qwen2Config(**_hf_config(name)))


# Qwen2.5 model cards: parameters in all / without the embeddings (input and, untied, output)
@pytest.mark.parametrize("name, billions, non_embedding, tied", [
    ("qwen2.5-1.5b.json", 1.54, 1.31, True),
    ("qwen2.5-7b.json", 7.62, 6.53, False),
    ("qwen2.5-7b-instruct.json", 7.62, 6.53, False),
])
def test_bundled_llm_configs_have_the_published_sizes(name, billions, non_embedding, tied):
    llm = _meta_llm(name)
    total = sum(p.numel() for p in llm.parameters())  # a tied matrix is one parameter
    inp, out = llm.get_input_embeddings().weight, llm.get_output_embeddings().weight
    assert (inp is out) == tied
    embeddings = inp.numel() + (0 if tied else out.numel())
    assert round(total / 1e9, 2) == billions and round((total - embeddings) / 1e9, 2) == non_embedding
    assert llm.config.num_hidden_layers == 28


def test_bundled_whisper_large_v3_encoder_size():
    with torch.device("meta"):
        enc = WhisperEncoder(WhisperConfig(**_hf_config("whisper-large-v3.json")))
    weights = sum(p.numel() for p in enc.parameters()) - enc.embed_positions.weight.numel()
    assert round(weights / 1e6) == 635 and enc.config.num_mel_bins == 128


@pytest.mark.parametrize("preset", list(PRESETS))
def test_model_presets_build_offline_on_meta(preset):
    hub_id, arch = PRESETS[preset]
    cfg = load_model_config(CONF / preset)
    assert cfg["llm"]["path"] == hub_id and cfg["encoder"]["path"] == "openai/whisper-large-v3"
    assert cfg["adapter"]["type"] == "transformer" and cfg["llm"]["dtype"] == "bfloat16"
    model = memory.meta_model(cfg)  # hub ids -> bundled architectures: no weights, no download
    assert all(p.is_meta for p in model.parameters())
    reference = _meta_llm(arch)
    assert sum(p.numel() for p in model.llm.parameters()) == sum(p.numel() for p in reference.parameters())
    assert model.adapter.out.out_features == reference.config.hidden_size
    # 10 s = 1000 frames -> 500 Whisper states -> 125 embeddings at the adapter's stride 4
    assert model.speech_embed_length(1000) == 125


def test_recipes_default_model_is_part8b():
    part8b = load_model_config(CONF / "model_part8b.yaml")
    confs = [p for p in REPO.glob("egs/*/part1/conf/model.yaml") if "mini_synth" not in str(p)]
    assert len(confs) == 6 and CONF / "model.yaml" in confs  # TEMPLATE and the five corpus recipes
    for path in confs:
        assert load_model_config(path) == part8b, path
    part2b = load_model_config(CONF / "model_part2b.yaml")
    assert {k: v for k, v in part2b.items() if k != "llm"} == {k: v for k, v in part8b.items() if k != "llm"}


@pytest.mark.slow
def test_every_stage_of_every_preset_is_planned_for_both_sizes(tmp_path):
    """python -m partlib.bin.plan on all TEMPLATE presets at paper-scale batches, 1 and 8 GPUs."""
    from partlib.bin import plan

    expected = {(s, stage.name) for s in SCHEDULES for stage in load_schedule(CONF / f"schedule_{s}.yaml").stages}
    for preset, (_, arch) in PRESETS.items():
        out = tmp_path / f"{preset}.json"
        args = ["--model-config", str(CONF / preset), "--merge", str(CONF / "paper_scale.yaml"), "--gpus", "1", "8",
                "--strategy", "fsdp", "--format", "json", "--output", str(out)]
        for s in SCHEDULES:
            args += ["--schedule", str(CONF / f"schedule_{s}.yaml")]
        assert plan.main(args) == 0
        records = json.loads(out.read_text())
        llm_params = sum(p.numel() for p in _meta_llm(arch).parameters())
        by_gpus = {g: {(r["schedule"], r["stage"]): r for r in records if r["gpus"] == g} for g in (1, 8)}
        assert set(by_gpus[1]) == set(by_gpus[8]) == expected and len(records) == 2 * len(expected)
        for s in SCHEDULES:
            for stage in load_schedule(CONF / f"schedule_{s}.yaml").stages:
                one, eight = by_gpus[1][(s, stage.name)], by_gpus[8][(s, stage.name)]
                params = one["parameters"]
                assert params["llm"]["total"] == llm_params and params["llm"]["trainable"] == 0
                assert (params.get("lora", {}).get("trainable", 0) > 0) == (stage.lora is not None), stage.name
                enc = params["encoder"]
                if stage.trainable.encoder == "frozen":
                    assert enc["trainable"] == 0
                elif stage.trainable.encoder == "full":
                    assert enc["trainable"] > 0.99 * enc["total"]
                else:  # the top 8 of 32 layers
                    assert 0.24 < enc["trainable"] / enc["total"] < 0.26
                for name in ("on", "off"):  # FSDP shards over 8 GPUs, each with an 8th of the batch
                    assert eight["checkpointing"][name]["peak"] < one["checkpointing"][name]["peak"]
                # the paper-scale batches are laid out for 8 x 80 GB with gradient checkpointing
                assert eight["judged"] == "on" and eight["checkpointing"]["on"]["fits"], (preset, s, stage.name)
