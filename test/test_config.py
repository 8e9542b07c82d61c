"""The config grammar: typed sections, one-line errors naming file + key path, base inheritance,
and the configs of the recipes written once."""
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Literal, Optional, Tuple, Union

import pytest
import yaml

from partlib import config
from partlib.common import ConfigError
from partlib.models.schema import load_model_config, model_config
from partlib.train.encoder_pretrain import EncoderPretrainConfig
from partlib.train.lm_pretrain import LMPretrainConfig
from partlib.train.schedule import load_schedule

REPO = Path(__file__).resolve().parents[1]
TEMPLATE = REPO / "egs" / "TEMPLATE" / "part1" / "conf"


# ------------------------------------------------------------------------------------ the grammar
@dataclass
class _Inner:
    n: int = field(default=1, metadata={"min": 1})
    mode: Literal["a", "b"] = "a"


@dataclass
class _Outer:
    name: str
    inner: _Inner = field(default_factory=_Inner)
    items: List[_Inner] = field(default_factory=list)
    pair: Tuple[float, float] = (0.5, 1.0)
    table: Dict[str, int] = field(default_factory=dict)
    maybe: Optional[_Inner] = None
    either: Union[Literal["off"], _Inner] = "off"
    flag: bool = False


def test_grammar_converts_and_fills_defaults():
    o = config.parse(_Outer, {"name": "x", "items": [{"n": 3}], "pair": [1, "2e-3"], "maybe": {},
                              "either": {"mode": "b"}, "table": {"k": 2}}, "f.yaml")
    assert o.inner == _Inner() and o.items == [_Inner(3, "a")] and o.pair == (1.0, 0.002)
    assert o.maybe == _Inner() and o.either == _Inner(1, "b") and o.table == {"k": 2} and o.flag is False
    assert config.to_dict(o) == {"name": "x", "inner": {"n": 1, "mode": "a"}, "items": [{"n": 3, "mode": "a"}],
                                 "pair": [1.0, 0.002], "table": {"k": 2}, "maybe": {"n": 1, "mode": "a"},
                                 "either": {"n": 1, "mode": "b"}, "flag": False}


@pytest.mark.parametrize("data, message", [
    ({}, "f.yaml: name: required (a string)"),
    ({"name": "x", "inner": {"m": 1}}, "f.yaml: inner.m: unknown key (known: n, mode)"),
    ({"name": "x", "items": [{}, {"n": 0}]}, "f.yaml: items[1].n: must be >= 1, got 0"),
    ({"name": "x", "inner": {"n": "ten"}}, "f.yaml: inner.n: expected an integer, got 'ten'"),
    ({"name": "x", "inner": {"n": True}}, "f.yaml: inner.n: expected an integer, got True"),
    ({"name": "x", "pair": [1]}, "f.yaml: pair: expected a list of 2 values"),
    ({"name": "x", "table": {"k": 1.5}}, "f.yaml: table.k: expected an integer, got 1.5"),
    ({"name": "x", "either": {"mode": "c"}}, "f.yaml: either.mode: expected one of a | b, got 'c'"),
    ({"name": "x", "either": "on"}, "f.yaml: either: expected one of off or a mapping with keys n, mode"),
    ({"name": "x", "flag": "yes please"}, "f.yaml: flag: expected true or false"),
    ({"name": 3}, "f.yaml: name: expected a string, got 3"),
    ({"name": "x", "pair": [1, float("nan")]}, "f.yaml: pair[1]: expected a finite number, got nan"),
    ({"name": "x", "maybe": {"n": "x"}}, "f.yaml: maybe.n: expected an integer, got 'x'"),  # Optional: precise
])
def test_grammar_errors_name_the_key_path(data, message):
    with pytest.raises(ConfigError) as e:
        config.parse(_Outer, data, "f.yaml")
    assert str(e.value).startswith(message), str(e.value)


def test_null_section_means_its_defaults():
    o = config.parse(_Outer, {"name": "x", "inner": None, "table": None, "maybe": None}, "f.yaml")
    assert o.inner == _Inner() and o.table == {} and o.maybe is None


def test_base_inheritance_merge_rules(tmp_path):
    (tmp_path / "a.yaml").write_text("x: {p: 1, q: 2}\nl: [1, 2]\nstages: [{name: s1, v: 1}, {name: s2, v: 2}]\n")
    (tmp_path / "b.yaml").write_text("x: {q: 3}\n")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "c.yaml").write_text(
        "base: [../a.yaml, ../b.yaml]\nl: [9]\nstages: [{name: s2, w: 5}, {name: s3}]\n")
    assert config.load_file(tmp_path / "sub" / "c.yaml") == {
        "x": {"p": 1, "q": 3}, "l": [9],  # mappings merge, lists replace
        "stages": [{"name": "s1", "v": 1}, {"name": "s2", "v": 2, "w": 5}, {"name": "s3"}]}  # by name
    (tmp_path / "loop.yaml").write_text("base: loop.yaml\n")
    with pytest.raises(ConfigError, match="loop.yaml: base: loop.yaml is inherited in a cycle"):
        config.load_file(tmp_path / "loop.yaml")
    (tmp_path / "missing.yaml").write_text("base: nowhere.yaml\n")
    with pytest.raises(ConfigError, match="missing.yaml: base: .*nowhere.yaml not found"):
        config.load_file(tmp_path / "missing.yaml")


