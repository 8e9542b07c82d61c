"""RESULTS.md against the paper: summary columns from our decodes, published rows, ablation deltas."""
from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import pytest

from partlib.bin import results as results_cli
from partlib.common import ConfigError
from partlib.scoring import published, results

# (system, stage) -> decode dir (test set name, task, tgt) -> language/direction -> (metric, [seed 1, seed 2])
VALUES: Dict[Tuple[str, str], Dict[Tuple[str, str, Optional[str]], Dict[str, Tuple[str, List[float]]]]] = {
    ("part_3stage", "s3_joint_lora"): {
        ("fleurs_de_de_test", "asr", None): {"de": ("wer", [10, 12])},
        ("fleurs_cmn_hans_cn_test", "asr", None): {"zh": ("cer", [6, 8])},
        ("cv15_de_test", "asr", None): {"de": ("wer", [9, 9])},
        ("covost2_zh-CN_en_test", "s2tt", "en"): {"zh-en": ("bleu", [20, 22])},
        ("covost2_ja_en_test", "s2tt", "en"): {"ja-en": ("bleu", [18, 16])},
        ("covost2_en_de_test", "s2tt", "de"): {"en-de": ("bleu", [30, 30])},   # not -> en
        ("covost2_ja_en_test", "asr", None): {"ja": ("cer", [50, 50])},        # not FLEURS / CV15
        ("fleurs_de_de_dev", "asr", None): {"de": ("wer", [40, 42])},          # a dev set
    },
    ("ablation_1", "s3_joint_lora"): {
        ("fleurs_de_de_test", "asr", None): {"de": ("wer", [11, 13])},
        ("fleurs_cmn_hans_cn_test", "asr", None): {"zh": ("cer", [7, 9])},
        ("cv15_de_test", "asr", None): {"de": ("wer", [10, 10])},
        ("covost2_zh-CN_en_test", "s2tt", "en"): {"zh-en": ("bleu", [21, 23])},
        ("covost2_ja_en_test", "s2tt", "en"): {"ja-en": ("bleu", [18, 16])},
    },
    ("ablation_2", "s3_joint"): {  # no Chinese FLEURS set, no CV15
        ("fleurs_de_de_test", "asr", None): {"de": ("wer", [14, 14])},
        ("covost2_zh-CN_en_test", "s2tt", "en"): {"zh-en": ("bleu", [15, 15])},
        ("covost2_ja_en_test", "s2tt", "en"): {"ja-en": ("bleu", [15, 15])},
    },
}
ABLATION = "part_3stage/s3_joint_lora=ablation_1/s3_joint_lora,ablation_2/s3_joint"


def _section(metric: str, value: float) -> Dict:
    return {"primary": metric, "scores": {metric: {"value": value}}, "diagnostics": {"wrong_lang": {"rate": 0.0}}}


@pytest.fixture
def tree(tmp_path) -> List[Path]:
    """exp/<system>_seed<k>/<stage>/decode_<set>[_to_<tgt>]_<task>/scores.json written by hand."""
    dirs = []
    for (system, stage), decodes in VALUES.items():
        for i, seed in enumerate((1, 2)):
            exp = tmp_path / "exp" / f"{system}_seed{seed}"
            for (testset, task, tgt), cells in decodes.items():
                name = f"decode_{testset}_to_{tgt}_{task}" if tgt else f"decode_{testset}_{task}"
                (exp / stage / name).mkdir(parents=True)
                sets = {key: _section(metric, v[i]) for key, (metric, v) in cells.items()}
                metric, v = next(iter(cells.values()))
                scores = {"sets": {**sets, "overall": _section(metric, v[i])}, **({"tgt_lang": tgt} if tgt else {})}
                (exp / stage / name / "scores.json").write_text(json.dumps(scores), encoding="utf-8")
            dirs.append(exp)
    return dirs


def _cell(values: List[float]) -> str:
    return f"{statistics.mean(values):.2f} ± {statistics.stdev(values):.2f}"


def _per_seed_avg(system: Tuple[str, str], task: str, prefix: str, tgt: Optional[str] = None) -> List[float]:
    """Brute force: per seed, the mean over the languages of the matched test sets."""
    out = []
    for i in range(2):
        vals = [v[i] for (ts, tk, tg), cells in VALUES[system].items()
                if tk == task and ts.startswith(prefix) and ts.endswith("_test") and tg == tgt
                for _, v in cells.values()]
        out.append(statistics.mean(vals))
    return out


