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


# The miniature Common Voice 15: de (raw quotes, odd spaces, colliding client-id prefixes), zh-CN,
# and the other eight paper languages with punctuation, brackets, numbers, full-width forms and
# diacritics.
CV15_TABLES: Dict[str, Dict[str, List[str]]] = {
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
    "yue": {
        "train": [cv_row(SPK_A, "common_voice_yue_50.mp3", "你食咗飯未呀？（好肚餓）", "male", "yue")],
        "dev": [cv_row(SPK_B, "common_voice_yue_51.mp3", "佢哋喺3號巴士站等緊。", "", "yue")],
        "test": [cv_row(SPK_C, "common_voice_yue_52.mp3", "「唔該晒」，聽日見！", "female", "yue")],
    },
    "ko": {
        "train": [cv_row(SPK_A, "common_voice_ko_60.mp3", "안녕하세요, 반갑습니다!", "male", "ko")],
        "dev": [cv_row(SPK_B, "common_voice_ko_61.mp3", "오늘은 2023년 9월 8일입니다.", "", "ko")],
        "test": [cv_row(SPK_C, "common_voice_ko_62.mp3", "[웃음] 정말요? (네) 좋아요…", "female", "ko")],
    },
    "ru": {
        "train": [cv_row(SPK_A, "common_voice_ru_70.mp3", "Ёлки-палки, это «тест»!", "male", "ru")],
        "dev": [cv_row(SPK_B, "common_voice_ru_71.mp3", "В 2023 году было 15 версий.", "", "ru")],
        "test": [cv_row(SPK_C, "common_voice_ru_72.mp3", "Съешь же ещё этих мягких французских булок (да).",
                        "female", "ru")],
    },
    "en": {
        "train": [cv_row(SPK_A, "common_voice_en_100.mp3", "I'd like 2 coffees, please — thanks!", "male", "en")],
        "dev": [cv_row(SPK_B, "common_voice_en_101.mp3", "The café's naïve résumé (draft).", "", "en")],
        "test": [cv_row(SPK_C, "common_voice_en_102.mp3", "Dr. Jones lives at 221B Baker St. [noise]", "female",
                        "en")],
    },
    "fr": {
        "train": [cv_row(SPK_A, "common_voice_fr_110.mp3", "Où est l'hôtel ? Ça coûte 20 € !", "male", "fr")],
        "dev": [cv_row(SPK_B, "common_voice_fr_111.mp3", "L'été dernier, j'ai vu « Les Misérables » (1862).", "",
                       "fr")],
        "test": [cv_row(SPK_C, "common_voice_fr_112.mp3", "Noël à Besançon : c'est magnifique…", "female", "fr")],
    },
    "es": {
        "train": [cv_row(SPK_A, "common_voice_es_120.mp3", "¿Dónde está la estación? ¡Aquí!", "male", "es")],
        "dev": [cv_row(SPK_B, "common_voice_es_121.mp3", "El niño tiene 5 años (más o menos).", "", "es")],
        "test": [cv_row(SPK_C, "common_voice_es_122.mp3", "Mañana iré a Cádiz – ¡qué ilusión!", "female", "es")],
    },
    "it": {
        "train": [cv_row(SPK_A, "common_voice_it_130.mp3", "Perché è così difficile? Non lo so.", "male", "it")],
        "dev": [cv_row(SPK_B, "common_voice_it_131.mp3", "Città del Vaticano: 0,44 km² [circa].", "", "it")],
        "test": [cv_row(SPK_C, "common_voice_it_132.mp3", "L'università è aperta 24 ore su 24.", "female", "it")],
    },
    "ja": {
        "train": [cv_row(SPK_A, "common_voice_ja_80.mp3", "がっこうへ行きます。", "male", "ja")],
        "dev": [cv_row(SPK_B, "common_voice_ja_81.mp3", "ﾃﾞｰﾀ（半角）のテスト！", "", "ja")],
        "test": [cv_row(SPK_C, "common_voice_ja_82.mp3", "東京は２０２３年に…【速報】", "female", "ja")],
    },
}


def default_cv15(root: Path) -> Path:
    """The miniature Common Voice 15 release (:data:`CV15_TABLES`)."""
    return make_cv15(root, CV15_TABLES)


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