def test_a_key_twice_in_one_mapping_is_an_error(tmp_path):
    f = tmp_path / "dup.yaml"
    f.write_text("defaults:\n  dev: {data: [a]}\n  dev: {interval: 2}\n")
    with pytest.raises(ConfigError, match="dup.yaml: invalid YAML: key 'dev' appears twice"):
        config.read_yaml(f)
    f.write_text("? [a, b]\n: 1\n")
    with pytest.raises(ConfigError, match="dup.yaml: invalid YAML: a mapping key must be a plain value"):
        config.read_yaml(f)


def test_overrides_are_checked_like_the_file():
    cfg = {"stages": [{"name": "s", "tasks": [{"task": "asr", "data": "x"}]}]}
    config.apply_overrides(cfg, ["stages.0.optim.lr_rate=0.1"])
    from partlib.train.schedule import parse_schedule

    with pytest.raises(ConfigError, match=r"cli: stages\[0\]\.optim\.lr_rate: unknown key"):
        parse_schedule(cfg, "cli")


# ------------------------------------------------------------------ typos in every kind of config
def schedule_file(tmp_path, edit) -> Path:
    """The template's schedule_part_3stage.yaml (every stage written out) changed by ``edit(cfg)``,
    written to ``tmp_path/conf``."""
    cfg = yaml.safe_load((TEMPLATE / "schedule_part_3stage.yaml").read_text())
    cfg["base"] = str(TEMPLATE / "stage_defaults.yaml")
    edit(cfg)
    path = tmp_path / "conf" / "schedule_part.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def _set(path, value):
    def edit(cfg):
        node = cfg
        for key in path[:-1]:
            node = node[key] if isinstance(key, int) else node.setdefault(key, {})
        node[path[-1]] = value
    return edit


SCHEDULE_TYPOS = [  # (edit, the one-line message after "<file>: ")
    (_set(["stages", 1, "optim"], {"lr_rate": 0.003}),
     "stages[1].optim.lr_rate: unknown key (known: type, lr, weight_decay, betas, eps, momentum)"),
    (_set(["stages", 0, "max_steps"], "ten"), "stages[0].max_steps: expected an integer, got 'ten'"),
    (_set(["sede"], 1), "sede: unknown key (known: stages, seed, description, defaults)"),
    (_set(["defaults", "batch"], {"max_frame": 100}), "defaults.batch.max_frame: unknown key"),
    (_set(["stages", 3, "tasks", 1, "weigth"], 0.5), "stages[3].tasks[1].weigth: unknown key"),
    (_set(["stages", 1, "trainable"], {"llm": {"lora": {"target_module": ["q_proj"]}}}),
     "stages[1].trainable.llm.lora.target_module: unknown key (known: r, alpha, dropout, target_modules, layers)"),
    (_set(["stages", 3, "activation", 1, "layers"], {"top": "two"}), "stages[3].activation[1].layers: expected all"),
    (_set(["stages", 0, "specaug"], {"freq_mask": 2}), "stages[0].specaug.freq_mask: unknown key"),
    (_set(["stages", 2, "dev"], {"interval": -1}), "stages[2].dev.interval: must be >= 0, got -1"),
    (_set(["stages", 0, "clip_grad"], [1.0]), "stages[0].clip_grad: expected a number, got [1.0]"),
]


@pytest.mark.parametrize("edit, message", SCHEDULE_TYPOS)
def test_schedule_typos(tmp_path, edit, message):
    path = schedule_file(tmp_path, edit)
    with pytest.raises(ConfigError) as e:
        load_schedule(path)
    assert str(e.value).startswith(f"{path}: {message}"), str(e.value)
    assert "\n" not in str(e.value)


MODEL = {"encoder": {"path": "enc"}, "llm": {"path": "llm"}}


