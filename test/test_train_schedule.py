"""Schedule parsing: every PART choice is a config value, and bad configs fail before any step."""
import pytest

from partlib.common import ConfigError
from partlib.config import apply_overrides
from partlib.models.schema import resolve_layers
from partlib.train.schedule import active_layers_at, lora_layers_union, parse_schedule


def _cfg(**stage_overrides):
    stage = {"name": "s1", "max_steps": 10, "tasks": [{"task": "asr", "data": ["train_*"]}],
             "trainable": {"encoder": "full", "adapter": "full", "llm": "frozen"}}
    stage.update(stage_overrides)
    return {"seed": 3, "stages": [stage]}


def test_defaults_merge_and_first_stage_init():
    s = parse_schedule({"defaults": {"optim": {"lr": 0.01}}, **_cfg()})
    st = s.stages[0]
    assert s.seed == 3
    assert st.init_from is None  # "previous" of the first stage means the model config
    assert st.optim.lr == 0.01 and st.optim.type == "adamw"  # merged, not replaced
    assert st.batch.max_frames > 0 and not st.uses_lora


@pytest.mark.parametrize("bad, msg", [
    ({"tasks": [{"task": "asr2", "data": ["x"]}]}, r"stages\[0\]\.tasks\[0\]\.task: unknown task 'asr2'"),
    ({"tasks": [{"task": "asr"}]}, r"tasks\[0\]\.data: required"),
    ({"tasks": [{"task": "asr", "data": ["x"], "tgt_langs": ["en"]}]}, "within-language"),
    ({"trainable": {"decoder": "full"}}, r"trainable\.decoder: unknown key \(known: encoder, adapter, llm\)"),
    ({"trainable": {"encoder": "half"}}, "trainable.encoder: expected one of frozen | full"),
    ({"trainable": {"llm": {"lora": {"rank": 4}}}}, r"trainable\.llm\.lora\.rank: unknown key"),
    ({"max_steps": 0}, "max_steps: must be >= 1"),
    ({"activation": [{"step": 0, "layers": "all"}]}, "needs trainable.llm"),
    ({"dev": {"metric": "cer"}}, "dev.metric: expected one of loss"),
    ({"bogus": 1}, r"stages\[0\]\.bogus: unknown key"),
])
def test_config_errors(bad, msg):
    with pytest.raises(ConfigError, match=msg):
        parse_schedule(_cfg(**bad))


def test_init_from_names_an_earlier_stage_or_a_model_dir(tmp_path):
    cfg = _cfg()
    cfg["stages"].append({**cfg["stages"][0], "name": "s2", "init_from": "s1"})
    assert parse_schedule(cfg).stages[1].init_from == "s1"
    cfg["stages"][1]["init_from"] = str(tmp_path)
    assert parse_schedule(cfg).stages[1].init_from == str(tmp_path)
    cfg["stages"][1]["init_from"] = "s_1"
    with pytest.raises(ConfigError, match=r"stages\[1\]\.init_from: 's_1' is neither an earlier stage \(s1\)"):
        parse_schedule(cfg)


def test_duplicate_stage_names_rejected():
    cfg = _cfg()
    cfg["stages"].append(dict(cfg["stages"][0]))
    with pytest.raises(ConfigError, match=r"stages\[1\]\.name: 's1' is the name of an earlier stage"):
        parse_schedule(cfg)


def test_resolve_layers():
    assert resolve_layers("all", 4, "x") == [0, 1, 2, 3]
    assert resolve_layers([0, -1], 4, "x") == [0, 3]
    assert resolve_layers({"top": 2}, 4, "x") == [2, 3]
    assert resolve_layers({"bottom": 1}, 4, "x") == [0]
    assert resolve_layers({"top_frac": 0.25}, 8, "x") == [6, 7]
    assert resolve_layers({"top_frac": 0.01}, 8, "x") == [7]  # at least one layer
    with pytest.raises(ConfigError, match="out of range"):
        resolve_layers([4], 4, "x")
    with pytest.raises(ConfigError, match="out of range"):
        resolve_layers({"top": 5}, 4, "x")


def test_dynamic_activation_schedule():
    lora = {"llm": {"lora": {"r": 4, "layers": "all"}}, "encoder": "full", "adapter": "full"}
    st = parse_schedule(_cfg(trainable=lora, activation=[
        {"step": 5, "layers": "all"}, {"step": 0, "layers": {"top": 1}}])).stages[0]
    assert active_layers_at(st, 0, 4) == [3]
    assert active_layers_at(st, 4, 4) == [3]
    assert active_layers_at(st, 5, 4) == [0, 1, 2, 3]
    assert lora_layers_union(st, 4) == [0, 1, 2, 3]
    # activation outside the LoRA candidate layers is an error
    lora["llm"]["lora"]["layers"] = [3]
    st = parse_schedule(_cfg(trainable=lora, activation=[{"step": 0, "layers": [2]}])).stages[0]
    with pytest.raises(ConfigError, match="outside lora.layers"):
        active_layers_at(st, 0, 4)


def test_overrides():
    cfg = apply_overrides(_cfg(), ["stages.0.max_steps=7", "stages.0.optim.lr=0.5", "seed=9"])
    s = parse_schedule(cfg)
    assert s.stages[0].max_steps == 7 and s.stages[0].optim.lr == 0.5 and s.seed == 9
    with pytest.raises(ConfigError, match="list index"):
        apply_overrides(_cfg(), ["stages.3.max_steps=1"])


def test_presets_parse():
    from pathlib import Path

    from partlib.train.schedule import load_schedule

    conf = Path(__file__).resolve().parents[1] / "egs" / "TEMPLATE" / "part1" / "conf"
    presets = sorted(conf.glob("schedule_*.yaml"))
    assert [p.stem[len("schedule_"):] for p in presets] == [
        "ablation_1", "ablation_2", "ablation_3", "baseline_2stage", "joint_lora", "part", "part_3stage", "part_asr"]
    budgets = {p.name: sum(st.max_steps for st in load_schedule(p).stages) for p in presets}
    assert set(budgets.values()) == {10000}, budgets  # one step budget: the presets compare at equal cost
    # (what each preset trains, stage by stage: test_recipes.py)