def test_summary_columns_published_rows_and_per_language_tables(tree):
    text = results.build_results(tree, seeds=True, paper="part")
    paper = text.split("## Against the paper")[1].split("## Results")[0]
    part, abl1, abl2 = VALUES
    fleurs = _per_seed_avg(part, "asr", "fleurs_")
    assert fleurs == [8, 10]  # (10 + 6) / 2 and (12 + 8) / 2
    cv15, bleu = _per_seed_avg(part, "asr", "cv15_"), _per_seed_avg(part, "s2tt", "covost2_", "en")
    assert bleu == [19, 19]   # en->de is not averaged in
    assert f"| part_3stage s3_joint_lora | ours | {_cell(fleurs)} | {_cell(cv15)} | {_cell(bleu)} |" in paper
    assert "| part_3stage s3_joint_lora | ours | 9.00 ± 1.41 | 9.00 ± 0.00 | 19.00 ± 0.00 |" in paper
    # ablation_2 has one of the two FLEURS languages and no CV15 decode
    assert "| ablation_2 s3_joint | ours | 14.00 ± 0.00 (1/2) | — | 15.00 ± 0.00 |" in paper
    # the paper's rows first, marked published with their source
    summary = paper.split("### Summary")[1].split("###")[0]
    assert summary.index("| PART-2B (2 B) | published [1] | 4.7 | 7.4 | 35.4 |") < summary.index("| part_3stage")
    for row in ("| Whisper-large-v3 (1.6 B) | published [1] | 6.0 | 8.0 | 31.5 |",
                "| MinMo (8 B) | published [1] | 4.3 | 7.8 | 38.4 |",
                "| Baseline-2stage (2 B) | published [1] | 6.4 | 9.2 | 34.0 |",
                "| PART-8B (8 B) | published [1] | 3.7 | 6.6 | 39.1 |"):
        assert row in summary
    assert "- [1] Zhang et al., Interspeech 2026 (arXiv 2509.19745)" in paper
    assert "- [2] Qwen2-Audio technical report" in paper
    # per-language tables: the paper's ten languages and seven directions, published values where known
    assert "| system | source | zh | en | ja | ko | yue | de | fr | ru | es | it | avg |" in paper
    assert "| system | source | zh-en | ja-en | de-en | fr-en | es-en | it-en | ru-en | avg |" in paper
    assert "| PART-2B (2 B) | published [1] | 23.2 | 26.8 | — | — | — | — | — | 35.4 |" in paper
    assert "| Qwen2-Audio | published [2] | 24.4 | — | 35.2 | 38.5 | 40.0 | 36.3 | — | — |" in paper
    assert "| Qwen2-Audio | published [2] | 6.9 | 8.6 | — | — | 5.9 | — | 9.6 | — | — | — | — |" in paper
    assert (f"| part_3stage s3_joint_lora | ours | {_cell([6, 8])} | — | — | — | — | {_cell([10, 12])} "
            f"| — | — | — | — | {_cell(fleurs)} |") in paper
    assert "| ablation_1 s3_joint_lora | ours | 22.00 ± 1.41 | 17.00 ± 1.41 | — |" in paper
    # published rows with averages only stay out of the per-language tables
    assert paper.count("| PART-8B (8 B) |") == 2  # the summary and CoVoST 2 (zh-en, ja-en known)


def test_ablation_deltas_signs_and_published_steps(tree):
    text = results.build_results(tree, seeds=True, paper="part", ablation=ABLATION)
    chain = text.split("## Ablation chain")[1].split("Sources of the published numbers")[0]
    part, abl1, abl2 = VALUES
    ref = {c: statistics.mean(_per_seed_avg(part, *a)) for c, a in
           (("fleurs", ("asr", "fleurs_")), ("cv15", ("asr", "cv15_")), ("bleu", ("s2tt", "covost2_", "en")))}
    fl1 = statistics.mean(_per_seed_avg(abl1, "asr", "fleurs_"))
    bleu1 = statistics.mean(_per_seed_avg(abl1, "s2tt", "covost2_", "en"))
    # error: reference - ablation (worse = negative); BLEU: ablation - reference (better = positive)
    assert (ref["fleurs"] - fl1, bleu1 - ref["bleu"]) == (-1.0, 0.5)
    assert ("| ablation (Δ against part_3stage s3_joint_lora: + better, - worse) | paper's step | FLEURS avg error (%) Δ "
            "| CV15 avg error (%) Δ | ASR Δ (mean of its columns) | ASR Δ published [1] | CoVoST 2 → en BLEU Δ "
            "| BLEU Δ published [1] |") in chain
    assert ("| ablation_1 s3_joint_lora | (1) ASR and S2TT mixed in every stage "
            "| -1.00 | -1.00 | -1.00 | -0.4 | +0.50 | -0.3 |") in chain
    # ablation_2: FLEURS 9 - 14, no CV15, BLEU 15 - 19
    assert "| ablation_2 s3_joint | (2) and no LoRA on the LLM | -5.00 | — | -5.00 | -1.6 | -4.00 | -1.1 |" in chain
    assert "Δ > 0 better, Δ < 0 worse" in chain