MODEL_TYPOS = [  # (change to MODEL, the one-line message after "<file>: ")
    ({"encoder": {"path": "enc", "pad_to_30": True}}, "encoder.pad_to_30: unknown key (known: path, arch,"),
    ({"adapter": {"type": "stack", "hiden": 8}}, "adapter.hiden: unknown key for adapter type stack"),
    ({"adapter": {"type": "qformer", "queries": 0}}, "adapter.queries: expected a positive integer, got 0"),
    ({"llm": {"path": "llm", "dtype": "fp32"}}, "llm.dtype: expected one of float32 | bfloat16 | float16"),
    ({"prompt": {"templates": {"asrr": "x"}}}, "prompt.templates.asrr: unknown task 'asrr'"),
    ({"prompt": {"system": ["a"]}}, "prompt.system: expected a string, got ['a']"),
    ({"lora": {"r": 8}}, "lora: the LoRA shape is part of a schedule's trainable spec"),
    ({"llm": {"path": "llm", "arch": "x.json"}}, "llm: needs exactly one of 'path'"),
]


@pytest.mark.parametrize("change, message", MODEL_TYPOS)
def test_model_config_typos(tmp_path, change, message):
    path = tmp_path / "model.yaml"
    path.write_text(yaml.safe_dump({**MODEL, **change}))
    with pytest.raises(ConfigError) as e:
        load_model_config(path)
    assert str(e.value).startswith(f"{path}: {message}"), str(e.value)


@pytest.mark.parametrize("cls, data, message", [
    (LMPretrainConfig, {"stpes": 10}, "stpes: unknown key (known: hidden, layers,"),
    (LMPretrainConfig, {"lr": "fast"}, "lr: expected a number, got 'fast'"),
    (LMPretrainConfig, {"hidden": 100, "heads": 3}, "heads: must divide hidden (100), got 3"),
    (EncoderPretrainConfig, {"max_frame": 10}, "max_frame: unknown key (known: steps, lr, warmup,"),
    (EncoderPretrainConfig, {"steps": 1.5}, "steps: expected an integer, got 1.5"),
])
def test_pretraining_config_typos(tmp_path, cls, data, message):
    path = tmp_path / "pretrain.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError) as e:
        config.load(cls, path)
    assert str(e.value).startswith(f"{path}: {message}"), str(e.value)


def _cli(*args):
    return subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True, timeout=300)


def test_clis_fail_in_one_line_before_any_work(tmp_path):
    """A typo ends each tool with exit 1 and one error line naming file and key path; nothing is
    written and no model or data is touched (their paths do not even exist)."""
    sched = schedule_file(tmp_path, SCHEDULE_TYPOS[0][0])
    model = tmp_path / "model.yaml"
    model.write_text(yaml.safe_dump(MODEL))
    bad_model = tmp_path / "bad_model.yaml"
    bad_model.write_text(yaml.safe_dump({**MODEL, "adapter": {"type": "stack", "hiden": 8}}))
    good_sched = schedule_file(tmp_path / "ok", lambda cfg: None)
    lm = tmp_path / "lm.yaml"
    lm.write_text("stpes: 10\n")
    cases = [
        (["partlib.bin.train", "--schedule", str(sched), "--model-config", str(model), "--exp-dir",
          str(tmp_path / "exp1")], f"{sched}: stages[1].optim.lr_rate: unknown key"),
        (["partlib.bin.train", "--schedule", str(good_sched), "--model-config", str(bad_model), "--exp-dir",
          str(tmp_path / "exp2")], f"{bad_model}: adapter.hiden: unknown key"),
        (["partlib.bin.pretrain_lm", "--tokenizer", "nowhere", "--data", "nowhere", "--config", str(lm),
          str(tmp_path / "lm")], f"{lm}: stpes: unknown key"),
        (["partlib.bin.pretrain_encoder", "--arch", "nowhere.json", "--train", "nowhere", "--max-frames", "many",
          str(tmp_path / "enc")], "command line: max_frames: expected an integer, got 'many'"),
    ]
    for args, message in cases:
        res = _cli(*args)
        assert res.returncode == 1, (args, res.stderr[-2000:])
        lines = [line for line in res.stderr.splitlines() if line.strip()]
        assert len(lines) == 1 and message in lines[0], res.stderr[-2000:]
        assert "Traceback" not in res.stderr
    assert not any((tmp_path / d).exists() for d in ("exp1", "exp2", "lm", "enc"))


