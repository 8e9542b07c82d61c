"""The embedded default recipe, end to end with its fast preset: data → features → pretrained
tokenizer/LLM/encoder → PART and both baselines → decoding (with controls) → scoring → RESULTS.md
→ representation analysis."""
import json
import os
import subprocess
from pathlib import Path

import pytest

from partlib.data.datadir import DataDir
from partlib.data.validate import validate_data_dir

REPO = Path(__file__).resolve().parents[1]
RECIPE = REPO / "egs" / "mini_synth" / "part1"
LANGS = ("en", "de", "fr", "es", "zh")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A scratch copy of the recipe (links to the repository's code and configs), run once."""
    root = tmp_path_factory.mktemp("mini_synth") / "egs" / "mini_synth" / "part1"
    root.mkdir(parents=True)
    for name in ("local", "conf", "run.sh"):
        (root / name).symlink_to(RECIPE / name)
    for name in ("part.sh", "path.sh", "cmd.sh"):
        (root / name).symlink_to(REPO / "egs" / "TEMPLATE" / "part1" / name)
    (root / "utils").symlink_to(REPO / "utils")
    env = dict(os.environ, PART_DEVICE="cpu")
    res = subprocess.run(["./run.sh", "--fast", "true"], cwd=root, env=env, capture_output=True, text=True)
    (root / "run.log").write_text(res.stdout + res.stderr)
    assert res.returncode == 0, res.stderr[-4000:]
    return root


@pytest.mark.slow
def test_data_dirs_validate_and_do_not_overlap(run):
    for split in ("train", "dev", "test"):
        for lang in LANGS:
            validate_data_dir(run / "data" / f"{split}_{lang}", no_feats=True)
            validate_data_dir(run / "data" / f"text_{split}_{lang}", no_feats=True, no_wav=True)
    train = set()
    for lang in LANGS:
        for d in ("train", "text_train"):
            dd = DataDir.load(run / "data" / f"{d}_{lang}")
            train |= set(dd.text.values()) | {t for m in dd.translations.values() for t in m.values()}
    for split in ("dev", "test"):
        for lang in LANGS:
            dd = DataDir.load(run / "data" / f"{split}_{lang}")
            held = set(dd.text.values()) | {t for m in dd.translations.values() for t in m.values()}
            assert not held & train, f"{split}_{lang} overlaps training text"


@pytest.mark.slow
def test_every_stage_has_outputs(run):
    exp = run / "exp"
    for d in ("encoder", "llm", "tokenizer"):
        assert (exp / "pretrained" / d).is_dir()
    stages = {"part": ["stage1_within", "stage2_cross", "stage3_text"], "frozen_llm": ["frozen_all"],
              "joint_lora": ["joint_lora"]}
    for sched, names in stages.items():
        for name in names:
            sdir = exp / f"{sched}_seed1" / name
            assert (sdir / "model" / "done").is_file()
            for lang in LANGS:
                assert (sdir / f"decode_test_{lang}_asr" / "scores.json").is_file()
                assert (sdir / f"decode_test_{lang}_lid" / "scores.json").is_file()
            assert (sdir / "decode_test_de_to_en_s2tt" / "scores.json").is_file()
            assert (sdir / "decode_test_en_to_zh_s2tt" / "scores.json").is_file()
    assert (exp / "RESULTS.md").is_file()
    assert (exp / "analysis_seed1" / "metrics.json").is_file()
    assert "analysis_seed1/analysis.md" in (exp / "RESULTS.md").read_text()
    # stage 10: the self-contained model folder, its card carrying the stage's test scores
    folder = exp / "model_part_seed1"
    info = json.loads((folder / "info.json").read_text())
    assert info["stage"] == "stage3_text" and (folder / "done").is_file() and (folder / "encoder").is_dir()
    assert set(info["scores"]) == {p.name for p in (exp / "part_seed1" / "stage3_text").glob("decode_*")}
    assert f"decode_test_de_asr | wer | {info['scores']['decode_test_de_asr']['value']:.2f}" in (
        folder / "README.md").read_text()


def _asr_error(decode_root: Path) -> float:
    vals = []
    for lang in LANGS:
        overall = json.loads((decode_root / f"decode_test_{lang}_asr" / "scores.json").read_text())["sets"]["overall"]
        vals.append(overall["scores"][overall["primary"]]["value"])
    return sum(vals) / len(vals)


@pytest.mark.slow
def test_part_uses_the_speech(run):
    exp = run / "exp"
    part = _asr_error(exp / "part_seed1" / "stage3_text")
    shuffled = _asr_error(exp / "control_shuffled_audio_seed1" / "stage3_text")
    # The fast preset's models are weak (mean WER/CER around 80%), but they clearly use the speech:
    # another utterance's audio costs them about 25 points (PART 79.8 vs 105.5 in one run).
    assert shuffled - part >= 20.0, f"PART {part:.1f} vs shuffled-audio control {shuffled:.1f}"


def _lid_scores(decode_root: Path, lang: str) -> dict:
    return json.loads((decode_root / f"decode_test_{lang}_lid" / "scores.json").read_text())


@pytest.mark.slow
def test_lid_is_scored_and_its_prompt_does_not_name_the_language(run):
    """LID decodes are scored with accuracy and a confusion matrix whose one row is the test set's
    language. Without audio the prompt is the same for every language, so the no-audio control
    answers all five test sets alike: at most one of them right (a prompt that leaked the
    language would let it score 100 on all)."""
    exp = run / "exp"
    names = {"en": "English", "de": "German", "fr": "French", "es": "Spanish", "zh": "Chinese"}
    for lang in LANGS:
        scores = _lid_scores(exp / "part_seed1" / "stage3_text", lang)
        assert scores["confusion"]["labels"] == [names[lang]]
        assert sum(scores["confusion"]["counts"][names[lang]].values()) == scores["num_utts"] > 0
    none = [_lid_scores(exp / "control_none_audio_seed1" / "stage3_text", lang)["sets"]["overall"]["scores"]
            ["accuracy"]["value"] for lang in LANGS]
    assert sum(v == 100.0 for v in none) <= 1 and all(v in (0.0, 100.0) for v in none), none
    assert "Language identification (lid): accuracy (%)" in (exp / "RESULTS.md").read_text()


@pytest.mark.slow
def test_results_regenerate_byte_identically(run):
    results = run / "exp" / "RESULTS.md"
    text = results.read_text()
    assert "part" in text and "frozen_llm" in text and "control_shuffled_audio" in text
    results.unlink()
    res = subprocess.run(["./run.sh", "--fast", "true", "--stage", "9", "--stop_stage", "9"], cwd=run,
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-2000:]
    assert results.read_text() == text
