"""The Kaldi-style data-dir tools in utils/, called as a recipe calls them (through a utils link)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Dict, Optional

import pytest

from partlib.data.datadir import DataDir
from partlib.data.kv import read_kv
from partlib.data.validate import validate_data_dir

REPO = Path(__file__).resolve().parents[1]

FILES = {
    "wav.scp": "sa-1 /c/a1.wav\nsa-2 /c/a2.wav\nsb-1 /c/b1.wav\nsc-1 /c/c1.wav\n",
    "text": "sa-1 one\nsa-2 two\nsb-1 three\nsc-1 four\n",
    "utt2spk": "sa-1 sa\nsa-2 sa\nsb-1 sb\nsc-1 sc\n",
    "spk2utt": "sa sa-1 sa-2\nsb sb-1\nsc sc-1\n",
    "utt2lang": "sa-1 en\nsa-2 en\nsb-1 fr\nsc-1 fr\n",
}


@pytest.fixture
def recipe(tmp_path: Path) -> Path:
    """A recipe dir with ``utils`` linked to the repository's utils and one data dir."""
    rec = tmp_path / "egs" / "corpus" / "part1"
    rec.mkdir(parents=True)
    (rec / "utils").symlink_to(REPO / "utils")
    data = rec / "data" / "train"
    data.mkdir(parents=True)
    for name, content in FILES.items():
        (data / name).write_text(content, encoding="utf-8")
    return rec


