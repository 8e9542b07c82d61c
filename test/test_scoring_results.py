"""RESULTS.md: tables from an experiment tree, mean ± std over seeds, byte-identical regeneration."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Dict

import pytest

from partlib import provenance
from partlib.bin import results as results_cli
from partlib.common import ConfigError
from partlib.scoring import results, wer_bleu

REFS = {"e1": "the cat sat on the mat", "e2": "a dog ran home", "z1": "我爱北京", "z2": "今天下雨"}
LANGS = {"e1": "en", "e2": "en", "z1": "zh", "z2": "zh"}
ENV = {"date": "2026-01-02T03:04:05Z", "git_commit": "abc123", "python": "3.11.0",
       "torch": "2.5.0", "transformers": "4.50.0", "device": "cpu"}


def decode(dir_: Path, hyps: Dict[str, str], tgt_lang=None) -> None:
    dir_.mkdir(parents=True)
    for name, m in (("ref", REFS), ("hyp", hyps), ("utt2lang", LANGS)):
        (dir_ / name).write_text("".join(f"{u} {t}\n" for u, t in sorted(m.items())), encoding="utf-8")
    if tgt_lang:
        (dir_ / "tgt_lang").write_text(tgt_lang + "\n", encoding="utf-8")
    inputs = wer_bleu.load_inputs(dir_ / "ref", dir_ / "hyp", utt2lang=dir_ / "utt2lang")
    wer_bleu.write_outputs(dir_, *wer_bleu.score(inputs, tgt_lang=tgt_lang))


@pytest.fixture
def exp_tree(tmp_path):
    # English WER: base seeds 50% and 25%, part seeds 0% and 0%.
    en_hyps = {
        ("base", 1): {"e1": "the cat sat on a mat", "e2": "a dog ran"},
        ("base", 2): {"e1": "the cat sat on the mat", "e2": "a dog ran"},
        ("part", 1): {"e1": "the cat sat on the mat", "e2": "a dog ran home"},
        ("part", 2): {"e1": "the cat sat on the mat", "e2": "a dog ran home"},
    }
    dirs = []
    for (system, seed), en in en_hyps.items():
        exp = tmp_path / "exp" / f"{system}_seed{seed}"
        hyps = {**en, "z1": "我爱北京", "z2": "今天下雨" if system == "part" else "今天下"}
        decode(exp / "stage1_within" / "decode_test_set_asr", hyps)
        decode(exp / "decode_test_set_asr", hyps)
        decode(exp / "decode_test_set_s2tt", hyps, tgt_lang="en")
        (exp / "env.json").write_text(json.dumps({**ENV, "git_commit": f"abc{seed}"}), encoding="utf-8")
        (exp / "config.yaml").write_text(f"seed: {seed}\n", encoding="utf-8")
        dirs.append(exp)
    return dirs


def test_results_tables_mean_std_and_bold(exp_tree):
    text = results.build_results(exp_tree, seeds=True, systems={"base": "Baseline", "part": "PART"})
    assert "| base_seed1 | `2026-01-02T03:04:05Z` | `abc1` | `3.11.0` | `2.5.0` | `4.50.0` | `cpu` |" in text
    assert "### ASR: WER / CER (%)" in text and "### Speech translation (s2tt): BLEU" in text
    assert "| test set | Baseline stage1_within | Baseline final | PART stage1_within | PART final |" in text
    # en WER per seed: base 2/10 = 20% and 1/10 = 10%; part 0% in both.
    assert "| test_set / en (WER) | 15.00 ± 7.07 | 15.00 ± 7.07 | **0.00 ± 0.00** | **0.00 ± 0.00** |" in text
    assert "| test_set / zh (CER) | 12.50 ± 0.00 |" in text
    assert "test_set / all (MIXED)" in text
    assert "### ASR: wrong-language rate (%)" in text
    assert "cells are mean ± sample std" in text


def test_results_regenerate_byte_identically(exp_tree, tmp_path):
    out1, out2 = tmp_path / "R1.md", tmp_path / "R2.md"
    opts = ["--seeds", "--systems", "base=Baseline,part=PART", "--compare", "base/final:PART/final",
            "--n-bootstrap", "50"]
    assert results_cli.main([*map(str, exp_tree), *opts, "--out", str(out1)]) == 0
    # Another run, exp dirs in another order (columns follow --systems): same bytes.
    assert results_cli.main([*map(str, reversed(exp_tree)), *opts, "--out", str(out2)]) == 0
    assert out1.read_bytes() == out2.read_bytes()
    text = out1.read_text(encoding="utf-8")
    assert "## Comparisons with significance" in text
    assert "### base/final (A) vs PART/final (B)" in text
    assert "/tmp" not in text and str(tmp_path) not in text


def _overall(exp: Path, name: str) -> float:
    sec = json.loads((exp / name / "scores.json").read_text(encoding="utf-8"))["sets"]["overall"]
    return sec["scores"][sec["primary"]]["value"]


def test_compare_seed_level_test_and_statement(exp_tree):
    text = results.build_results(exp_tree, seeds=True, compare=["base/final:part/final"], n_bootstrap=200)
    base, part = exp_tree[:2], exp_tree[2:]
    asr = [_overall(b, "decode_test_set_asr") - _overall(p, "decode_test_set_asr") for b, p in zip(base, part)]
    assert all(d > 0 for d in asr)  # part is better in both seeds: exact p = 2/4
    mean = sum(asr) / 2
    assert f"| asr | MIXED | 2 | {mean:+.2f} | 0 | 2 | 0.5000 | no |" in text
    assert (f"- asr: base/final vs part/final: part/final is better by {mean:.2f} on average over 2 "
            "(seed, test set) pairs, p = 0.5000: not significant at 0.05.") in text
    # one bootstrap cell per seed and test set, the first seed's ASR difference as computed above
    row = next(line for line in text.splitlines() if line.startswith("| test_set | asr | MIXED |"))
    assert row.split(" | ")[3].startswith(f"{asr[0]:+.2f} (")
    assert "s2tt into en" in text


def test_targets_from_decodes_and_json(exp_tree, tmp_path):
    (tmp_path / "info.json").write_text(json.dumps({"dev": {"cer": 7.5}}), encoding="utf-8")
    asr_part = [_overall(p, "decode_test_set_asr") for p in exp_tree[2:]]
    bleu_base = [_overall(b, "decode_test_set_s2tt") for b in exp_tree[:2]]
    text = results.build_results(exp_tree, seeds=True, base_dir=tmp_path, targets=[
        "encoder=info.json:dev.cer<=8", "asr=part/final:asr<=0.5", "bleu=base/final:s2tt:en>=100"])
    assert "| encoder | `info.json:dev.cer` | <= 8 | 7.50 | yes |" in text
    assert f"| asr | `part/final:asr` | <= 0.5 | {sum(asr_part) / 2:.2f} | yes |" in text
    assert f"| bleu | `base/final:s2tt:en` | >= 100 | {sum(bleu_base) / 2:.2f} | no |" in text
    # a list of target languages: the mean over the test sets translated into any of them
    text = results.build_results(exp_tree, seeds=True, targets=["bleu=base/final:s2tt:de,en,fr>=1"])
    assert f"| bleu | `base/final:s2tt:de,en,fr` | >= 1 | {sum(bleu_base) / 2:.2f} | yes |" in text
    with pytest.raises(ConfigError, match="no scored s2tt decode"):
        results.build_results(exp_tree, seeds=True, targets=["x=base/final:s2tt:de,fr>=1"])
    with pytest.raises(ConfigError, match="expected LABEL=SOURCE"):
        results.build_results(exp_tree, seeds=True, targets=["x=part/final:asr<8"])
    with pytest.raises(ConfigError, match="no scored lid decode"):
        results.build_results(exp_tree, seeds=True, targets=["x=part/final:lid<=8"])


def test_results_without_seeds_and_errors(exp_tree):
    text = results.build_results(exp_tree[:1])
    assert "| test set | base_seed1 stage1_within | base_seed1 final |" in text
    assert "| test_set / en (WER) | **20.00** | **20.00** |" in text
    with pytest.raises(ConfigError, match="unknown system"):
        results.build_results(exp_tree, seeds=True, systems={"nosuch": "X"})
    with pytest.raises(ConfigError):
        results.build_results(exp_tree, seeds=True, compare=["base/final"])


TIME_LOG = """2026-01-02 run output that is not part of the report: 12
\tCommand being timed: "./run.sh --seeds 1 2 3"
\tUser time (seconds): 3203.50
\tPercent of CPU this job got: 184%
\tElapsed (wall clock) time (h:mm:ss or m:ss): 29:47.99
\tMaximum resident set size (kbytes): 1802672
\tExit status: 0
"""


def test_results_run_section_from_a_gnu_time_report(exp_tree, tmp_path):
    log = tmp_path / "time.log"
    log.write_text(TIME_LOG, encoding="utf-8")
    out = tmp_path / "R.md"
    assert results_cli.main([*map(str, exp_tree), "--seeds", "--time-log", str(log), "--out", str(out)]) == 0
    text = out.read_text(encoding="utf-8")
    assert ("## Run\n\n| command | wall time | peak memory (largest process) | CPU use | exit status |\n|---|---|---|---|---|\n"
            "| `./run.sh --seeds 1 2 3` | 29:47.99 | 1.72 GiB | 184% | 0 |\n\n## Environment") in text
    # a run made of two commands: one row each
    assert results_cli.main([*map(str, exp_tree), "--seeds", "--time-log", str(log), "--time-log", str(log),
                             "--out", str(out)]) == 0
    assert out.read_text(encoding="utf-8").count("| `./run.sh --seeds 1 2 3` | 29:47.99 |") == 2
    log.write_text("Command being timed: \"x\"\n", encoding="utf-8")
    assert results_cli.main([*map(str, exp_tree), "--time-log", str(log)]) == 1  # not a time -v report


def test_write_env_json(tmp_path):
    pytest.importorskip("torch")
    path = provenance.write_env_json(tmp_path)
    env = json.loads(path.read_text(encoding="utf-8"))
    assert {k for k, _ in provenance.ENV_FIELDS} <= set(env)
    assert env["date"].endswith("Z")
    path.write_text("{}", encoding="utf-8")
    provenance.write_env_json(tmp_path, overwrite=False)
    assert path.read_text(encoding="utf-8") == "{}"


def test_sections_take_systems_out_of_the_main_tables(exp_tree, tmp_path):
    # a re-decoded variant of "part" and a long-form system, with their decode.json statistics
    extra = []
    for name, options in (("redecode", {"num_utts": 4, "redecode": {"counts": {
            "redecoded": 1, "budget": 1, "rate": 0, "repeat": 1}}}),
                          ("longform", {"num_utts": 1, "longform": {"recordings": 1, "segments": 3,
                                                                     "utterances_per_segment": 2.5, "rtf": 0.02}})):
        for seed in (1, 2):
            exp = tmp_path / "exp" / f"{name}_seed{seed}"
            decode(exp / "decode_test_set_asr", {u: REFS[u] for u in REFS})
            (exp / "decode_test_set_asr" / "decode.json").write_text(json.dumps(options), encoding="utf-8")
            (exp / "env.json").write_text(json.dumps(ENV), encoding="utf-8")
            extra.append(exp)
    text = results.build_results(exp_tree + extra, seeds=True,
                                 sections=[("Output control", ["part/final", "redecode"]), ("Long form", ["longform"])])
    main = text.split("## Results")[1].split("## Output control")[0]
    control, longform = text.split("## Output control")[1].split("## Long form")
    assert "redecode" not in main and "longform" not in main and "| part final |" in main.replace("PART", "part")
    assert "| test set | part final | redecode final |" in control
    assert "| part final / test_set (asr) |" not in control  # no statistics for plain decodes
    assert "| redecode final / test_set (asr) | 25.00 ± 0.00 | 25.00 ± 0.00 | 0.00 ± 0.00 | 25.00 ± 0.00 |" in control
    assert "| longform final / test_set (asr) | 1 ± 0 | - | 3.0 ± 0.0 | 2.50 ± 0.00 | - | 0.0200 ± 0.0000 |" in longform
    with pytest.raises(ConfigError, match="no decodes of 'nothing'"):
        results.build_results(exp_tree, seeds=True, sections=[("X", ["nothing"])])
    assert results_cli.main([*map(str, exp_tree + extra), "--seeds", "--section", "Output control=part/final redecode",
                             "--section", "bad"]) == 1
