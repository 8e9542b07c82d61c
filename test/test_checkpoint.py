"""Checkpoint integrity: checksums written with the file, fallback to the previous checkpoint,
removal of what interrupted saves leave, a full disk during a save, atomic directory replacement."""
import errno
import hashlib
import json
import logging

import pytest
import torch

from partlib import common
from partlib.common import PartError, atomic_write, replace_dir
from partlib.train import checkpoint
from partlib.train.checkpoint import CheckpointError, CheckpointManager
from fault_inject import FullDisk


def _state(step: int) -> dict:
    return {"step": step, "w": torch.full((64,), float(step))}


def _manager(tmp_path, steps=(1, 2, 3)) -> CheckpointManager:
    m = CheckpointManager(tmp_path / "ck", keep_last=5)
    for s in steps:
        m.save(s, _state(s))
    return m


def _tree(path) -> dict:
    return {str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(path.rglob("*")) if p.is_file()}


def test_checksum_file_matches_the_bytes_written(tmp_path):
    m = _manager(tmp_path)
    for s in (1, 2, 3):
        path = m.dir / f"ckpt-{s:06d}.pt"
        digest, name = (m.dir / f"ckpt-{s:06d}.pt.sha256").read_text().split()
        assert (digest, name) == (hashlib.sha256(path.read_bytes()).hexdigest(), path.name)  # sha256sum -c format
        assert m.verify(path) is True
    assert m.resumable() == m.dir / "ckpt-000003.pt"
    assert m.load(m.resumable())["step"] == 3