def run(rec: Path, *args: str, stdin: Optional[str] = None,
        env: Optional[Dict[str, str]] = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHON": sys.executable} if env is None else env
    return subprocess.run(list(args), cwd=rec, input=stdin, capture_output=True, text=True,
                          env=env)


def test_utt2spk_spk2utt_round_trip(recipe: Path) -> None:
    r = run(recipe, "utils/utt2spk_to_spk2utt.pl", stdin=FILES["utt2spk"])
    assert r.returncode == 0 and r.stdout == FILES["spk2utt"]
    r = run(recipe, "utils/spk2utt_to_utt2spk.pl", stdin=r.stdout)
    assert r.returncode == 0 and r.stdout == FILES["utt2spk"]
    r = run(recipe, "utils/utt2spk_to_spk2utt.pl", "data/train/utt2spk")
    assert r.stdout == FILES["spk2utt"]


def test_speaker_tools_reject_bad_lines(recipe: Path) -> None:
    r = run(recipe, "utils/utt2spk_to_spk2utt.pl", stdin="u1 s1\nu2\n")
    assert r.returncode != 0 and "line 2" in r.stderr
    assert run(recipe, "utils/spk2utt_to_utt2spk.pl", stdin="s1\n").returncode != 0


def test_filter_scp(recipe: Path) -> None:
    (recipe / "ids").write_text("sb-1\nsa-1 ignored-field\n")
    r = run(recipe, "utils/filter_scp.pl", "ids", "data/train/text")
    assert r.stdout == "sa-1 one\nsb-1 three\n"
    r = run(recipe, "utils/filter_scp.pl", "--exclude", "ids", stdin=FILES["text"])
    assert r.stdout == "sa-2 two\nsc-1 four\n"
    (recipe / "spk").write_text("sa\n")
    r = run(recipe, "utils/filter_scp.pl", "-f", "2", "spk", "data/train/utt2spk")
    assert r.stdout == "sa-1 sa\nsa-2 sa\n"
    assert run(recipe, "utils/filter_scp.pl", "-f", "0", "spk", "x").returncode != 0


def test_fix_data_dir(recipe: Path) -> None:
    data = recipe / "data" / "train"
    (data / "text").write_text("sc-1 four\nsa-1 one\nsb-1 three\n")      # unsorted, sa-2 missing
    r = run(recipe, "utils/fix_data_dir.sh", "data/train")
    assert r.returncode == 0, r.stderr
    assert DataDir.load(data).utts == ["sa-1", "sb-1", "sc-1"]
    assert read_kv(data / "spk2utt")["sa"] == "sa-1"
    assert (data / ".backup" / "utt2spk").read_text() == FILES["utt2spk"]
    assert run(recipe, "utils/validate_data_dir.sh", "--no-feats", "data/train").returncode == 0


@pytest.mark.parametrize("args,expected", [
    (["--first", "data/train", "2", "data/sub"], ["sa-1", "sa-2"]),     # Kaldi's form
    (["--first", "2", "data/train", "data/sub"], ["sa-1", "sa-2"]),
    (["--last", "data/train", "1", "data/sub"], ["sc-1"]),
    (["--last", "1", "data/train", "data/sub"], ["sc-1"]),
    (["--utt-list", "list", "data/train", "data/sub"], ["sb-1", "sc-1"]),
    (["--spk-list", "list", "data/train", "data/sub"], ["sa-1", "sa-2"]),
])
def test_subset_data_dir(recipe: Path, args, expected) -> None:
    (recipe / "list").write_text("sa\n" if "--spk-list" in args else "sc-1\nsb-1\n")
    r = run(recipe, "utils/subset_data_dir.sh", *args)
    assert r.returncode == 0, r.stderr
    assert DataDir.load(recipe / "data" / "sub").utts == expected


def test_subset_random_is_reproducible(recipe: Path) -> None:
    got = []
    for out in ("data/r1", "data/r2"):
        assert run(recipe, "utils/subset_data_dir.sh", "--seed", "7", "data/train", "3",
                   out).returncode == 0
        got.append(DataDir.load(recipe / out).utts)
    assert got[0] == got[1] and len(got[0]) == 3


@pytest.mark.parametrize("args", [["data/train", "data/sub"], ["--first", "data/train"],
                                  ["--bogus", "data/train", "1", "data/sub"],
                                  ["data/train", "9", "data/sub"]])
def test_subset_usage_errors(recipe: Path, args) -> None:
    r = run(recipe, "utils/subset_data_dir.sh", *args)
    assert r.returncode != 0 and not (recipe / "data" / "sub").exists()


def test_combine_copy_split(recipe: Path) -> None:
    r = run(recipe, "utils/copy_data_dir.sh", "--utt-prefix", "sp0.9-", "--spk_prefix", "sp0.9-",
            "data/train", "data/sp")
    assert r.returncode == 0, r.stderr
    assert DataDir.load(recipe / "data" / "sp").utts[0] == "sp0.9-sa-1"
    r = run(recipe, "utils/combine_data.sh", "data/all", "data/train", "data/sp")
    assert r.returncode == 0, r.stderr
    validate_data_dir(recipe / "data" / "all", no_feats=True)
    assert len(DataDir.load(recipe / "data" / "all")) == 8
    r = run(recipe, "utils/split_data.sh", "data/all", "3")
    assert r.returncode == 0, r.stderr
    parts = [DataDir.load(recipe / "data" / "all" / "split3" / str(i)) for i in (1, 2, 3)]
    assert sum(len(p) for p in parts) == 8
    assert not set(parts[0].spk2utt) & set(parts[1].spk2utt)
    r = run(recipe, "utils/split_data.sh", "--per-utt", "data/train", "4")
    assert r.returncode == 0, r.stderr
    assert [len(DataDir.load(recipe / "data" / "train" / "split4utt" / str(i)))
            for i in (1, 2, 3, 4)] == [1, 1, 1, 1]


def test_errors_name_file_line_and_utt(recipe: Path) -> None:
    (recipe / "data" / "train" / "utt2lang").write_text("sa-1 en\nsa-2 klingon\nsb-1 fr\nsc-1 fr\n")
    r = run(recipe, "utils/copy_data_dir.sh", "data/train", "data/c")
    assert r.returncode == 1
    assert "data/train/utt2lang:2: utterance 'sa-2'" in r.stderr
    assert not (recipe / "data" / "c").exists()


def test_works_without_python_variable(recipe: Path) -> None:
    # path.sh puts the venv first on PATH; the script then finds the package through its own
    # location even where it is not installed.
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHON", "PYTHONPATH")}
    env["PATH"] = f"{Path(sys.executable).parent}:{env.get('PATH', '')}"
    r = run(recipe, "utils/validate_data_dir.sh", "--no-feats", "data/train", env=env)
    assert r.returncode == 0, r.stderr
