"""Miniature copies of the paper's corpora in their real on-disk formats, and a recipe runner.

Audio is real (short tones) in each corpus's codec: mp3 for Common Voice / CoVoST 2, wav for
FLEURS (plain and as a tar.gz archive), Ogg Opus for WenetSpeech.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import soundfile as sf

REPO = Path(__file__).resolve().parents[1]
RECIPES = ("commonvoice15", "fleurs", "wenetspeech", "covost2", "multilingual")
CV_HEADER = "client_id\tpath\tsentence\tup_votes\tdown_votes\tage\tgender\taccents\tvariant\tlocale\tsegment"
CV4_HEADER = "client_id\tpath\tsentence\tup_votes\tdown_votes\tage\tgender\taccent"

# Two client ids sharing their first 16 hex chars: the short speaker ids must still differ.
SPK_A = "0123456789abcdef" + "a" * 112
SPK_B = "0123456789abcdef" + "b" * 112
SPK_C = "fedcba9876543210" + "c" * 112


def tone(seconds: float, sr: int, freq: float = 440.0) -> np.ndarray:
    """A quiet sine tone (float32)."""
    t = np.arange(int(seconds * sr)) / sr
    return (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def write_mp3(path: Path, seconds: float = 0.3) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, tone(seconds, 48000), 48000, format="MP3")


def cv_row(client: str, clip: str, sentence: str, gender: str = "", locale: str = "de") -> str:
    """One Common Voice 15 tsv line (11 columns, quotes raw)."""
    return "\t".join([client, clip, sentence, "2", "0", "twenties", gender, "", "", locale, ""])


def make_cv15(root: Path, tables: Dict[str, Dict[str, List[str]]], audio: bool = True) -> Path:
    """``tables[locale][split]`` = tsv lines (without header); writes tsvs and the clips they list."""
    for locale, splits in tables.items():
        base = root / locale
        (base / "clips").mkdir(parents=True, exist_ok=True)
        for split, rows in splits.items():
            (base / f"{split}.tsv").write_text(CV_HEADER + "\n" + "".join(r + "\n" for r in rows),
                                               encoding="utf-8")
            if audio:
                for r in rows:
                    write_mp3(base / "clips" / r.split("\t")[1])
    return root


def default_cv15(root: Path) -> Path:
    """de (with raw quotes, odd spaces, colliding client-id prefixes) and zh-CN."""
    return make_cv15(root, {
        "de": {
            "train": [cv_row(SPK_A, "common_voice_de_1.mp3", '"""Good-bye,"" said the boy."', "male"),
                      cv_row(SPK_A, "common_voice_de_2.mp3", "Hallo\u00a0 Welt!", "male"),
                      cv_row(SPK_B, "common_voice_de_3.mp3", "Er sagte: \"Nein\".", "")],
            "dev": [cv_row(SPK_C, "common_voice_de_4.mp3", "Guten Morgen.", "female")],
            "test": [cv_row(SPK_C, "common_voice_de_5.mp3", "Das ist ein Test.", "female")],
        },
        "zh-CN": {
            "train": [cv_row(SPK_A, "common_voice_zh-CN_10.mp3", "你好世界", "male", "zh-CN")],
            "dev": [cv_row(SPK_B, "common_voice_zh-CN_11.mp3", "早上好", "", "zh-CN")],
            "test": [cv_row(SPK_C, "common_voice_zh-CN_12.mp3", "这是一个测试", "female", "zh-CN")],
        },
    })


def fleurs_row(sid: str, name: str, raw: str, gender: str = "MALE") -> str:
    """One FLEURS tsv line (7 columns, no header)."""
    norm = raw.lower()
    return "\t".join([sid, name, raw, norm, " ".join(norm.replace(" ", "|")), "4800", gender])


def make_fleurs(root: Path, tables: Dict[str, Dict[str, List[str]]], archived: Sequence[str] = ()) -> Path:
    """Write per-locale tsvs and 16 kHz wavs; locales in ``archived`` get audio/<split>.tar.gz."""
    for locale, splits in tables.items():
        base = root / locale
        for split, rows in splits.items():
            base.mkdir(parents=True, exist_ok=True)
            (base / f"{split}.tsv").write_text("".join(r + "\n" for r in rows), encoding="utf-8")
            wav_dir = base / "audio" / split
            wav_dir.mkdir(parents=True, exist_ok=True)
            for r in rows:
                sf.write(wav_dir / r.split("\t")[1], tone(0.3, 16000), 16000)
            if locale in archived:
                with tarfile.open(base / "audio" / f"{split}.tar.gz", "w:gz") as tar:
                    tar.add(wav_dir, arcname=split)
                shutil.rmtree(wav_dir)
    return root


