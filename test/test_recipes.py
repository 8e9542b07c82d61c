"""The corpus recipes' run.sh and conf/ (egs/<corpus>/part1): scripts and links, the data sets and
options run.sh hands to part.sh, schedules, paper-scale model configs, Slurm rules, and stages 1-5
of part.sh on a miniature CoVoST 2 (data, filtering, features, every schedule with a tiny model)."""
from __future__ import annotations

import fnmatch
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Callable, Dict, List, Optional

import kaldiio
import pytest
import torch
import yaml

from corpora_mini import RECIPES, default_covost2
from partlib import config
from partlib.data.kv import read_kv
from partlib.models.builders import CONFIG_DIR, build_tiny_encoder, build_tiny_llm
from partlib.models.speech_llm import SpeechLLM
from partlib.train.schedule import active_layers_at, load_schedule
from test_job_tools import FAKE_SBATCH

REPO = Path(__file__).resolve().parents[1]
EGS = REPO / "egs"
SCHEDULES = ("part", "frozen_llm", "joint_lora")
LINKS = {"utils": "../../../utils", "part.sh": "../../TEMPLATE/part1/part.sh",
         "path.sh": "../../TEMPLATE/part1/path.sh", "cmd.sh": "../../TEMPLATE/part1/cmd.sh"}
# The bundled config.json files that stand in for the pretrained checkpoints (no download).
ARCHS = {"openai/whisper-large-v3": "whisper-large-v3.json", "Qwen/Qwen2.5-7B-Instruct": "qwen2.5-7b-instruct.json"}


def recipe(name: str) -> Path:
    """The directory of a recipe in the repository."""
    return EGS / name / "part1"


def env_with_venv(**extra: str) -> Dict[str, str]:
    """The environment of a recipe run: this Python's environment first on PATH, no corpus paths."""
    env = {k: v for k, v in os.environ.items() if k not in ("CV15", "FLEURS", "WENETSPEECH", "COVOST2", "CV4")}
    env["PATH"] = f"{Path(sys.executable).parent}:{env['PATH']}"
    env["VIRTUAL_ENV"] = sys.prefix
    env.update(extra)
    return env


def mirror_recipe(tmp: Path, name: str) -> Path:
    """Copies of the corpus recipes under tmp/egs whose relative links resolve as in the repository
    (the multilingual recipe runs the others' local/data.sh); returns the copy of recipe ``name``."""
    for r in RECIPES:
        shutil.copytree(recipe(r), tmp / "egs" / r / "part1", symlinks=True,
                        ignore=shutil.ignore_patterns("data", "dump", "exp", "downloads"))
    (tmp / "egs" / "TEMPLATE").symlink_to(EGS / "TEMPLATE")
    for top in ("utils", "tools"):
        (tmp / top).symlink_to(REPO / top)
    return tmp / "egs" / name / "part1"


FAKE_PART_SH = """#!/usr/bin/env bash
# Stand-in for part.sh: records each call's arguments (NUL-separated) in calls/<n>.
mkdir -p calls
n=$(ls calls | wc -l)
printf '%s\\0' "$@" > "calls/${n}"
"""


