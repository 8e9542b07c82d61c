"""The committed egs/mini_synth/part1/RESULTS.md regenerates byte-identically from the committed
scores (egs/mini_synth/part1/results/, copied from exp/ of the run RESULTS.md names)."""
from pathlib import Path

from partlib.scoring.results import build_results

RECIPE = Path(__file__).resolve().parents[1] / "egs" / "mini_synth" / "part1"
TAGS = ("part_seed1", "frozen_llm_seed1", "joint_lora_seed1", "control_shuffled_audio_seed1",
        "control_none_audio_seed1")


def test_committed_results_regenerate(monkeypatch):
    monkeypatch.chdir(RECIPE)  # the experiment paths are relative, as in the recipe
    text = build_results([Path("results") / t for t in TAGS], seeds=True,
                         compare=["part/stage3_text:frozen_llm/frozen_all", "part/stage3_text:joint_lora/joint_lora"],
                         links=[("Seed 1: language-specific vs shared representations",
                                 "results/analysis_seed1/analysis.md")])
    assert text == (RECIPE / "RESULTS.md").read_text(encoding="utf-8")
    assert (RECIPE / "results" / "analysis_seed1" / "analysis.md").is_file()