def test_ablation_step_not_run_keeps_the_published_steps_in_place(tree):
    """``-`` holds the place of a step not run: ablation_2 stays beside the paper's step 2."""
    text = results.build_results(tree, seeds=True, paper="part",
                                 ablation="part_3stage/s3_joint_lora=-,ablation_2/s3_joint")
    chain = text.split("## Ablation chain")[1].split("Sources of the published numbers")[0]
    assert "| ablation_2 s3_joint | (2) and no LoRA on the LLM | -5.00 | — | -5.00 | -1.6 | -4.00 | -1.1 |" in chain
    assert "ablation_1" not in chain
    with pytest.raises(ConfigError, match="step not run"):
        results.build_results(tree, seeds=True, paper="part", ablation="part_3stage/s3_joint_lora=-,-")


def test_unused_options_leave_results_unchanged(tree):
    plain = results.build_results(tree, seeds=True)
    assert "Against the paper" not in plain and "Ablation chain" not in plain
    with_paper = results.build_results(tree, seeds=True, paper="part", ablation=ABLATION)
    head, rest = with_paper.split("## Against the paper")
    assert head + "## Results" + rest.split("## Results", 1)[1] == plain


def test_other_columns_and_custom_decodes(tree):
    text = results.build_results(tree, seeds=True, paper="part",
                                 paper_columns=["covost2_from_en", "FLEURS dev=asr:fleurs_*_dev"])
    paper = text.split("## Against the paper")[1].split("## Results")[0]
    assert "| system | source | CoVoST 2 en → X BLEU | FLEURS dev |" in paper
    assert "| part_3stage s3_joint_lora | ours | 30.00 ± 0.00 | 41.00 ± 1.41 |" in paper
    assert "| ablation_1 s3_joint_lora |" not in paper  # nothing of ours in these columns
    assert "| Qwen2-Audio | published [1] | 29.9 | — | 45.2 | — |" in paper
    assert "| PART-2B" not in paper  # no published number in these columns
    assert "No decode of ours matches" not in paper
    text = results.build_results(tree, seeds=True, paper="part", paper_columns=["x=asr:nosuch_*"])
    assert "No decode of ours matches these columns" in text
    # a shipped column's decodes replaced
    text = results.build_results(tree, seeds=True, paper="part", paper_columns=["fleurs=asr:fleurs_*_dev"])
    assert "| part_3stage s3_joint_lora | ours | 41.00 ± 1.41 |" in text


def test_without_seeds(tree):
    text = results.build_results(tree[:1], paper="part")
    assert "| part_3stage_seed1 s3_joint_lora | ours | 8.00 | 9.00 | 19.00 |" in text


def test_cli_and_errors(tree, tmp_path, caplog):
    out = tmp_path / "RESULTS.md"
    assert results_cli.main([*map(str, tree), "--seeds", "--systems", "part_3stage=PART,ablation_1,ablation_2",
                             "--paper", "part", "--ablation", ABLATION.replace("part_3stage/", "PART/", 1),
                             "--out", str(out)]) == 0
    text = out.read_text(encoding="utf-8")
    assert "| PART s3_joint_lora | ours | 9.00 ± 1.41 |" in text and "Δ against PART s3_joint_lora" in text
    for kwargs, match in (({"ablation": ABLATION}, "need --paper"),
                          ({"paper": "part", "ablation": "part_3stage/s3_joint_lora"}, "expected REF=ABL"),
                          ({"paper": "part", "ablation": "part_3stage/s3_joint_lora=nosuch/x"}, "no decodes of 'nosuch/x'"),
                          ({"paper": "nosuch"}, "neither a file nor a shipped reference .shipped: part"),
                          ({"paper": "part", "paper_columns": ["bogus"]}, "'bogus': not a column"),
                          ({"paper": "part", "paper_columns": ["x=asr:a:b"]}, "within-language")):
        with pytest.raises(ConfigError, match=match):
            results.build_results(tree, seeds=True, **kwargs)
    assert results_cli.main([*map(str, tree), "--seeds", "--ablation", ABLATION]) == 1
    assert "need --paper" in caplog.text  # one line naming the options, exit status 1


def test_reference_file_is_checked(tmp_path):
    ref = published.load("part")
    assert ref.summary == ["fleurs", "cv15", "covost2"]
    assert [ref.columns[c].higher_is_better for c in ref.summary] == [False, False, True]
    bad = tmp_path / "ref.yaml"
    bad.write_text("sources: {a: A}\ncolumns: {c: {title: C, decodes: 'asr:x_*', group: G}}\nsummary: [c]\n"
                   "systems: [{name: S, source: b, avg: {c: 1.0}}]\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"ref.yaml: systems\[0\].source: unknown source 'b'"):
        published.load(str(bad))
    bad.write_text("sources: {a: A}\ncolumns: {c: {title: C, decodes: 'nosuch:x_*', group: G}}\nsummary: [c]\n",
                   encoding="utf-8")
    with pytest.raises(ConfigError, match=r"columns.c.decodes: .*unknown task 'nosuch'"):
        published.load(str(bad))
