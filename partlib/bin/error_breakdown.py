"""Where the error of a Speech LLM comes from: the pretrained encoder's own recognition, the
pretrained LLM's text-only quality and the whole system, side by side per language.

Example (egs/mini_synth/part1, after ./run.sh):

    python -m partlib.bin.error_breakdown --encoder exp/pretrained/encoder --llm exp/pretrained/llm \\
        --data dump/whisper_mel80/test_{en,de,fr,es,zh} \\
        --system part=exp/part_seed1/s4_text --system baseline_2stage=exp/baseline_2stage_seed1/s2_enc_all \\
        --out exp/error_breakdown

* encoder: greedy CTC of the encoder with the CTC head it was pretrained with
  (``partlib.bin.pretrain_encoder`` saves both) on every ``--data`` set, scored like the systems
  (the language's normaliser; WER, and CER where partlib.data.langs.uses_cer says so);
* LLM: the text-only dev figures that LM pretraining logged (``pretrain_metrics.json``:
  next-token accuracy of the copy and translation prompts, greedy X->en text BLEU);
* systems: the scored decodes ``<dir>/decode_<set>_asr`` and ``<dir>/decode_<set>_to_en_s2tt``.

Writes OUT.json and OUT.md (a table per language).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Dict, List, Optional

from partlib.bin import cli
from partlib.common import ConfigError, DataError, atomic_write
from partlib.scoring.scores import read_scores_if_any


def _read_json(path: Path) -> Dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise DataError(f"invalid JSON ({e})", path) from None


def _decode_score(stage_dir: Path, name: str, key: str, metric: Optional[str]) -> Optional[float]:
    scores = read_scores_if_any(stage_dir / name)
    if scores is None:
        return None
    return scores.sets.get(key, scores.overall).value(metric)


def breakdown(encoder: str, llm: Optional[str], data: List[str], systems: Dict[str, Path]) -> Dict:
    """The numbers of the three sources of error (see the module docstring)."""
    from partlib.data.datadir import DataDir
    from partlib.features.source import FeatureSource
    from partlib.data import langs
    from partlib.train.encoder_pretrain import ctc_scores, load_ctc_model, speech_examples

    model = load_ctc_model(encoder)
    dirs = [DataDir.load(d) for d in data]
    out: Dict = {"encoder": encoder, "sets": {}}
    for path, d in zip(data, dirs):
        set_name = Path(path).name
        lang_of = set(d.utt2lang.values()) if d.utt2lang else set()
        if len(lang_of) != 1:
            raise DataError(f"expected one language in utt2lang, found {sorted(lang_of) or 'none'}", Path(path) / "utt2lang")
        lang = lang_of.pop()
        enc = ctc_scores(model, speech_examples([d]), FeatureSource([d], model.encoder.n_mels))[lang]
        metric = "cer" if langs.uses_cer(lang) else "wer"
        row = {"lang": lang, "metric": metric, "utts": enc["utts"],
               "encoder_ctc": {"wer": enc["wer"], "cer": enc["cer"]}, "systems": {}}
        for name, stage_dir in systems.items():
            row["systems"][name] = {
                "asr": _decode_score(stage_dir, f"decode_{set_name}_asr", lang, metric),
                "s2tt_to_en_bleu": None if lang == "en" else _decode_score(
                    stage_dir, f"decode_{set_name}_to_en_s2tt", "overall", "bleu")}
        out["sets"][set_name] = row
    if llm:
        f = Path(llm) / "pretrain_metrics.json"
        if not f.is_file():
            raise DataError("no pretrain_metrics.json: not made by partlib.bin.pretrain_lm", f)
        m = _read_json(f)
        out["llm"] = {"dev_t2tt_to_en_bleu": m.get("dev_t2tt_to_en_bleu"),
                      "dev_token_accuracy": {k: v["acc"] for k, v in sorted(m.get("dev", {}).items())}}
    return out


def to_markdown(res: Dict) -> str:
    """The breakdown as Markdown tables."""
    names = sorted({n for r in res["sets"].values() for n in r["systems"]})
    head = ["test set", "metric", "encoder CTC"] + [f"{n} ASR" for n in names] + [f"{n} X→en BLEU" for n in names]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    fmt = lambda v: "-" if v is None else f"{v:.1f}"  # noqa: E731
    for set_name, r in res["sets"].items():
        m = r["metric"]
        lines.append("| " + " | ".join(
            [set_name, m.upper(), fmt(r["encoder_ctc"][m])] + [fmt(r["systems"][n]["asr"]) for n in names]
            + [fmt(r["systems"][n]["s2tt_to_en_bleu"]) for n in names]) + " |")
    rows = list(res["sets"].values())
    if rows:
        mean = lambda xs: None if any(x is None for x in xs) or not xs else sum(xs) / len(xs)  # noqa: E731
        lines.append("| **mean** | | " + fmt(mean([r["encoder_ctc"][r["metric"]] for r in rows])) + " | "
                     + " | ".join(fmt(mean([r["systems"][n]["asr"] for r in rows])) for n in names) + " | "
                     + " | ".join(fmt(mean([r["systems"][n]["s2tt_to_en_bleu"] for r in rows if r["lang"] != "en"]))
                                  for n in names) + " |")
    if "llm" in res:
        acc = ", ".join(f"{k} {100 * v:.1f}%" for k, v in res["llm"]["dev_token_accuracy"].items())
        lines += ["", f"LLM alone, text in and out (dev): X→en text translation BLEU "
                  f"{fmt(res['llm']['dev_t2tt_to_en_bleu'])}; next-token accuracy {acc}."]
    return "\n".join(lines) + "\n"


def get_parser() -> argparse.ArgumentParser:
    """The command-line interface."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--encoder", required=True, help="encoder dir with its CTC head (partlib.bin.pretrain_encoder)")
    p.add_argument("--llm", help="LLM dir with pretrain_metrics.json (partlib.bin.pretrain_lm)")
    p.add_argument("--data", nargs="+", required=True, help="test (or dev) data dirs with features, one language each")
    p.add_argument("--system", action="append", default=[], metavar="NAME=STAGE_DIR",
                   help="a system's decoded stage dir (holds decode_<set>_asr ...); repeatable")
    p.add_argument("--out", required=True, help="output prefix: OUT.json and OUT.md")
    return p


@cli
def main(argv: Optional[List[str]] = None) -> int:
    """Write the error breakdown."""
    args = get_parser().parse_args(argv)
    systems: Dict[str, Path] = {}
    for spec in args.system:
        name, sep, path = spec.partition("=")
        if not sep or not name or not path:
            raise ConfigError(f"--system {spec!r}: expected NAME=STAGE_DIR")
        if not Path(path).is_dir():
            raise DataError("system stage dir not found", path)
        systems[name] = Path(path)
    res = breakdown(args.encoder, args.llm, args.data, systems)
    atomic_write(args.out + ".json", json.dumps(res, indent=1, sort_keys=True, ensure_ascii=False) + "\n")
    atomic_write(args.out + ".md", to_markdown(res))
    sys.stdout.write(to_markdown(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