def default_fleurs(root: Path) -> Path:
    """de_de (plain wavs, odd Unicode spaces), en_us and cmn_hans_cn (tar.gz archives)."""
    return make_fleurs(root, {
        "de_de": {"train": [fleurs_row("7", "111.wav", "Das\u2009ist\u00a0gut\u200b."),
                            fleurs_row("8", "112.wav", "Zweiter Satz.", "FEMALE")],
                  "dev": [fleurs_row("20", "113.wav", "Dev Satz.")],
                  "test": [fleurs_row("30", "114.wav", "Test Satz.")]},
        "en_us": {"train": [fleurs_row("7", "211.wav", "That is good."),
                            fleurs_row("7", "212.wav", "That is good!", "FEMALE"),
                            fleurs_row("9", "213.wav", "Unpaired sentence."),
                            fleurs_row("8", "216.wav", "Second sentence.")],
                  "dev": [fleurs_row("20", "214.wav", "Dev sentence.")],
                  "test": [fleurs_row("30", "215.wav", "Test sentence.")]},
        "cmn_hans_cn": {"train": [fleurs_row("8", "311.wav", "第二句。")],
                        "dev": [fleurs_row("20", "312.wav", "开发句。")],
                        "test": [fleurs_row("30", "313.wav", "测试句。")]},
    }, archived=("en_us", "cmn_hans_cn"))


WENET_AUDIOS = [
    # (aid, folder, duration, [(sid suffix, begin, end, text, subsets)])
    ("Y0000000000_--5llN02F84", "train/youtube/B00000", 3.0,
     [("_S00000", 0.2, 1.0, "怎么样这些日子住得还习惯吧", ["L", "M", "S"]),
      ("_S00001", 1.1, 1.9, "还行", ["L"]),
      ("_S00002", 2.0, 2.9, "那就好", ["L", "M"])]),
    ("-P0000000001", "train/podcast/B00001", 2.0,
     [("_S00000", 0.0, 1.5, "今天 天气\u3000不错", ["S", "M", "L"])]),
    ("Y0000000002_dev", "dev", 1.5, [("_S00000", 0.1, 1.2, "开发集的句子", ["DEV"])]),
    ("Y0000000003_net", "test_net", 1.5, [("_S00000", 0.0, 1.0, "网络测试", ["TEST_NET"])]),
    ("Y0000000004_meet", "test_meeting", 1.5, [("_S00000", 0.3, 1.4, "会议测试", ["TEST_MEETING"])]),
]


def make_wenetspeech(root: Path) -> Path:
    """WenetSpeech.json (with other top-level keys around "audios") and Opus recordings."""
    audios = []
    for i, (aid, folder, dur, segs) in enumerate(WENET_AUDIOS):
        rel = f"audio/{folder}/{aid}.opus"
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        sf.write(root / rel, tone(dur, 16000, 300 + 100 * i), 16000, format="OGG", subtype="OPUS")
        audios.append({"aid": aid, "path": rel, "duration": dur, "source": "youtube",
                       "segments": [{"sid": aid + s, "begin_time": b, "end_time": e, "text": t,
                                     "confidence": 1.0, "subsets": sub} for s, b, e, t, sub in segs]})
    doc = {"dataset": "WenetSpeech", "version": "v1.0", "audios": audios, "count": len(audios)}
    (root / "WenetSpeech.json").write_text(json.dumps(doc, ensure_ascii=False, indent=1), encoding="utf-8")
    return root


def cv4_row(client: str, clip: str, sentence: str) -> str:
    """One Common Voice 4 validated.tsv line (8 columns)."""
    return "\t".join([client, clip, sentence, "2", "0", "", "", ""])


