"""The memory planner: its activation probe against what a real CPU forward keeps for backward,
its predicted peak against the measured peak RSS of real training steps, and the CLI (paper
presets, --check, --train-args, the recipe's check before GPU training)."""
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from torch import nn

from partlib import config
from partlib.bin import plan
from partlib.models.builders import CONFIG_DIR, build_tiny_tokenizer
from partlib.models.speech_llm import SpeechLLM
from partlib.train import memory
from partlib.train.schedule import frozen_encoder_warnings, parse_schedule

REPO = Path(__file__).resolve().parents[1]
CV = REPO / "egs" / "commonvoice15" / "part1" / "conf"
sys.path.insert(0, str(REPO / "bench"))
import memory_plan  # noqa: E402

LORA = {"lora": {"r": 4, "alpha": 8, "dropout": 0.0, "target_modules": ["q_proj", "v_proj"], "layers": "all"}}
SPECS = {"frozen": "frozen", "lora": LORA, "full": "full"}


def _arch(tmp: Path, name: str, **overrides) -> str:
    cfg = json.loads((CONFIG_DIR / name).read_text())
    cfg.update(overrides)
    path = tmp / f"{name}.{len(overrides)}.json"
    path.write_text(json.dumps(cfg))
    return str(path)


def _small_config(tmp: Path, llm_dtype: str = "float32") -> dict:
    """Real widths of whisper-base / Qwen2.5-0.5B, two layers each, a small vocabulary."""
    build_tiny_tokenizer(tmp / "tok")
    return {"encoder": {"arch": _arch(tmp, "whisper-base.json", encoder_layers=2)},
            "adapter": {"type": "stack", "stack": 4, "hidden": 256},
            "llm": {"arch": _arch(tmp, "qwen2.5-0.5b-instruct.json", num_hidden_layers=2, max_window_layers=2,
                                  vocab_size=2048),
                    "dtype": llm_dtype, "tokenizer": str(tmp / "tok")},
            "prompt": {"system": None}}


def _saved_by_real_forward(model, batch) -> int:
    """Bytes autograd keeps in a real forward: distinct storages, parameters and buffers excluded
    (counted here by data pointer, independently of the planner's probe)."""
    own = {t.untyped_storage().data_ptr() for t in [*model.parameters(), *model.buffers()]}
    seen = {}

    def pack(t):
        s = t.untyped_storage()
        if s.data_ptr() not in own:
            seen[s.data_ptr()] = s.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = model(batch)
    out["loss_sum"].backward()
    return sum(seen.values())


@pytest.mark.parametrize("spec", list(SPECS))
@pytest.mark.parametrize("llm_dtype", ["float32", "bfloat16"])
def test_probe_counts_what_a_real_forward_keeps(tmp_path, spec, llm_dtype):
    cfg = _small_config(tmp_path, llm_dtype)
    torch.manual_seed(0)
    real = SpeechLLM.from_config(cfg)
    real.apply_trainable({"encoder": "full", "adapter": "full", "llm": SPECS[spec]})
    real.train()
    batch = memory_plan.make_batch(3, 400, real.n_mels)
    measured = _saved_by_real_forward(real, batch)
    shape = memory.batch_shape(real, batch)
    assert (shape.rows, shape.frames) == (3, 400) and shape.tokens > real.speech_embed_length(400) > 0
    meta = memory.meta_model(cfg)
    meta.apply_trainable({"encoder": "full", "adapter": "full", "llm": SPECS[spec]})
    probed = memory.probe_activations(meta, shape)
    assert probed.saved["encoder"] > 0 and probed.saved["llm"] > 0
    assert sum(probed.saved.values()) == pytest.approx(measured, rel=0.03)