@pytest.mark.parametrize("damage", ["flip", "truncate"])
def test_damaged_latest_is_named_and_the_previous_one_used(tmp_path, caplog, damage):
    m = _manager(tmp_path)
    m.record_metric(0.5, 2)
    m.record_metric(0.4, 3)
    bad = m.dir / "ckpt-000003.pt"
    data = bytearray(bad.read_bytes())
    if damage == "flip":
        data[len(data) // 2] ^= 0xFF
    else:
        data = data[: len(data) // 3]
    bad.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="ckpt-000003.pt: corrupt or truncated"):
        m.load(bad)
    with caplog.at_level(logging.WARNING):
        picked = m.resumable()
    assert picked == m.dir / "ckpt-000002.pt"
    assert f"{bad}: corrupt or truncated checkpoint" in caplog.text
    assert not bad.exists() and (m.dir / "ckpt-000003.pt.corrupt").read_bytes() == bytes(data)
    assert (m.dir / "latest").read_text() == "ckpt-000002.pt\n"
    assert m.best() == [(0.5, 2)]  # the evaluation of step 3 is repeated by training
    m.save(3, _state(3))  # training reaches step 3 again
    assert not (m.dir / "ckpt-000003.pt.corrupt").exists() and m.resumable() == bad


def test_interrupted_saves_are_removed_at_the_next_start(tmp_path):
    m = _manager(tmp_path, steps=(1, 2))
    good = _tree(m.dir)
    (m.dir / ".ckpt-000003.pt.x1y2.tmp").write_bytes(b"\0" * 4096)  # killed inside torch.save
    torch.save(_state(3), m.dir / "ckpt-000003.pt")  # killed before its checksum was written
    freed = m.remove_stale()
    assert freed >= 4096
    assert _tree(m.dir) == good
    assert m.resumable() == m.dir / "ckpt-000002.pt"


def test_a_checkpoint_without_checksum_is_used_only_when_latest_names_it(tmp_path, caplog):
    m = CheckpointManager(tmp_path / "ck")
    m.dir.mkdir()
    torch.save(_state(7), m.dir / "ckpt-000007.pt")  # as written by a version without checksums
    atomic_write(m.dir / "latest", "ckpt-000007.pt\n")
    with caplog.at_level(logging.WARNING):
        assert m.resumable() == m.dir / "ckpt-000007.pt"
    assert "no checksum file; loading it unverified" in caplog.text


def test_full_disk_during_a_save_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    m = _manager(tmp_path, steps=(1, 2))
    before = _tree(m.dir)

    def full(self, data):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(checkpoint._HashingWriter, "write", full)
    with pytest.raises(PartError, match=r"cannot write .*ckpt-000003.pt: No space left on device \(errno 28\)"):
        m.save(3, _state(3))
    assert _tree(m.dir) == before  # no temp file left, pointer and checkpoints unchanged
    assert m.resumable() == m.dir / "ckpt-000002.pt"


def test_pruning_removes_checksum_files_too(tmp_path):
    m = CheckpointManager(tmp_path / "ck", keep_last=2, best_n=1)
    for s in (1, 2, 3, 4):
        m.save(s, _state(s))
    assert sorted(p.name for p in m.dir.iterdir()) == [
        "ckpt-000003.pt", "ckpt-000003.pt.sha256", "ckpt-000004.pt", "ckpt-000004.pt.sha256", "latest"]


@pytest.mark.parametrize("exchange", [True, False])
def test_replace_dir_swaps_in_the_new_dir_and_removes_the_old(tmp_path, monkeypatch, exchange):
    swaps = []
    if not exchange:  # a file system without renameat2(RENAME_EXCHANGE)
        monkeypatch.setattr(common, "_exchange", lambda a, b: False)
    else:  # this machine's file system has it: the swap must be the one step
        real = common._exchange
        monkeypatch.setattr(common, "_exchange", lambda a, b: swaps.append(real(a, b)) or swaps[-1])
    out, new = tmp_path / "model", tmp_path / ".model.tmp"
    out.mkdir()
    (out / "a").write_text("old")
    (out / "only_old").write_text("x")
    new.mkdir()
    (new / "a").write_text("new")
    replace_dir(new, out)
    assert swaps == ([True] if exchange else [])
    assert {p.name: p.read_text() for p in out.iterdir()} == {"a": "new"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]
    fresh = tmp_path / ".other.tmp"
    fresh.mkdir()
    replace_dir(fresh, tmp_path / "other")  # nothing to replace
    assert (tmp_path / "other").is_dir() and not fresh.exists()


def test_atomic_write_on_a_full_disk_names_the_path_and_keeps_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "RESULTS.md"
    path.write_text("old results\n")
    real_open = open

    monkeypatch.setattr("builtins.open", lambda p, *a, **k: FullDisk(real_open(p, *a, **k))
                        if str(p).endswith(".tmp") else real_open(p, *a, **k))
    with pytest.raises(PartError, match=f"cannot write {path}: No space left on device"):
        atomic_write(path, "new results\n")
    monkeypatch.undo()
    assert path.read_text() == "old results\n"
    assert [p.name for p in tmp_path.iterdir()] == ["RESULTS.md"]


def test_only_the_writer_writes_best_json_and_the_others_keep_the_same_list(tmp_path):
    writer = CheckpointManager(tmp_path, best_n=2, higher_is_better=False)
    other = CheckpointManager(tmp_path, best_n=2, higher_is_better=False, writer=False)
    for value, step in ((30.0, 2), (20.0, 4), (25.0, 6)):
        writer.record_metric(value, step)
        other.record_metric(value, step)
    assert writer.best() == other.best() == [(20.0, 4), (25.0, 6)]
    other.record_metric(10.0, 8)  # a non-writer never touches the file
    assert [tuple(e) for e in json.loads((tmp_path / "best.json").read_text())] == [(20.0, 4), (25.0, 6)]
    fresh = CheckpointManager(tmp_path, writer=False)
    fresh.set_best(writer.best())
    assert fresh.best() == [(20.0, 4), (25.0, 6)]


def _shards(tmp_path, step: int, payload: bytes):
    """A stand-in shard directory as the ranks leave it (the manager does not read its contents)."""
    d = tmp_path / f".ckpt-{step:06d}.dcp.tmp"
    d.mkdir()
    (d / "__0_0.distcp").write_bytes(payload)
    (d / "__1_0.distcp").write_bytes(payload[::-1])
    (d / ".metadata").write_bytes(b"meta")
    return d


def test_sharded_checkpoint_counts_its_shards_and_falls_back_when_one_is_damaged(tmp_path, caplog):
    ckpts = CheckpointManager(tmp_path, keep_last=3)
    for step in (2, 4):
        ckpts.save(step, {"step": step}, shards=_shards(tmp_path, step, bytes([step]) * 1000))
    assert (tmp_path / "ckpt-000004.dcp" / "__1_0.distcp").is_file() and not list(tmp_path.glob(".*.tmp"))
    assert ckpts.load(tmp_path / "ckpt-000004.pt")["shards"] == "ckpt-000004.dcp"
    lines = (tmp_path / "ckpt-000004.pt.sha256").read_text().splitlines()
    assert [line.split()[1] for line in lines] == ["ckpt-000004.pt", "ckpt-000004.dcp/.metadata",
                                                   "ckpt-000004.dcp/__0_0.distcp", "ckpt-000004.dcp/__1_0.distcp"]
    assert lines[2].split()[0] == hashlib.sha256(bytes([4]) * 1000).hexdigest()
    shard = tmp_path / "ckpt-000004.dcp" / "__1_0.distcp"
    shard.write_bytes(shard.read_bytes()[:-10])  # truncated
    with pytest.raises(CheckpointError, match="__1_0.distcp: corrupt or truncated shard of checkpoint ckpt-000004.pt"):
        ckpts.verify(tmp_path / "ckpt-000004.pt")
    with caplog.at_level(logging.WARNING):
        assert ckpts.resumable() == tmp_path / "ckpt-000002.pt"
    assert (tmp_path / "ckpt-000004.dcp.corrupt").is_dir() and not (tmp_path / "ckpt-000004.dcp").exists()
    (tmp_path / "ckpt-000002.dcp" / ".metadata").unlink()
    with pytest.raises(CheckpointError, match="metadata: shard of checkpoint ckpt-000002.pt missing"):
        ckpts.verify(tmp_path / "ckpt-000002.pt")


def test_shards_of_a_save_cut_short_are_removed_and_pruning_removes_shards(tmp_path):
    ckpts = CheckpointManager(tmp_path, keep_last=1)
    ckpts.save(2, {"step": 2}, shards=_shards(tmp_path, 2, b"x" * 100))
    _shards(tmp_path, 4, b"y" * 100)  # the ranks wrote, then the job died before the rename
    (tmp_path / "ckpt-000006.dcp").mkdir()  # renamed in, died before the checksums
    (tmp_path / "ckpt-000006.dcp" / "__0_0.distcp").write_bytes(b"z" * 100)
    assert ckpts.remove_stale() > 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt-000002.dcp", "ckpt-000002.pt",
                                                          "ckpt-000002.pt.sha256", "latest"]
    ckpts.save(8, {"step": 8}, shards=_shards(tmp_path, 8, b"w" * 100))
    assert not (tmp_path / "ckpt-000002.dcp").exists() and (tmp_path / "ckpt-000008.dcp").is_dir()


