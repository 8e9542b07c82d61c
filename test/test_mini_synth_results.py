"""The committed egs/mini_synth/part1/RESULTS.md regenerates byte-identically from the committed
scores (egs/mini_synth/part1/results/, copied from exp/ of the run RESULTS.md names by
local/publish_results.sh, whose results command this test runs with --regenerate true)."""
import json
import subprocess
import sys
from pathlib import Path

RECIPE = Path(__file__).resolve().parents[1] / "egs" / "mini_synth" / "part1"
SEEDS = (1, 2, 3)  # the seeds of the committed RESULTS.md (local/publish_results.sh)


def test_committed_results_regenerate():
    text = subprocess.run(["bash", "local/publish_results.sh", "--regenerate", "true", "--results_md", "-",
                           "--python", sys.executable], cwd=RECIPE, check=True, stdout=subprocess.PIPE,
                          encoding="utf-8").stdout
    assert text == (RECIPE / "RESULTS.md").read_text(encoding="utf-8")
    # what the issue asks RESULTS.md to carry, and files it links that must exist
    for heading in ("## Targets", "## Comparisons with significance"):
        assert heading in text
    for linked in ("results/analysis_seed1/analysis.md", "results/curves/curves.md", "results/error_breakdown.md"):
        assert f"]({linked})" in text and (RECIPE / linked).is_file(), linked
    curves = (RECIPE / "results" / "curves" / "curves.md").read_text(encoding="utf-8")
    for system in ("part", "baseline_2stage"):
        assert (RECIPE / "results" / "curves" / f"{system}_seed1.png").stat().st_size > 1000
        assert f"]({system}_seed1.png)" in curves


def test_committed_long_form_segments_hold_several_utterances():
    """The long-form comparison is about segments of several utterances, not one each."""
    for lang in ("en", "de", "fr", "es", "zh"):
        for seed in SEEDS:
            opts = json.loads((RECIPE / "results" / f"longform_seed{seed}" / "s4_text" / f"decode_test_{lang}_asr"
                               / "decode.json").read_text())
            assert opts["longform"]["utterances_per_segment"] >= 2.0, (lang, seed)