def test_probe_follows_the_trainable_spec_and_scales_with_rows(tmp_path):
    model = memory.meta_model(_small_config(tmp_path))
    shape = memory.BatchShape("asr", 1, 500, 120, 20)
    saved = {}
    for spec in SPECS:
        model.apply_trainable({"encoder": "full", "adapter": "full", "llm": SPECS[spec]})
        saved[spec] = sum(memory.probe_activations(model, shape).saved.values())
    assert saved["frozen"] < saved["lora"] < saved["full"]  # a frozen linear keeps no input
    model.apply_trainable({"encoder": "frozen", "adapter": "full", "llm": "frozen"})
    assert memory.probe_activations(model, shape).saved["encoder"] == 0  # no gradient reaches it
    model.apply_trainable({"encoder": "full", "adapter": "full", "llm": "full"})
    one = memory.probe_activations(model, shape)
    five = memory.probe_activations(model, shape.scaled(5))
    assert sum(five.saved.values()) == pytest.approx(sum(one.times(5).saved.values()), abs=64)
    assert one.total(("encoder", "llm")) < one.total()  # checkpointing keeps less


def test_checkpointing_keeps_layer_inputs_and_one_recomputed_layer():
    """Hand-counted: 415 bytes kept without checkpointing; a checkpointed part keeps its layers'
    inputs instead of their tensors, and backward recomputes the largest layer once."""
    acts = memory.Activations(saved={"encoder": 100, "adapter": 10, "llm": 300, "loss": 5},
                              layers={"encoder": 80, "llm": 240}, layer_inputs={"encoder": 8, "llm": 24},
                              largest_layer=60)
    assert acts.total() == 415
    # the LLM keeps 300 - 240 + 24 = 84 of its 300; the encoder 100 - 80 + 8 = 28 of its 100
    assert acts.total(("llm",)) == 100 + 10 + 84 + 5 + 60 == 259
    assert acts.total(("encoder", "llm")) == 28 + 10 + 84 + 5 + 60 == 187
    assert acts.times(3).total(("encoder", "llm")) == 3 * 187


def test_parameter_counts_are_the_real_models(tmp_path):
    cfg = _small_config(tmp_path)
    real = SpeechLLM.from_config(cfg)
    meta = memory.meta_model(cfg)
    for model in (real, meta):
        model.apply_trainable({"encoder": "full", "adapter": "full", "llm": LORA})
    counts = memory.param_counts(meta)
    assert counts.total["encoder"] == sum(p.numel() for p in real.encoder.parameters())
    assert counts.total["lora"] == sum(p.numel() for n, p in real.named_parameters() if "lora_" in n)
    assert sum(counts.trainable.values()) == sum(p.numel() for p in real.parameters() if p.requires_grad)
    assert sum(counts.bytes.values()) == sum(p.numel() * p.element_size() for p in real.parameters())


@pytest.mark.slow
def test_predicted_peak_within_15_percent_of_measured_rss():
    """bench/memory_plan.py's method at whisper-base + Qwen2.5-0.5B widths (4 LLM layers, the
    full vocabulary) for the frozen, LoRA and full specs."""
    args = memory_plan.parser().parse_args(["--sizes", "base", "--llm-layers", "4", "--steps", "2"])
    rows = list(memory_plan.validate(args))
    assert [r["spec"] for r in rows] == ["frozen", "lora", "full"]
    for r in rows:
        assert abs(r["error"]) < 0.15, (r["spec"], r["plan"].peak, r["measured"])
    assert rows[0]["measured"] < rows[1]["measured"] < rows[2]["measured"]


def _run_plan(*args, cwd=REPO):
    return subprocess.run([sys.executable, "-m", "partlib.bin.plan", *args], cwd=cwd, capture_output=True, text=True)


