"""The paper preset at its real width, on CPU: every alignment stage of the PART schedule trains for
real (bf16 LLM, forward, backward, optimizer, export) with 2 encoder and 2 LLM layers; and the
full-depth model, built on the meta device, has the FSDP units and LoRA targets the schedule needs.

On a CPU without native bf16 arithmetic (no AVX-512: PyTorch's bf16 matrix product of a backward
pass, grad @ W, runs there about 25 times slower than in float32, minutes per step at this width)
the same model trains in float32, and the memory budget grows by the two extra bytes of every LLM
parameter.

Every export holds the whole LLM (5.8 GB in float32 at this width), so the stages run one process
each, each from the previous one's export, and an export is deleted once the next stage has
exported: the test never holds more than two (it held five, 34 GB, when one process trained them all)."""
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from partlib import config
from partlib.data.datadir import DataDir
from partlib.models.builders import CONFIG_DIR, build_tiny_tokenizer
from train_fixtures import SENTENCES, speech_data

REPO = Path(__file__).resolve().parents[1]
CONF = REPO / "egs" / "TEMPLATE" / "part1" / "conf"
GIB = 2 ** 30


def _arch(name: str, tmp: Path, **overrides) -> str:
    cfg = json.loads((CONFIG_DIR / name).read_text())
    cfg.update(overrides)
    path = tmp / name
    path.write_text(json.dumps(cfg))
    return str(path)


def _native_bf16() -> bool:
    """Whether this CPU multiplies bf16 matrices natively (oneDNN's bf16 kernels need AVX-512)."""
    import torch

    return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def _paper_model_config(tmp: Path, encoder_layers: int, llm_layers: int) -> dict:
    """conf/model.yaml (the recipes' paper model) with random weights of fewer layers."""
    cfg = config.load_file(CONF / "model.yaml")
    cfg["encoder"].pop("path")
    cfg["encoder"]["arch"] = _arch("whisper-large-v3.json", tmp, encoder_layers=encoder_layers)
    cfg["llm"].pop("path")
    cfg["llm"]["arch"] = _arch("qwen2.5-7b.json", tmp, num_hidden_layers=llm_layers,
                               max_window_layers=llm_layers)
    build_tiny_tokenizer(tmp / "tokenizer")
    cfg["llm"]["tokenizer"] = str(tmp / "tokenizer")
    return cfg


def _schedule() -> dict:
    """conf/schedule_part.yaml's stages and trainable specs on the test data: one step each, two in
    the stage whose LoRA layers switch on during it (the encoder's top 8 layers: the top one of the
    2 here)."""
    sched = config.load_file(CONF / "schedule_part.yaml")
    for stage in sched["stages"]:
        stage["max_steps"] = 1
        if isinstance(stage.get("trainable", {}).get("encoder"), dict):
            stage["trainable"]["encoder"] = {"top_k": 1}
        if "activation" in stage:  # the top LLM layer first, then both: dynamic activation within the run
            stage["max_steps"] = 2
            stage["activation"] = [{"step": 0, "layers": {"top_frac": 0.5}}, {"step": 1, "layers": "all"}]
    sched["defaults"].update(batch={"max_frames": 600, "max_tokens": 2000, "max_utts": 4}, log_interval=1,
                             save_interval=2, accum_grad=1,
                             dev={"data": []})  # training steps and exports, not generation
    return sched