# The miniature FLEURS: de_de (plain wavs, odd Unicode spaces), en_us and cmn_hans_cn (tar.gz
# archives), and the other seven of the paper's ten languages with punctuation, brackets, numbers
# and symbols.
FLEURS_TABLES: Dict[str, Dict[str, List[str]]] = {
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
    "ko_kr": {"train": [fleurs_row("8", "411.wav", "지금은 오후 3시 30분입니다. (대략)")],
              "dev": [fleurs_row("20", "412.wav", "“안녕!”이라고 말했다.")],
              "test": [fleurs_row("30", "413.wav", "서울의 인구는 약 9,700,000명이다.")]},
    "yue_hant_hk": {"train": [fleurs_row("8", "511.wav", "香港有7百幾萬人。")],
                    "dev": [fleurs_row("20", "512.wav", "佢話：「好嘢！」")],
                    "test": [fleurs_row("30", "513.wav", "今日落雨（黃雨）[雜音]")]},
    "ru_ru": {"train": [fleurs_row("8", "611.wav", "Москва — столица России.")],
              "dev": [fleurs_row("20", "612.wav", "Температура: −5 °C, ветер 3 м/с.")],
              "test": [fleurs_row("30", "613.wav", "Он сказал: «Привет!» [шум]")]},
    "ja_jp": {"train": [fleurs_row("8", "711.wav", "東京の人口は約1,400万人です。")],
              "dev": [fleurs_row("20", "712.wav", "「こんにちは！」と言った。")],
              "test": [fleurs_row("30", "713.wav", "今日は雨（小雨）です。")]},
    "fr_fr": {"train": [fleurs_row("8", "811.wav", "C'est l'été à Paris, n'est-ce pas ?")],
              "dev": [fleurs_row("20", "812.wav", "Il a dit : « Bonjour ! »")],
              "test": [fleurs_row("30", "813.wav", "La tour mesure 330 m (environ).")]},
    "es_419": {"train": [fleurs_row("8", "911.wav", "¿Dónde está la estación?")],
               "dev": [fleurs_row("20", "912.wav", "Son las 3:30, señor.")],
               "test": [fleurs_row("30", "913.wav", "¡Qué día tan bonito! [ruido]")]},
    "it_it": {"train": [fleurs_row("8", "1011.wav", "Perché è così difficile?")],
              "dev": [fleurs_row("20", "1012.wav", "L'università ha 5.000 studenti.")],
              "test": [fleurs_row("30", "1013.wav", "Città (vecchia) e nuova.")]},
}


def default_fleurs(root: Path) -> Path:
    """The miniature FLEURS (:data:`FLEURS_TABLES`)."""
    return make_fleurs(root, FLEURS_TABLES, archived=("en_us", "cmn_hans_cn"))


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