def test_cli_plans_every_stage_of_the_paper_preset():
    res = _run_plan("--model-config", str(CV / "model.yaml"), "--schedule", str(CV / "schedule_part.yaml"),
                    "--gpus", "8", "--format", "json")
    assert res.returncode == 0, res.stderr
    stages = json.loads(res.stdout)
    assert [s["stage"] for s in stages] == ["s1_adapter", "s2a_enc_top8", "s2b_enc_all", "s3_lora", "s4_text"]
    # the encoder: frozen, then its top 8 of 32 layers (19.7 M parameters each), then all of it
    encoder = [s["parameters"]["encoder"]["trainable"] for s in stages]
    assert encoder[0] == 0 and 8 * 19e6 < encoder[1] < 8 * 20e6 and all(n > 6e8 for n in encoder[2:])
    for s in stages:
        assert s["parameters"]["llm"]["total"] > 7e9 and s["parameters"]["llm"]["trainable"] == 0
        on, off = s["checkpointing"]["on"], s["checkpointing"]["off"]
        assert on["activations"] < off["activations"] and on["weights"] == off["weights"]
        # accum_grad 4 (paper_scale.yaml): the gradients are there beside the activations
        assert on["held_grads"] == on["grads"] > 0
        assert on["weights"] + on["optimizer"] + on["activations"] < on["peak"] < off["peak"]
        assert s["judged"] == "on"  # the preset turns gradient checkpointing on
    assert all("lora" not in s["parameters"] for s in stages[:3])
    # stage 1 by hand (GiB) from the published sizes: Qwen2.5-7B's 7.62 B parameters in bf16, Whisper-large-v3's
    # encoder (637.0 M) and the adapter (36.7 M) in float32: 16.70 GiB of weights; AdamW's two float32
    # moments of the adapter alone (the only trainable part): 0.273 GiB
    s1 = stages[0]["checkpointing"]["on"]
    assert s1["weights"] == pytest.approx(16.70, abs=0.02)
    assert s1["optimizer"] == pytest.approx(0.273, abs=0.002)
    assert all(s["parameters"]["lora"]["trainable"] > 0 for s in stages[3:])


def test_cli_check_names_the_stage_that_does_not_fit(tmp_path):
    args = ["--model-config", str(CV / "model.yaml"), "--schedule", str(CV / "schedule_part.yaml")]
    res = _run_plan(*args, "--gpus", "1", "--gpu-mem", "24", "--check")
    assert res.returncode == 1
    assert "stage s1_adapter needs" in res.stderr and "max_frames <=" in res.stderr
    assert "Traceback" not in res.stderr
    # the training command's overrides apply: a smaller stage-1 batch needs less memory
    small = _run_plan(*args, "--format", "json", "--train-args",
                      "--threads 1 --set stages.0.batch.max_frames=8000 --strategy fsdp",
                      "--set", "stages.0.trainable.encoder=frozen")
    full = _run_plan(*args, "--format", "json")
    assert small.returncode == 0 and full.returncode == 0, small.stderr + full.stderr
    a, b = json.loads(small.stdout)[0]["checkpointing"]["on"], json.loads(full.stdout)[0]["checkpointing"]["on"]
    assert a["activations"] < b["activations"]
    # a frozen pretrained encoder on variable-length input is warned about (stage 1 only: stage 2 trains it)
    assert "stage s1_adapter: the pretrained encoder stays frozen" in small.stderr
    assert json.loads(small.stdout)[0]["warning"] and not json.loads(small.stdout)[1]["warning"]
    out = tmp_path / "plan.md"
    res = _run_plan(*args, "--gpus", "8", "--format", "markdown", "--output", str(out))
    assert res.returncode == 0 and res.stdout == ""
    assert out.read_text().count("| stage |") == 1 and out.read_text().count("| s4_text |") == 2


class _Toy(nn.Module):
    """A model small enough to count by hand: a float32 encoder Linear(4, 8) (32 + 8 parameters,
    160 bytes) and adapter Linear(8, 8, no bias) (64, 256 bytes), trainable; a frozen bf16 LLM of
    four Linear(16, 16, no bias) layers (256 parameters, 512 bytes each), its FSDP units."""

    def __init__(self) -> None:
        super().__init__()
        self.encoder = nn.Linear(4, 8)
        self.adapter = nn.Linear(8, 8, bias=False)
        self.llm = nn.ModuleList([nn.Linear(16, 16, bias=False) for _ in range(4)]).to(torch.bfloat16).requires_grad_(False)

    def shard_units(self):
        return list(self.llm)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.adapter(self.encoder(x)).square().sum()