@pytest.mark.slow
def test_every_stage_trains_at_paper_width_within_the_memory_budget(tmp_path):
    speech_data(tmp_path, n_train=4, n_dev=2, n_mels=128)
    for lang, other in (("en", "de"), ("de", "en")):  # text-only dirs for the text stage's tasks
        utts = [f"t{lang}-{i}" for i in range(4)]
        DataDir({u: f"t{lang}" for u in utts}, text={u: SENTENCES[lang][i] for i, u in enumerate(utts)},
                utt2lang={u: lang for u in utts},
                translations={other: {u: SENTENCES[other][i] for i, u in enumerate(utts)}}).write(
            tmp_path / "data" / f"text_train_{lang}")
    model_cfg = _paper_model_config(tmp_path, 2, 2)
    budget = 6 * GIB
    if not _native_bf16():
        from partlib.models.speech_llm import SpeechLLM

        model_cfg["llm"]["dtype"] = "float32"
        llm = SpeechLLM.from_config(model_cfg, device="meta").llm
        budget += 2 * sum(p.numel() for p in llm.parameters())
    (tmp_path / "model.yaml").write_text(yaml.safe_dump(model_cfg))
    sched = _schedule()
    code = ("import resource, sys\nfrom partlib.bin import train\nrc = train.main(sys.argv[1:])\n"
            "print('MAXRSS_KB', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)\nsys.exit(rc)\n")
    previous = None  # the previous stage's experiment folder
    try:
        for stage in sched["stages"]:
            name = stage["name"]
            if previous is not None:
                stage["init_from"] = str(previous / previous.name[len("exp_"):] / "model")
            (tmp_path / f"{name}.yaml").write_text(yaml.safe_dump({**sched, "stages": [stage]}))
            res = subprocess.run([sys.executable, "-c", code, "--schedule", f"{name}.yaml", "--model-config",
                                  "model.yaml", "--data-root", "data", "--exp-dir", f"exp_{name}", "--threads", "2",
                                  "--no-tensorboard"], cwd=tmp_path, capture_output=True, text=True)
            assert res.returncode == 0, (name, res.stderr[-4000:])
            peak = int(res.stdout.split("MAXRSS_KB")[1].split()[0]) * 1024
            assert peak < budget, f"{name}: peak RSS {peak / GIB:.2f} GiB, budget {budget / GIB:.2f} GiB"
            assert (tmp_path / f"exp_{name}" / name / "model" / "done").is_file()
            losses = [float(line.split("loss ")[1].split(",")[0]) for line in res.stderr.splitlines()
                      if f"stage {name} step " in line and "loss " in line and "dev" not in line]
            assert len(losses) == (2 if name == "s3_joint_lora" else 1) and all(0 < v < 100 for v in losses), \
                (name, losses)
            if name == "s3_joint_lora":
                assert "stage s3_joint_lora step 0: LoRA active on LLM layers [1]" in res.stderr
                assert "stage s3_joint_lora step 1: LoRA active on LLM layers [0, 1]" in res.stderr
            if previous is not None:
                shutil.rmtree(previous)
            previous = tmp_path / f"exp_{name}"
        assert [s["name"] for s in sched["stages"]] == ["s1_adapter", "s2a_enc_top8", "s2b_enc_all",
                                                        "s3_joint_lora", "s4_text"]
        # the real widths were trained: 128 mel bins, 1280-wide encoder, 3584-wide LLM with 4 KV heads
        saved = json.loads((previous / "s4_text" / "model" / "llm" / "config.json").read_text())
        assert (saved["hidden_size"], saved["num_key_value_heads"], saved["vocab_size"]) == (3584, 4, 152064)
    finally:  # pytest keeps the temporary folders of its last three runs: leave no weights there
        for exp in tmp_path.glob("exp_*"):
            shutil.rmtree(exp, ignore_errors=True)


def test_full_depth_on_meta_has_the_fsdp_units_and_lora_targets(tmp_path):
    import torch
    from peft.tuners.lora import LoraLayer

    from partlib.models.lora import unwrap
    from partlib.models.speech_llm import SpeechLLM
    from partlib.train.schedule import parse_schedule

    model = SpeechLLM.from_config(_paper_model_config(tmp_path, 32, 28), device="meta")
    units = model.shard_units()
    assert [type(u).__name__ for u in units] == ["WhisperEncoderLayer"] * 32 + ["Qwen2DecoderLayer"] * 28
    sched = parse_schedule(config.load_file(CONF / "schedule_part.yaml"))
    lora_stage = next(s for s in sched.stages if s.name == "s3_joint_lora")
    model.apply_trainable(lora_stage.trainable)
    layers = unwrap(model.llm).model.layers
    spec = lora_stage.trainable.llm.lora
    for i, layer in enumerate(layers):
        wrapped = {name.rsplit(".", 1)[-1] for name, m in layer.named_modules() if isinstance(m, LoraLayer)}
        assert wrapped == set(spec.target_modules), (i, wrapped)
        assert layer.self_attn.q_proj.lora_A["default"].weight.shape == (spec.r, 3584)
        assert layer.self_attn.k_proj.lora_B["default"].weight.shape == (512, spec.r)  # 4 KV heads x 128
    assert all(p.device == torch.device("meta") for p in model.parameters())
    assert model.encoder.n_mels == 128 and model.encoder.d_model == 1280
