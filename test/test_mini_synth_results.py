"""The committed egs/mini_synth/part1/RESULTS.md regenerates byte-identically from the committed
scores (egs/mini_synth/part1/results/, copied from exp/ of the run RESULTS.md names by
local/publish_results.sh, whose results command this test repeats)."""
from pathlib import Path

from partlib.scoring.results import build_results, parse_time_log

RECIPE = Path(__file__).resolve().parents[1] / "egs" / "mini_synth" / "part1"
SEEDS = (1, 2, 3)
TAGS = [f"{name}_seed{seed}" for name in ("part", "frozen_llm", "joint_lora", "control_shuffled_audio",
                                          "control_none_audio") for seed in SEEDS]


def test_committed_results_regenerate(monkeypatch):
    monkeypatch.chdir(RECIPE)  # the experiment paths are relative, as in the recipe
    text = build_results([Path("results") / t for t in TAGS], seeds=True,
                         compare=["part/stage3_text:frozen_llm/frozen_all", "part/stage3_text:joint_lora/joint_lora"],
                         links=[("Seed 1: language-specific vs shared representations",
                                 "results/analysis_seed1/analysis.md")],
                         run_info=parse_time_log(Path("results") / "time.log"))
    assert text == (RECIPE / "RESULTS.md").read_text(encoding="utf-8")
    assert (RECIPE / "results" / "analysis_seed1" / "analysis.md").is_file()