def test_weights_gradients_and_optimizer_state_counted_by_hand_and_measured():
    toy = _Toy()
    # an activation count given by hand: 3100 bytes kept, 50 bytes of logits
    acts = memory.Activations(saved={"encoder": 1000, "adapter": 0, "llm": 2000, "loss": 100}, logits=50)
    shape = memory.BatchShape("asr", 1, 100, 10, 5)
    plan = lambda **kw: memory.predict(toy, shape, memory.Setup(device="cpu", **kw), activations=acts)  # noqa: E731
    ddp = plan(gpus=4, strategy="ddp")
    # 160 + 256 + 4 x 512 bytes of weights; 416 bytes of gradients; two AdamW moments of 416 bytes
    assert (ddp.weights, ddp.grads, ddp.optimizer, ddp.activations, ddp.loss_grads) == (2464, 416, 832, 3100, 100)
    assert ddp.step_temps == 512 and ddp.held_grads == 0  # two buffers of the largest trainable tensor (256)
    assert ddp.peak == 2464 + 832 + 3100 + 100 == 6496  # the start of backward
    # measured: the gradients and AdamW state of a real step on the same model
    opt = torch.optim.AdamW([p for p in toy.parameters() if p.requires_grad])
    toy(torch.ones(2, 4)).backward()
    opt.step()
    assert sum(p.grad.numel() * p.grad.element_size() for p in toy.parameters() if p.grad is not None) == ddp.grads
    assert sum(t.numel() * t.element_size() for st in opt.state.values() for t in st.values() if t.dim()) == ddp.optimizer
    # FSDP on 4 GPUs: a quarter of everything, the root (encoder + adapter, 416 bytes) and two layers (1024)
    # unsharded; gradients (104) and moments (208) sharded
    fsdp = plan(gpus=4, strategy="fsdp")
    assert (fsdp.weights, fsdp.grads, fsdp.optimizer, fsdp.activations) == (616 + 416 + 1024, 104, 208, 3100)
    assert fsdp.peak == 2056 + 208 + 3100 + 100 == 5464
    # accumulating without gradient sync, FSDP holds the unsharded gradients (416) between micro-batches
    acc = plan(gpus=4, strategy="fsdp", accum_grad=4)
    assert (acc.held_grads, acc.grads) == (416, 104) and acc.peak == 5464 + 416 == 5880
    # the optimizer step is the peak when the activations are small: gradients and AdamW's temporaries
    small = memory.predict(toy, shape, memory.Setup(device="cpu"), activations=memory.Activations({"llm": 10}))
    assert small.peak == 2464 + 832 + 416 + 512 == 4224


def test_frozen_pretrained_encoder_on_variable_length_input_is_warned_about():
    sched = parse_schedule({"stages": [
        {"name": "a", "tasks": [{"task": "asr", "data": ["x"]}], "trainable": {"encoder": "frozen"}},
        {"name": "b", "tasks": [{"task": "asr", "data": ["x"]}], "trainable": {"encoder": "full"}},
        {"name": "c", "tasks": [{"task": "asr", "data": ["x"]}], "trainable": {"encoder": "frozen"}}]})
    cfg = {"encoder": {"path": "openai/whisper-large-v3", "pad_to_30s": False}}
    warnings = frozen_encoder_warnings(sched, cfg)
    assert list(warnings) == ["a"] and "pad_to_30s" in warnings["a"]  # c follows b, which trained it
    assert frozen_encoder_warnings(sched, {"encoder": {"path": "x", "pad_to_30s": True}}) == {}
    assert frozen_encoder_warnings(sched, {"encoder": {"arch": "x.json"}}) == {}  # random weights