def run_sh_calls(tmp: Path, name: str, prepare: Optional[Callable[[Path], None]] = None
                 ) -> List[Dict[str, str]]:
    """Run a recipe's run.sh against a stand-in part.sh; the options of each call, in order."""
    d = mirror_recipe(tmp, name)
    (d / "part.sh").unlink()
    (d / "part.sh").write_text(FAKE_PART_SH)
    (d / "part.sh").chmod(0o755)
    if prepare is not None:
        prepare(d)
    proc = subprocess.run(["./run.sh", "--seeds", "1 2"], cwd=d, env=env_with_venv(), capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    calls = []
    for f in sorted((d / "calls").iterdir(), key=lambda p: int(p.name)):
        args = f.read_text().split("\0")[:-1]
        assert len(args) % 2 == 0 and all(a.startswith("--") for a in args[::2]), args
        opts: Dict[str, str] = {}
        for key, value in zip(args[::2], args[1::2]):
            opts[key[2:]] = value  # a later option overrides an earlier one, as in parse_options.sh
        calls.append(opts)
    return calls


# ----------------------------------------------------------------------------- files, links, scripts
@pytest.mark.parametrize("name", RECIPES)
def test_recipe_files_and_relative_links(name: str) -> None:
    d = recipe(name)
    assert os.access(d / "run.sh", os.X_OK)
    for link, target in LINKS.items():
        assert (d / link).is_symlink() and os.readlink(d / link) == target
        assert (d / link).exists(), f"{d / link} does not resolve"
    for conf in ["model.yaml", "data.conf", "slurm.conf"] + [f"schedule_{s}.yaml" for s in SCHEDULES]:
        assert (d / "conf" / conf).is_file(), conf


@pytest.mark.parametrize("name", RECIPES)
def test_scripts_parse(name: str) -> None:
    d = recipe(name)
    for script in ("run.sh", "db.sh", "local/data.sh", "conf/data.conf"):
        proc = subprocess.run(["bash", "-n", str(d / script)], capture_output=True, text=True)
        assert proc.returncode == 0, f"{script}: {proc.stderr}"


@pytest.mark.parametrize("name", RECIPES)
def test_help_prints_part_sh_usage(name: str) -> None:
    d = recipe(name)
    before = sorted(p.name for p in d.iterdir())
    proc = subprocess.run(["./run.sh", "--help"], cwd=d, env=env_with_venv(), capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "Usage:" in proc.stdout and "--train_sets" in proc.stdout and "--schedules" in proc.stdout
    assert sorted(p.name for p in d.iterdir()) == before  # --help prepares nothing


# ----------------------------------------------------------------------------- what run.sh passes on
def test_commonvoice15_sets(tmp_path: Path) -> None:
    (opts,) = run_sh_calls(tmp_path, "commonvoice15")
    locales = "en de fr es it ja zh-CN".split()
    assert opts["train_sets"].split() == [f"cv15_{l}_train" for l in locales]
    assert opts["dev_sets"].split() == [f"cv15_{l}_dev" for l in locales]
    assert opts["test_sets"].split() == [f"cv15_{l}_test" for l in locales]
    assert "test_decodes" not in opts and "analysis_sets" not in opts


def test_fleurs_sets(tmp_path: Path) -> None:
    (opts,) = run_sh_calls(tmp_path, "fleurs")
    locales = "en_us de_de fr_fr es_419 it_it ja_jp cmn_hans_cn".split()
    assert opts["train_sets"].split() == [f"fleurs_{l}_train" for l in locales]
    assert opts["test_sets"].split() == opts["analysis_sets"].split() == [f"fleurs_{l}_test" for l in locales]


def test_wenetspeech_sets(tmp_path: Path) -> None:
    (opts,) = run_sh_calls(tmp_path, "wenetspeech")
    assert opts["train_sets"] == "wenetspeech_train_l" and opts["dev_sets"] == "wenetspeech_dev"
    assert opts["test_sets"].split() == ["wenetspeech_test_net", "wenetspeech_test_meeting"]


def test_covost2_sets_and_decoding_directions(tmp_path: Path) -> None:
    (opts,) = run_sh_calls(tmp_path, "covost2")
    dirs = "de_en fr_en es_en it_en ja_en zh-CN_en en_de en_ja en_zh-CN".split()
    assert opts["train_sets"].split() == [f"covost2_{d}_train" for d in dirs] + [f"covost2_{d}_train_text" for d in dirs]
    assert opts["test_sets"].split() == [f"covost2_{d}_test" for d in dirs]
    # English audio is shared by the en->X directions: ASR decodes it once.
    assert opts["test_tasks"] == ""
    decodes = opts["test_decodes"].split()
    assert decodes[:7] == [f"asr:covost2_{d}_test" for d in dirs[:7]]
    pairs = decodes[7:]
    assert pairs[:6] == [f"s2tt:covost2_{d}_test:en" for d in dirs[:6]]
    assert pairs[6:] == ["s2tt:covost2_en_de_test:de", "s2tt:covost2_en_ja_test:ja", "s2tt:covost2_en_zh-CN_test:zh"]


MULTI_LISTS = {
    "train_asr": ["cv15_de_train", "fleurs_de_de_train", "wenetspeech_train_s"],
    "train_s2tt": ["covost2_de_en_train", "covost2_en_zh-CN_train"],
    "train_t2tt": ["covost2_de_en_train_text", "covost2_en_zh-CN_train_text", "fleurs_de_de_en_us_train_text"],
    "dev_asr": ["cv15_de_dev", "fleurs_de_de_dev", "wenetspeech_dev"],
    "dev_s2tt": ["covost2_de_en_dev", "covost2_en_zh-CN_dev"],
    "dev_t2tt": ["covost2_de_en_dev_text"],
    "test_asr": ["cv15_de_test", "fleurs_de_de_test", "fleurs_en_us_test", "wenetspeech_test_net"],
    "test_s2tt": ["covost2_de_en_test", "covost2_en_zh-CN_test"],
    "test_t2tt": ["covost2_de_en_test_text"],
}


def _write_multilingual_stage1(d: Path) -> None:
    """What stage 1 (local/data.sh) leaves behind: the role lists and the s2tt sets' text.<tgt>."""
    (d / "data" / "sets").mkdir(parents=True)
    for name, sets in MULTI_LISTS.items():
        (d / "data" / "sets" / name).write_text("".join(s + "\n" for s in sets))
    for s, tgt in (("covost2_de_en_test", "en"), ("covost2_en_zh-CN_test", "zh")):
        (d / "data" / s).mkdir()
        (d / "data" / s / "text").write_text("")
        (d / "data" / s / f"text.{tgt}").write_text("")


def test_multilingual_runs_stage1_then_reads_the_set_lists(tmp_path: Path) -> None:
    first, second = run_sh_calls(tmp_path, "multilingual", _write_multilingual_stage1)
    assert (first["stage"], first["stop_stage"], first["local_data_opts"]) == ("1", "1", "--config conf/data.conf")
    L = MULTI_LISTS
    assert second["train_sets"].split() == L["train_asr"] + L["train_s2tt"] + L["train_t2tt"]
    assert second["dev_sets"].split() == L["dev_asr"] + L["dev_s2tt"]
    assert second["test_sets"].split() == L["test_asr"] + L["test_s2tt"]
    assert second["test_tasks"] == ""
    assert second["test_decodes"].split() == [f"asr:{s}" for s in L["test_asr"]] + [
        "s2tt:covost2_de_en_test:en", "s2tt:covost2_en_zh-CN_test:zh"]
    assert second["analysis_sets"].split() == ["fleurs_de_de_test", "fleurs_en_us_test"]
    assert second["seeds"] == "1 2"  # run.sh's own arguments reach part.sh


@pytest.mark.parametrize("name", RECIPES)
def test_common_options_and_schedule_data_match_the_sets(tmp_path: Path, name: str) -> None:
    opts = run_sh_calls(tmp_path, name, _write_multilingual_stage1 if name == "multilingual" else None)[-1]
    assert opts["features"] == "dumped" and opts["n_mels"] == "128"
    assert opts["local_data_opts"] == "--config conf/data.conf"
    assert opts["schedules"].split() == list(SCHEDULES) and opts["seeds"] == "1 2"
    # every bootstrap comparison names <system>/<stage> pairs that the schedules produce
    pairs = [pair.split(":") for pair in opts["results_compare"].split()]
    assert {b.split("/")[0] for _, b in pairs} == {"frozen_llm", "joint_lora"}
    for side in (x for pair in pairs for x in pair):
        system, stage = side.split("/")
        names = [st.name for st in load_schedule(recipe(name) / "conf" / f"schedule_{system}.yaml").stages]
        assert stage == names[-1], (side, names)
    train, dev = opts["train_sets"].split(), opts["dev_sets"].split()
    for sched in SCHEDULES:
        for stage in load_schedule(recipe(name) / "conf" / f"schedule_{sched}.yaml").stages:
            for pat in stage.dev.data:
                assert fnmatch.filter(dev, pat), f"{sched}/{stage.name}: dev pattern {pat!r} matches no dev set"
            for task in stage.tasks:
                for pat in task.data:
                    hits = fnmatch.filter(train, pat)
                    assert hits, f"{sched}/{stage.name}: {task.task} pattern {pat!r} matches no training set"
                    # Speech tasks read speech sets, text tasks the *_text sets where a recipe has them.
                    if task.task in ("asr", "s2tt"):
                        assert not any(h.endswith("_text") for h in hits), (sched, stage.name, pat)


# ----------------------------------------------------------------------------- schedules and model
@pytest.mark.parametrize("name", RECIPES)
def test_schedules_share_one_step_budget_and_batches(name: str) -> None:
    scheds = {s: load_schedule(recipe(name) / "conf" / f"schedule_{s}.yaml") for s in SCHEDULES}
    budgets = {s: sum(st.max_steps for st in sc.stages) for s, sc in scheds.items()}
    assert len(set(budgets.values())) == 1, budgets
    batches = {(s, st.name): (st.batch.max_frames, st.batch.max_tokens, st.accum_grad)
               for s, sc in scheds.items() for st in sc.stages}
    assert len(set(batches.values())) == 1, batches
    frames = next(iter(batches.values()))[0]
    assert frames >= 8 * 3000  # a global micro-batch holds at least one 30 s utterance per GPU of a node
    part = scheds["part"].stages
    assert [s.name for s in part][0] == "stage1_within" and part[0].trainable.llm == "frozen"
    assert not part[0].uses_lora and all(s.uses_lora for s in part[1:])


def paper_config_offline(path: Path) -> dict:
    """The model config with each pretrained ``path`` replaced by its bundled architecture."""
    cfg = config.load_file(path)
    for section in ("encoder", "llm"):
        sec = cfg[section]
        sec["arch"] = ARCHS[sec.pop("path")]
    return cfg


@pytest.mark.parametrize("name", RECIPES)
def test_paper_model_builds_offline_and_takes_the_schedules(name: str) -> None:
    raw = config.load_file(recipe(name) / "conf" / "model.yaml")
    assert raw["encoder"]["path"] == "openai/whisper-large-v3"
    assert raw["llm"]["path"] == "Qwen/Qwen2.5-7B-Instruct" and raw["llm"]["dtype"] == "bfloat16"
    model = SpeechLLM.from_config(paper_config_offline(recipe(name) / "conf" / "model.yaml"),
                                  base_dir=CONFIG_DIR, device="meta")
    assert model.n_mels == 128 and model.num_llm_layers() == 28
    assert model.llm.config.hidden_size == 3584 and next(model.llm.parameters()).dtype == torch.bfloat16
    assert all(p.is_meta for p in model.parameters())
    # Every stage's trainable spec and LoRA activation applies to the 28-layer LLM.
    for sched in SCHEDULES:
        for stage in load_schedule(recipe(name) / "conf" / f"schedule_{sched}.yaml").stages:
            model.apply_trainable(stage.trainable)
            if stage.activation:
                first = active_layers_at(stage, 0, model.num_llm_layers())
                last = active_layers_at(stage, stage.max_steps - 1, model.num_llm_layers())
                assert first == list(range(21, 28)) and last == list(range(28))


# ----------------------------------------------------------------------------- Slurm rules
@pytest.mark.parametrize("name", RECIPES)
def test_slurm_conf_maps_gpu_jobs(tmp_path: Path, name: str) -> None:
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "sbatch").write_text(FAKE_SBATCH)
    (bindir / "sbatch").chmod(0o755)
    env = {**os.environ, "PATH": f"{bindir}:{os.environ['PATH']}", "FAKE_SBATCH_ARGS": str(tmp_path / "args")}
    conf = recipe(name) / "conf" / "slurm.conf"
    for opts, expected in ((["--gpu", "1"], ["--partition=cpu", "--partition=gpu", "--gres=gpu:1",
                                             "--cpus-per-task=8", "--mem-per-gpu=96G", "--time=72:00:00"]),
                           (["--mem", "4G", "--num-threads", "2"], ["--partition=cpu", "--mem=4G",
                                                                     "--cpus-per-task=2", "--time=72:00:00"])):
        proc = subprocess.run([str(REPO / "utils" / "slurm.pl"), "--config", str(conf), *opts, "log/j.log", "true"],
                              cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, proc.stderr
        args = (tmp_path / "args").read_text().split("\n")[:-1]
        assert [a for a in args if a.startswith(("--partition", "--gres", "--cpus", "--mem", "--time"))] == expected


# ----------------------------------------------------------------------------- stages 1-5 for real
def _tiny_model_config(tmp: Path) -> Path:
    """A tiny Whisper (128 mel bins, like large-v3) + tiny Qwen2 model config."""
    enc = build_tiny_encoder(tmp / "tiny_whisper", num_mel_bins=128)
    llm = build_tiny_llm(tmp / "tiny_llm")
    cfg = {"encoder": {"path": str(enc)}, "adapter": {"type": "stack", "stack": 4, "hidden": 64},
           "llm": {"path": str(llm), "dtype": "float32"}}
    (tmp / "tiny.yaml").write_text(yaml.safe_dump(cfg))
    return tmp / "tiny.yaml"


@pytest.mark.slow
def test_covost2_stages_1_to_5_on_a_miniature_corpus(tmp_path: Path) -> None:
    default_covost2(tmp_path / "covost2", tmp_path / "cv4")
    d = mirror_recipe(tmp_path, "covost2")
    (d / "conf" / "data.conf").write_text('directions="de_en"\n')
    env = env_with_venv(COVOST2=str(tmp_path / "covost2"), CV4=str(tmp_path / "cv4"))

    def run(*args: str) -> subprocess.CompletedProcess:
        proc = subprocess.run(["./run.sh", "--nj", "1", "--test_sets", "", *args], cwd=d, env=env,
                              capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stderr
        return proc

    run("--stage", "1", "--stop_stage", "3")
    dump = d / "dump" / "whisper_mel128"
    speech = {"covost2_de_en_train": 3, "covost2_de_en_dev": 1}
    text = ["covost2_de_en_train_text"]
    assert sorted(p.name for p in dump.iterdir()) == sorted([*speech, *text])
    for dset, n in speech.items():
        out = dump / dset
        assert (out / "feats_type").read_text().split() == ["whisper_mel", "128"]
        frames = read_kv(out / "utt2num_frames")
        feats = dict(kaldiio.load_scp(str(out / "feats.scp")))
        assert sorted(feats) == sorted(frames) == sorted(read_kv(d / "data" / dset / "text")) and len(feats) == n
        for utt, mat in feats.items():
            assert mat.shape == (int(frames[utt]), 128) and mat.shape[0] > 0
    for dset in text:  # text-only sets are copied as they are
        assert not (dump / dset / "feats.scp").exists()
        assert read_kv(dump / dset / "text") == read_kv(d / "data" / dset / "text")
    stamp = (dump / "covost2_de_en_train" / "feats.scp").stat().st_mtime_ns
    proc = run("--stage", "1", "--stop_stage", "3")  # complete stages are not redone
    assert "skipping data preparation" in proc.stderr
    assert (dump / "covost2_de_en_train" / "feats.scp").stat().st_mtime_ns == stamp

    # Every schedule trains (one step a stage) on these sets: its data patterns find the speech,
    # translation and text sets they need.
    model = _tiny_model_config(tmp_path)
    common = ["--stage", "5", "--stop_stage", "5", "--model_config", str(model)]
    one_step = "--threads 1 --no-tensorboard --set stages.0.max_steps=1"
    run(*common, "--schedules", "part", "--train_args",
        f"{one_step} --set stages.1.max_steps=1 --set stages.2.max_steps=1")
    run(*common, "--schedules", "frozen_llm joint_lora", "--train_nj", "2", "--train_args", one_step)
    for sched in SCHEDULES:
        for stage in load_schedule(d / "conf" / f"schedule_{sched}.yaml").stages:
            assert (d / "exp" / f"{sched}_seed1" / stage.name / "model" / "done").is_file(), (sched, stage.name)
    # trainings run at once (--train_nj) that fail make the stage fail, naming their logs
    bad = subprocess.run(["./run.sh", "--nj", "1", "--test_sets", "", *common, "--schedules", "frozen_llm joint_lora",
                          "--seeds", "7", "--train_nj", "2", "--train_args", f"{one_step} --set stages.0.no_such_option=1"],
                         cwd=d, env=env, capture_output=True, text=True, timeout=600)
    assert bad.returncode != 0
    assert "exp/frozen_llm_seed7/train.log" in bad.stderr and "exp/joint_lora_seed7/train.log" in bad.stderr
