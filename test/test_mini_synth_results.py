"""The committed egs/mini_synth/part1/RESULTS.md regenerates byte-identically from the committed
scores (egs/mini_synth/part1/results/, copied from exp/ of the run RESULTS.md names by
local/publish_results.sh, whose results command this test repeats)."""
import json
from pathlib import Path

from partlib.scoring.results import build_results, parse_time_log

RECIPE = Path(__file__).resolve().parents[1] / "egs" / "mini_synth" / "part1"
SEEDS = (1, 2, 3)
SYSTEMS = ("part", "frozen_llm", "joint_lora", "control_shuffled_audio", "control_none_audio",
           "redecode", "script_mask", "longform_one_by_one", "longform")
TAGS = [f"{name}_seed{seed}" for name in SYSTEMS for seed in SEEDS]


def test_committed_results_regenerate(monkeypatch):
    monkeypatch.chdir(RECIPE)  # the experiment paths are relative, as in the recipe
    demo = sorted(Path("results/demo").glob("*.srt"))
    assert len(demo) == 1
    text = build_results(
        [Path("results") / t for t in TAGS], seeds=True,
        compare=["part/stage3_text:frozen_llm/frozen_all", "part/stage3_text:joint_lora/joint_lora"],
        links=[("Seed 1: language-specific vs shared representations", "results/analysis_seed1/analysis.md"),
               ("Stage 11 demo: subtitles of a long recording (test_en, seed 1)", str(demo[0]))],
        run_info=[parse_time_log(p) for p in sorted(Path("results").glob("time*.log"))],
        sections=[("Output control: greedy, re-decoded with beams on trouble, script mask",
                   ["part/stage3_text", "redecode", "script_mask"]),
                  ("Long-form decoding: test utterances joined into recordings, decoded one by one vs long-form",
                   ["longform_one_by_one", "longform"])])
    assert text == (RECIPE / "RESULTS.md").read_text(encoding="utf-8")
    assert (RECIPE / "results" / "analysis_seed1" / "analysis.md").is_file()


def test_committed_long_form_segments_hold_several_utterances():
    """The long-form comparison is about segments of several utterances, not one each."""
    for lang in ("en", "de", "fr", "es", "zh"):
        for seed in SEEDS:
            opts = json.loads((RECIPE / "results" / f"longform_seed{seed}" / "stage3_text" / f"decode_test_{lang}_asr"
                               / "decode.json").read_text())
            assert opts["longform"]["utterances_per_segment"] >= 2.0, (lang, seed)