def test_recipe_stops_before_gpu_training_that_cannot_fit(tmp_path):
    recipe = REPO / "egs" / "commonvoice15" / "part1"
    res = subprocess.run(["./run.sh", "--stage", "5", "--stop_stage", "5", "--ngpu", "1", "--gpu_mem", "24",
                          "--expdir", str(tmp_path / "exp")], cwd=recipe, capture_output=True, text=True)
    assert res.returncode != 0
    assert "needs" in res.stderr + res.stdout and "s1_adapter" in res.stderr + res.stdout
    assert not any((tmp_path / "exp").glob("*/train.log"))  # nothing started
    assert "s1_adapter" in (tmp_path / "exp" / "plan_part.txt").read_text()  # the table, to read


def test_gpu_step_benchmark_on_cpu_records_an_out_of_memory_step(monkeypatch):
    """bench/gpu_step.py with the toy models: every setting of the stage gets a row with the
    planner's prediction beside the measurement; an out-of-memory step is a result."""
    import gpu_step

    real_step = gpu_step.step

    def step(model, batch, opt, device):
        if not model.encoder.gradient_checkpointing:
            raise torch.OutOfMemoryError("simulated")
        return real_step(model, batch, opt, device)

    monkeypatch.setattr(gpu_step, "step", step)
    args = gpu_step.parser().parse_args(["--tiny", "--stages", "s1_adapter", "--steps", "2", "--device", "cpu",
                                         "--peak-tflops", "0.1"])
    on, off = gpu_step.run(args)
    assert (on["stage"], on["ckpt"], off["ckpt"]) == ("s1_adapter", "on", "off")
    assert on["step_s"] > 0 and on["tokens_s"] > 0 and 0 < on["mfu"] and on["predicted"] > 0 and "measured" in on
    assert off["oom"] and off["predicted"] > on["predicted"] and "step_s" not in off
    assert "OOM" in gpu_step._format(off) and on["batch"] in gpu_step._format(on)


def test_cli_names_a_model_it_has_no_architecture_for(tmp_path):
    cfg = config.load_file(CV / "model.yaml")
    cfg["llm"]["path"] = "someorg/unknown-llm-3b"
    (tmp_path / "model.yaml").write_text(yaml.safe_dump(cfg))
    res = _run_plan("--model-config", str(tmp_path / "model.yaml"), "--schedule", str(CV / "schedule_part.yaml"))
    assert res.returncode == 1 and "Traceback" not in res.stderr
    assert "llm.path 'someorg/unknown-llm-3b'" in res.stderr and "unknown-llm-3b.json" in res.stderr


def test_probes_are_shared_between_stages_with_the_same_trainable_state(tmp_path):
    cfg = _small_config(tmp_path)
    stage = {"tasks": [{"task": "asr", "data": ["x"]}], "batch": {"max_frames": 2000, "max_tokens": 4000}}
    sched = parse_schedule({"stages": [
        {**stage, "name": "a", "trainable": {"encoder": "full", "llm": "frozen"}},
        {**stage, "name": "b", "trainable": {"encoder": "full", "llm": LORA}},
        {**stage, "name": "c", "trainable": {"encoder": "full", "llm": "frozen"}}]})  # LoRA wrapped, frozen
    setup = memory.Setup(gpus=1, device="cpu")
    peaks = lambda plans: [p.plans[k].peak for p in plans for k in ("on", "off")]  # noqa: E731
    model = memory.meta_model(cfg)
    alone = [memory.plan_stage(model, st, setup, 2 ** 40) for st in sched.stages]
    probes: dict = {}
    model = memory.meta_model(cfg)
    shared = [memory.plan_stage(model, st, setup, 2 ** 40, probes=probes) for st in sched.stages]
    assert peaks(shared) == peaks(alone) and len(probes) == 3  # c keeps the LoRA modules: a state of its own
    again = memory.plan_stage(memory.meta_model(cfg), sched.stages[0], setup, 2 ** 40, probes=probes)
    assert peaks([again]) == peaks(alone[:1]) and len(probes) == 3  # a fresh model in a's state: no new probe