def test_shard_hashes_of_the_writing_ranks_are_recorded(tmp_path):
    """The ranks hash their own shard files; the manager records those and hashes only the rest."""
    ckpts = CheckpointManager(tmp_path)
    given = {"__0_0.distcp": hashlib.sha256(b"a" * 10).hexdigest(), "__1_0.distcp": "f" * 64}  # the 2nd: wrong
    ckpts.save(2, {"step": 2}, shards=_shards(tmp_path, 2, b"a" * 10), shard_sums=given)
    listed = dict(reversed(line.split()) for line in (tmp_path / "ckpt-000002.pt.sha256").read_text().splitlines())
    assert listed["ckpt-000002.dcp/__1_0.distcp"] == "f" * 64
    assert listed["ckpt-000002.dcp/.metadata"] == hashlib.sha256(b"meta").hexdigest()
    with pytest.raises(CheckpointError, match="__1_0.distcp: corrupt"):
        ckpts.verify(tmp_path / "ckpt-000002.pt")


def test_a_pretraining_resumes_after_a_reporting_option_changed_but_not_a_training_one(tmp_path):
    from partlib.train.encoder_pretrain import REPORTING_OPTIONS
    from partlib.train.engine import check_same_run

    saved = {"lr": 2e-3, "steps": 100, "save_interval": 100, "dev_interval": 0, "log_interval": 50}
    check_same_run(saved, {**saved, "save_interval": 10, "dev_interval": 20, "log_interval": 5},
                   tmp_path / "ckpt-000010.pt", REPORTING_OPTIONS)
    with pytest.raises(PartError, match=r"ckpt-000010.pt: written by a run with other lr \(0.002, now 0.001\)"):
        check_same_run(saved, {**saved, "lr": 1e-3, "save_interval": 10}, tmp_path / "ckpt-000010.pt",
                       REPORTING_OPTIONS)