# ------------------------------------------------------------------------ the recipes' configs
def test_recipes_share_one_paper_model_config():
    part8b = TEMPLATE / "model_part8b.yaml"
    for recipe in ("commonvoice15", "covost2", "fleurs", "multilingual", "wenetspeech"):
        conf = REPO / "egs" / recipe / "part1" / "conf" / "model.yaml"
        assert (conf.parent / config.read_yaml(conf)["base"]).resolve() == part8b.resolve(), recipe
    # the recipes' model is the package's paper config with the pretrained checkpoints in place of its
    # random-weight architectures: one file holds the model, the recipe file names two paths only
    paper_file = REPO / "partlib" / "models" / "configs" / "paper.yaml"
    assert (part8b.parent / config.read_yaml(part8b)["base"]).resolve() == paper_file.resolve()
    assert set(config.read_yaml(part8b)) == {"base", "encoder", "llm"}
    recipe = model_config(config.load_file(part8b))
    paper = model_config(yaml.safe_load(paper_file.read_text()))
    assert recipe.adapter == paper.adapter and recipe.prompt == paper.prompt and recipe.lora is paper.lora is None
    assert recipe.encoder.path == "openai/whisper-large-v3" and paper.encoder.arch == "whisper-large-v3.json"
    assert recipe.llm.path == "Qwen/Qwen2.5-7B" and paper.llm.arch == "qwen2.5-7b.json"
    assert recipe.encoder.arch is recipe.llm.arch is None


def test_every_recipe_config_parses_and_the_lora_shape_lives_in_schedules():
    confs = sorted(REPO.glob("egs/*/part1/conf/**/schedule_*.yaml"))
    assert len(confs) >= 20
    for path in confs:
        for stage in load_schedule(path).stages:
            lora = stage.lora
            if lora is not None and "mini_synth" not in str(path):
                assert (lora.r, lora.alpha, lora.target_modules) == (16, 32, ["q_proj", "k_proj", "v_proj", "o_proj"])
    for path in sorted(REPO.glob("egs/*/part1/conf/model.yaml")):
        assert "lora" not in yaml.safe_load(path.read_text()), path
        load_model_config(path)
    mini = REPO / "egs" / "mini_synth" / "part1" / "conf"
    for sub in ("", "fast/", "full/"):
        config.load(LMPretrainConfig, mini / f"{sub}lm_pretrain.yaml")
        config.load(EncoderPretrainConfig, mini / f"{sub}encoder_pretrain.yaml")
        # every preset gives all its schedules one step budget and one dev interval
        schedules = {p.stem[len("schedule_"):]: load_schedule(p) for p in sorted((mini / sub).glob("schedule_*.yaml"))}
        assert set(schedules) == {"part", "part_3stage", "baseline_2stage", "joint_lora", "ablation_1", "ablation_2",
                                  "ablation_3"}, sub
        assert len({sum(st.max_steps for st in s.stages) for s in schedules.values()}) == 1, sub
        assert len({st.dev.interval for s in schedules.values() for st in s.stages}) == 1, sub
        # ... and one optimiser (conf/stage_defaults.yaml): systems differ in structure only
        optims = {str(st.optim) for s in schedules.values() for st in s.stages}
        assert optims == {str(schedules["part"].stages[0].optim)}, sub
        _check_mini_synth_paper_structure(schedules)


def _check_mini_synth_paper_structure(s) -> None:
    """mini_synth's systems take the paper's stage structure (its 3-layer encoder: top 1 for top 8)."""
    def what(stage):
        enc = stage.trainable.encoder
        return (enc if isinstance(enc, str) else f"top{enc.top_k}", stage.trainable.adapter,
                "lora" if stage.uses_lora else stage.trainable.llm, sorted({t.task for t in stage.tasks}))

    part = [(st.name, *what(st)) for st in s["part"].stages]
    assert part == [("s1_adapter", "frozen", "full", "frozen", ["asr", "lid"]),
                    ("s2a_enc_top1", "top1", "full", "frozen", ["asr", "lid"]),
                    ("s2b_enc_all", "full", "full", "frozen", ["asr", "lid"]),
                    ("s3_joint_lora", "full", "full", "lora", ["asr", "lid", "s2tt"]),
                    ("s4_text", "full", "full", "lora", ["asr", "lid", "lm", "s2tt", "t2tt"])]
    assert [st.activation[0].layers for st in s["part"].stages if st.activation] == [{"top_frac": 0.5}]
    # the Interspeech recipe: PART without the text stage
    assert [(st.name, *what(st)) for st in s["part_3stage"].stages] == part[:4]
    # the cumulative ablations, each one removal more
    mixed = ["asr", "lid", "s2tt"]
    a1 = [(st.name, *what(st)) for st in s["ablation_1"].stages]
    assert a1 == [(n, e, a, llm, mixed) for n, e, a, llm, _ in part[:4]]
    a2 = [(st.name, *what(st)) for st in s["ablation_2"].stages]
    assert a2 == a1[:3] + [("s3_joint", "full", "full", "frozen", mixed)]
    assert config.to_dict(s["ablation_3"].stages) == config.to_dict(s["baseline_2stage"].stages)
    assert [(st.name, *what(st)) for st in s["baseline_2stage"].stages] == [
        ("s1_adapter", "frozen", "full", "frozen", mixed), ("s2_enc_all", "full", "full", "frozen", mixed)]