def test_cli_plans_several_schedules_merged_with_a_batch_file_on_several_gpu_counts(tmp_path):
    model = tmp_path / "model.yaml"
    model.write_text(yaml.safe_dump(_small_config(tmp_path)))
    stage = {"tasks": [{"task": "asr", "data": ["x"]}]}
    for name, stages in (("one", ["a", "b"]), ("two", ["c"])):
        (tmp_path / f"schedule_{name}.yaml").write_text(yaml.safe_dump(
            {"stages": [{**stage, "name": n, "trainable": {"llm": LORA if n == "b" else "frozen"}} for n in stages]}))
    # 2000 frames = two 10 s utterances: 2 per micro-batch on 1 GPU, 1 per GPU on 2
    (tmp_path / "scale.yaml").write_text(yaml.safe_dump({"defaults": {"batch": {"max_frames": 2000}}}))
    common = ["--model-config", str(model), "--schedule", str(tmp_path / "schedule_one.yaml"),
              "--schedule", str(tmp_path / "schedule_two.yaml"), "--merge", str(tmp_path / "scale.yaml"),
              "--gpus", "1", "2", "--strategy", "fsdp"]
    assert plan.main([*common, "--format", "json", "--output", str(tmp_path / "plan.json")]) == 0
    assert plan.main([*common, "--format", "table", "--output", str(tmp_path / "plan.md")]) == 0
    records = json.loads((tmp_path / "plan.json").read_text())
    assert [(r["schedule"], r["stage"], r["gpus"]) for r in records] == [
        ("one", "a", 1), ("one", "b", 1), ("two", "c", 1), ("one", "a", 2), ("one", "b", 2), ("two", "c", 2)]
    for r in records:
        assert r["checkpointing"]["on"]["batch"].startswith(f"asr: {3 - r['gpus']} x ")
    table = (tmp_path / "plan.md").read_text().splitlines()
    assert "1 GPU: peak GiB" in table[0] and "2 GPUs (fsdp): peak GiB" in table[0] and len(table) == 2 + 3
    row = {(r["schedule"], r["stage"], r["gpus"]): r for r in records}
    for line in table[2:]:
        cells = [c.strip() for c in line.strip("|").split("|")]
        for i, gpus in ((3, 1), (6, 2)):
            on, off = (row[(cells[0], cells[1], gpus)]["checkpointing"][k]["peak"] for k in ("on", "off"))
            assert cells[i] == f"{on:.1f} / {off:.1f}" and cells[i + 1] == "yes"


def test_probe_counts_what_the_transformer_adapter_keeps(tmp_path):
    """The paper's adapter (conv + Transformer layers): its activations and parameters are counted
    as a real forward keeps them."""
    cfg = {**_small_config(tmp_path), "adapter": {"type": "transformer", "stride": 4, "kernel": 6, "layers": 2,
                                                  "dim": 256, "heads": 4, "ffn": 1024}}
    spec = {"encoder": "frozen", "adapter": "full", "llm": "frozen"}
    torch.manual_seed(0)
    real = SpeechLLM.from_config(cfg)
    real.apply_trainable(spec)
    real.train()
    batch = memory_plan.make_batch(3, 800, real.n_mels)
    measured = _saved_by_real_forward(real, batch)
    meta = memory.meta_model(cfg)
    meta.apply_trainable(spec)
    probed = memory.probe_activations(meta, memory.batch_shape(real, batch))
    assert probed.saved["encoder"] == 0 and probed.saved["adapter"] > 0
    assert sum(probed.saved.values()) == pytest.approx(measured, rel=0.03)
    counts = memory.param_counts(meta)
    assert counts.trainable == {"encoder": 0, "adapter": sum(p.numel() for p in real.adapter.parameters()), "llm": 0}