def make_covost2(covost: Path, cv4: Path, tables: Dict[str, List[Tuple[str, str, str]]],
                 validated: Dict[str, List[str]]) -> None:
    """``tables[direction]`` = [(path, translation, split)]; ``validated[locale]`` = CV4 rows."""
    covost.mkdir(parents=True, exist_ok=True)
    for direction, rows in tables.items():
        # Columns in an unusual order with an extra one: the reader must select them by name.
        lines = ["split\tpath\tclient_id\ttranslation"]
        lines += [f"{split}\t{path}\tx\t{trans}" for path, trans, split in rows]
        (covost / f"covost_v2.{direction}.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    for locale, rows in validated.items():
        (cv4 / locale / "clips").mkdir(parents=True, exist_ok=True)
        (cv4 / locale / "validated.tsv").write_text(CV4_HEADER + "\n" + "".join(r + "\n" for r in rows),
                                                   encoding="utf-8")
        for r in rows:
            write_mp3(cv4 / locale / "clips" / r.split("\t")[1])


def default_covost2(covost: Path, cv4: Path) -> None:
    """de->en, zh-CN->en and en->de; common_voice_de_5 (train here) is also a CV15 de test clip,
    and common_voice_de_1 (a CV15 de train clip) is a CoVoST 2 test clip."""
    make_covost2(covost, cv4, {
        "de_en": [("common_voice_de_1.mp3", "\"Good-bye,\" said the boy.", "test"),
                  ("common_voice_de_6.mp3", "Good evening.", "train"),
                  ("common_voice_de_7.mp3", "Good night.", "train_covost"),
                  ("common_voice_de_8.mp3", "It works.", "dev"),
                  ("common_voice_de_5.mp3", "This is a test.", "train"),
                  ("common_voice_de_99.mp3", "Not in validated.", "train")],
        "zh-CN_en": [("common_voice_zh-CN_20.mp3", "Hello.", "train"),
                     ("common_voice_zh-CN_21.mp3", "Good morning.", "dev"),
                     ("common_voice_zh-CN_22.mp3", "This is a test.", "test")],
        "en_de": [("common_voice_en_30.mp3", "Guten Abend.", "train"),
                  ("common_voice_en_31.mp3", "Das ist ein Test.", "test"),
                  ("common_voice_en_32.mp3", "Es geht.", "dev")],
    }, {
        "de": [cv4_row(SPK_A, "common_voice_de_1.mp3", '"""Good-bye,"" said the boy."'),
               cv4_row(SPK_B, "common_voice_de_6.mp3", "Guten Abend."),
               cv4_row(SPK_B, "common_voice_de_7.mp3", "Gute Nacht."),
               cv4_row(SPK_C, "common_voice_de_8.mp3", "Es funktioniert."),
               cv4_row(SPK_C, "common_voice_de_5.mp3", "Das ist ein Test.")],
        "zh-CN": [cv4_row(SPK_A, "common_voice_zh-CN_20.mp3", "你好"),
                  cv4_row(SPK_B, "common_voice_zh-CN_21.mp3", "早上好"),
                  cv4_row(SPK_C, "common_voice_zh-CN_22.mp3", "这是一个测试")],
        "en": [cv4_row(SPK_A, "common_voice_en_30.mp3", "Good evening."),
               cv4_row(SPK_B, "common_voice_en_31.mp3", "This is a test."),
               cv4_row(SPK_C, "common_voice_en_32.mp3", "It works.")],
    })


def recipe_copy(tmp: Path) -> Path:
    """Copy the corpus recipes (db.sh, local/) into ``tmp/egs`` with a ``utils`` link each."""
    for name in RECIPES:
        src, dst = REPO / "egs" / name / "part1", tmp / "egs" / name / "part1"
        shutil.copytree(src / "local", dst / "local")
        shutil.copy(src / "db.sh", dst / "db.sh")
        (dst / "utils").symlink_to(REPO / "utils")
    return tmp / "egs"


def run_data_sh(recipe_dir: Path, args: Sequence[str] = (), env: Optional[Dict[str, str]] = None
                ) -> subprocess.CompletedProcess:
    """Run ``local/data.sh`` of a recipe copy with the test's Python first on PATH."""
    full_env = {k: v for k, v in os.environ.items()
                if k not in ("CV15", "FLEURS", "WENETSPEECH", "COVOST2", "CV4")}
    full_env["PATH"] = f"{Path(sys.executable).parent}:{full_env.get('PATH', '')}"
    full_env.update(env or {})
    return subprocess.run(["bash", "local/data.sh", *args], cwd=recipe_dir, env=full_env,
                          capture_output=True, text=True, timeout=300)


def read_file(path: Path) -> List[str]:
    """The lines of a data-dir file."""
    return path.read_text(encoding="utf-8").splitlines()