# The miniature CoVoST 2: the paper's seven directions into English (zh-CN ja de fr es it ru -> en;
# English with numbers, contractions, brackets) and en->de; common_voice_de_5 (train here) is also a CV15 de test clip, and common_voice_de_1 (a
# CV15 de train clip) is a CoVoST 2 test clip. Rows: (path, translation, split).
COVOST2_TABLES: Dict[str, List[Tuple[str, str, str]]] = {
    "de_en": [("common_voice_de_1.mp3", "\"Good-bye,\" said the boy.", "test"),
              ("common_voice_de_6.mp3", "Good evening.", "train"),
              ("common_voice_de_7.mp3", "Good night.", "train_covost"),
              ("common_voice_de_8.mp3", "It works.", "dev"),
              ("common_voice_de_5.mp3", "This is a test.", "train"),
              ("common_voice_de_99.mp3", "Not in validated.", "train")],
    "zh-CN_en": [("common_voice_zh-CN_20.mp3", "Hello.", "train"),
                 ("common_voice_zh-CN_21.mp3", "Good morning.", "dev"),
                 ("common_voice_zh-CN_22.mp3", "This is a test.", "test")],
    "ru_en": [("common_voice_ru_90.mp3", "It's 3:30 p.m. and the colour costs £20 (approx.).", "train"),
              ("common_voice_ru_91.mp3", "Mr. Smith won't go [laughs] to the 1960s party.", "dev"),
              ("common_voice_ru_92.mp3", "Twenty-one percent, that's 21%!", "test")],
    "ja_en": [("common_voice_ja_40.mp3", "The population of Tokyo is about 14 million.", "train"),
              ("common_voice_ja_41.mp3", "\"Hello!\" he said.", "dev"),
              ("common_voice_ja_42.mp3", "It's raining today (lightly).", "test")],
    "fr_en": [("common_voice_fr_50.mp3", "It's summer in Paris, isn't it?", "train"),
              ("common_voice_fr_51.mp3", "He said: \"Good morning!\"", "dev"),
              ("common_voice_fr_52.mp3", "The tower is 330 m tall (about).", "test")],
    "es_en": [("common_voice_es_60.mp3", "Where is the station?", "train"),
              ("common_voice_es_61.mp3", "It's 3:30, sir.", "dev"),
              ("common_voice_es_62.mp3", "What a beautiful day! [noise]", "test")],
    "it_en": [("common_voice_it_70.mp3", "Why is it so hard?", "train"),
              ("common_voice_it_71.mp3", "The university has 5,000 students.", "dev"),
              ("common_voice_it_72.mp3", "Old (town) and new.", "test")],
    "en_de": [("common_voice_en_30.mp3", "Guten Abend.", "train"),
              ("common_voice_en_31.mp3", "Das ist ein Test.", "test"),
              ("common_voice_en_32.mp3", "Es geht.", "dev")],
}
CV4_VALIDATED: Dict[str, List[str]] = {
    "de": [cv4_row(SPK_A, "common_voice_de_1.mp3", '"""Good-bye,"" said the boy."'),
           cv4_row(SPK_B, "common_voice_de_6.mp3", "Guten Abend."),
           cv4_row(SPK_B, "common_voice_de_7.mp3", "Gute Nacht."),
           cv4_row(SPK_C, "common_voice_de_8.mp3", "Es funktioniert."),
           cv4_row(SPK_C, "common_voice_de_5.mp3", "Das ist ein Test.")],
    "zh-CN": [cv4_row(SPK_A, "common_voice_zh-CN_20.mp3", "你好"),
              cv4_row(SPK_B, "common_voice_zh-CN_21.mp3", "早上好"),
              cv4_row(SPK_C, "common_voice_zh-CN_22.mp3", "这是一个测试")],
    "ru": [cv4_row(SPK_A, "common_voice_ru_90.mp3", "Сейчас 15:30, а цвет стоит 20 фунтов (примерно)."),
           cv4_row(SPK_B, "common_voice_ru_91.mp3", "Г-н Смит не пойдёт на вечеринку [смеётся]."),
           cv4_row(SPK_C, "common_voice_ru_92.mp3", "Двадцать один процент — это 21 %!")],
    "ja": [cv4_row(SPK_A, "common_voice_ja_40.mp3", "東京の人口は約1,400万人です。"),
           cv4_row(SPK_B, "common_voice_ja_41.mp3", "「こんにちは！」と言った。"),
           cv4_row(SPK_C, "common_voice_ja_42.mp3", "今日は雨（小雨）です。")],
    "fr": [cv4_row(SPK_A, "common_voice_fr_50.mp3", "C'est l'été à Paris, n'est-ce pas ?"),
           cv4_row(SPK_B, "common_voice_fr_51.mp3", "Il a dit : « Bonjour ! »"),
           cv4_row(SPK_C, "common_voice_fr_52.mp3", "La tour mesure 330 m (environ).")],
    "es": [cv4_row(SPK_A, "common_voice_es_60.mp3", "¿Dónde está la estación?"),
           cv4_row(SPK_B, "common_voice_es_61.mp3", "Son las 3:30, señor."),
           cv4_row(SPK_C, "common_voice_es_62.mp3", "¡Qué día tan bonito! [ruido]")],
    "it": [cv4_row(SPK_A, "common_voice_it_70.mp3", "Perché è così difficile?"),
           cv4_row(SPK_B, "common_voice_it_71.mp3", "L'università ha 5.000 studenti."),
           cv4_row(SPK_C, "common_voice_it_72.mp3", "Città (vecchia) e nuova.")],
    "en": [cv4_row(SPK_A, "common_voice_en_30.mp3", "Good evening."),
           cv4_row(SPK_B, "common_voice_en_31.mp3", "This is a test."),
           cv4_row(SPK_C, "common_voice_en_32.mp3", "It works.")],
}


def default_covost2(covost: Path, cv4: Path) -> None:
    """The miniature CoVoST 2 and Common Voice 4 (:data:`COVOST2_TABLES`, :data:`CV4_VALIDATED`)."""
    make_covost2(covost, cv4, COVOST2_TABLES, CV4_VALIDATED)


def reference_texts() -> List[Tuple[str, str]]:
    """(corpus language code, text) of every transcript and translation of the miniature corpora."""
    out = [(loc, r.split("\t")[2]) for loc, splits in CV15_TABLES.items() for rows in splits.values() for r in rows]
    out += [(loc, r.split("\t")[2]) for loc, splits in FLEURS_TABLES.items() for rows in splits.values() for r in rows]
    out += [("zh", seg[3]) for *_, segs in WENET_AUDIOS for seg in segs]
    out += [(d.split("_")[1], t) for d, rows in COVOST2_TABLES.items() for _, t, _ in rows]
    out += [(loc, r.split("\t")[2]) for loc, rows in CV4_VALIDATED.items() for r in rows]
    return out


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


def conf_value(conf: Path, name: str) -> str:
    """The value of a shell variable that a recipe's ``conf/*.conf`` sets (the file sourced by bash)."""
    return subprocess.run(["bash", "-c", f'. "$0"; printf %s "${name}"', str(conf)], check=True,
                          capture_output=True, text=True).stdout


def read_file(path: Path) -> List[str]:
    """The lines of a data-dir file."""
    return path.read_text(encoding="utf-8").splitlines()
