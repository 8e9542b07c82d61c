"""Dump features of a data dir to Kaldi ark/scp, split into resumable jobs.

Layout of the output data dir ``OUT``::

    OUT/                      copy of the input data dir + feats.scp, utt2num_frames, feats_type
    OUT/split<N>utt/<j>/      the input split into N parts (one per job)
    OUT/data/<type>.<j>.ark   float32 (frames x bins) matrices of job j
    OUT/data/<type>.<j>.scp   their index; .utt2num_frames and .done (written last) beside them
    OUT/log/extract_feats.<j>.log

A job whose ``.done`` marker matches its split (same utterances, same feature type) is skipped,
so re-running after a crash recomputes only unfinished jobs. The final ``feats.scp`` is written
(atomically) only after every job finished.
"""
from __future__ import annotations

import hashlib
import io
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import kaldiio
import numpy as np
import torch

from partlib.common import (ConfigError, DataError, PartError, PathLike, atomic_write, get_logger,
                            named_write_errors, run_jobs)
from partlib.data.audio import AudioReader
from partlib.data.datadir import DataDir
from partlib.data.dirtools import split_data_dir
from partlib.data.kv import read_kv, write_kv
from partlib.features.compute import FEATS_TYPE_FILE, FeatsType, check_waveform, compute_batch

logger = get_logger(__name__)


@dataclass(frozen=True)
class DumpOptions:
    """What to compute and how; shared by the driver and every job."""

    feats_type: FeatsType
    batch_size: int = 16
    skip_bad: bool = False
    resample: bool = True
    device: str = "cpu"

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ConfigError(f"batch size must be >= 1, got {self.batch_size}")


@dataclass(frozen=True)
class JobPaths:
    """Files of one job ``j`` under an output data dir."""

    ark: Path
    scp: Path
    utt2num_frames: Path
    done: Path
    log: Path

    @classmethod
    def of(cls, out_dir: PathLike, feats_type: FeatsType, job: int) -> "JobPaths":
        out = Path(out_dir).absolute()
        stem = out / "data" / f"{feats_type.name}_{feats_type.n_mels}.{job}"
        return cls(
            ark=stem.with_name(stem.name + ".ark"),
            scp=stem.with_name(stem.name + ".scp"),
            utt2num_frames=stem.with_name(stem.name + ".utt2num_frames"),
            done=stem.with_name(stem.name + ".done"),
            log=out / "log" / f"extract_feats.{job}.log",
        )


def _fingerprint(utts: Sequence[str], feats_type: FeatsType) -> str:
    """Identifies a job's work: its utterance list and the feature type."""
    digest = hashlib.sha256(str(feats_type).encode())
    for utt in utts:
        digest.update(b"\n" + utt.encode())
    return digest.hexdigest()


def _job_is_done(paths: JobPaths, fingerprint: str) -> bool:
    if not (paths.done.is_file() and paths.scp.is_file() and paths.ark.is_file()):
        return False
    try:
        return json.loads(paths.done.read_text(encoding="utf-8")).get("fingerprint") == fingerprint
    except (ValueError, OSError):
        return False


def _load_checked(reader: AudioReader, utt: str) -> np.ndarray:
    wav = reader[utt]
    check_waveform(wav, utt)
    return wav


def run_job(split_dir: PathLike, out_dir: PathLike, job: int, opts: DumpOptions) -> Tuple[int, int]:
    """Compute the features of the data dir ``split_dir`` and write them as job ``job`` of ``out_dir``.

    Returns ``(num_written, num_skipped)``; skipping bad utterances happens only with
    ``opts.skip_bad`` (otherwise the first bad one raises :class:`DataError`). A job already
    completed for the same utterances and feature type is not redone.
    """
    paths = JobPaths.of(out_dir, opts.feats_type, job)
    utts = DataDir.load(split_dir, validate=False).utts
    fingerprint = _fingerprint(utts, opts.feats_type)
    if _job_is_done(paths, fingerprint):
        logger.info("job %d already done (%s); skipping", job, paths.done)
        return 0, 0
    paths.done.unlink(missing_ok=True)
    paths.ark.parent.mkdir(parents=True, exist_ok=True)
    reader = AudioReader(split_dir, resample=opts.resample)
    n_mels = opts.feats_type.n_mels
    scp = io.StringIO()
    num_frames: Dict[str, str] = {}
    skipped = 0
    # The ark may be left half-written by a crash or a full disk; nothing points into it until the
    # scp exists.
    with named_write_errors(paths.ark), open(paths.ark, "wb") as ark:
        for start in range(0, len(utts), opts.batch_size):
            ids, wavs = [], []
            for utt in utts[start : start + opts.batch_size]:
                try:
                    wavs.append(_load_checked(reader, utt))
                except DataError as e:
                    if not opts.skip_bad:
                        raise
                    logger.warning("skipping %s", e)
                    skipped += 1
                    continue
                ids.append(utt)
            if not ids:
                continue
            feats, lens = compute_batch(wavs, n_mels, ids, opts.device)
            feats, lens = feats.cpu().numpy(), lens.tolist()
            for i, utt in enumerate(ids):
                kaldiio.save_ark(ark, {utt: feats[i, : lens[i]]}, scp=scp)
                num_frames[utt] = str(lens[i])
        ark.flush()
        os.fsync(ark.fileno())
    atomic_write(paths.scp, scp.getvalue())
    write_kv(paths.utt2num_frames, num_frames)
    marker = {"fingerprint": fingerprint, "feats_type": str(opts.feats_type),
              "num_written": len(num_frames), "num_skipped": skipped}
    atomic_write(paths.done, json.dumps(marker) + "\n")
    logger.info("job %d: wrote %d utterances to %s, skipped %d", job, len(num_frames),
                paths.ark, skipped)
    return len(num_frames), skipped


def _worker_command(split_root: Path, out_dir: Path, opts: DumpOptions, num_threads: int) -> List[str]:
    """The per-job command line; the job runner replaces ``JOB`` by the job number."""
    cmd = ["-m", "partlib.bin.extract_feats",
           "--feature", opts.feats_type.name, "--num-mel-bins", str(opts.feats_type.n_mels),
           "--batch-size", str(opts.batch_size), "--device", opts.device,
           "--num-threads", str(num_threads), "--job", "JOB"]
    if opts.skip_bad:
        cmd.append("--skip-bad")
    if not opts.resample:
        cmd.append("--no-resample")
    return cmd + [str(split_root / "JOB"), str(out_dir)]


def _run_with_runner(cmd: str, splits: Sequence[Path], out_dir: Path, opts: DumpOptions,
                     num_threads: int) -> None:
    """Run all jobs through a Kaldi-style runner (``run.pl JOB=1:N LOG CMD...``)."""
    nj = len(splits)
    worker = _worker_command(splits[0].parent, out_dir, opts, num_threads)
    run_jobs(cmd, nj, out_dir / "log" / "extract_feats.JOB.log", worker, "feature extraction",
             failed=lambda: [j for j in range(1, nj + 1) if not JobPaths.of(out_dir, opts.feats_type, j).done.is_file()])


def _run_in_process(splits: Sequence[Path], out_dir: Path, opts: DumpOptions) -> None:
    """Run the jobs one after another in this process, each also logging (INFO) to its own file."""
    package = logging.getLogger("partlib")
    saved_level = package.level
    for job, split_dir in enumerate(splits, start=1):
        paths = JobPaths.of(out_dir, opts.feats_type, job)
        paths.log.parent.mkdir(parents=True, exist_ok=True)
        handler = logging.FileHandler(paths.log, mode="w", encoding="utf-8")
        handler.setFormatter(logging.Formatter("%(asctime)s [%(levelname)s] %(name)s: %(message)s"))
        package.addHandler(handler)
        package.setLevel(min(package.getEffectiveLevel(), logging.INFO))
        try:
            run_job(split_dir, out_dir, job, opts)
        except PartError as e:
            # into the job's log, as a runner's job would write it; the caller reports it (once, no traceback)
            handler.emit(logger.makeRecord(logger.name, logging.ERROR, __file__, 0, "job %d/%d failed: %s",
                                           (job, len(splits), e), None))
            raise
        except Exception:
            logger.exception("job %d/%d failed", job, len(splits))
            raise
        finally:
            package.removeHandler(handler)
            package.setLevel(saved_level)
            handler.close()


def _merge(src: Path, out_dir: Path, nj: int, opts: DumpOptions) -> Tuple[int, int]:
    """Add feats.scp, utt2num_frames and feats_type to OUT from the finished jobs; when every
    utterance of ``src`` was skipped as bad, a :class:`DataError` and nothing is written."""
    feats: Dict[str, str] = {}
    frames: Dict[str, int] = {}
    skipped = 0
    for job in range(1, nj + 1):
        paths = JobPaths.of(out_dir, opts.feats_type, job)
        if not paths.done.is_file():
            raise PartError(f"job {job}/{nj} did not finish (no {paths.done}); see {paths.log}")
        skipped += int(json.loads(paths.done.read_text(encoding="utf-8"))["num_skipped"])
        feats.update(read_kv(paths.scp))
        frames.update({u: int(n) for u, n in read_kv(paths.utt2num_frames).items()})
    data = DataDir.load(out_dir, validate=False)
    if not feats:
        raise DataError(f"{skipped} of {len(data)} utterances were skipped as bad (--skip-bad): no features "
                        f"to write (reasons in {out_dir / 'log'}/extract_feats.*.log); "
                        f"{out_dir / 'feats.scp'} not written", src)
    if len(feats) != len(data):
        # Bad utterances were skipped: keep the data dir consistent with feats.scp.
        data = data.subset(feats)
    data.utt2num_frames = frames
    data.meta[FEATS_TYPE_FILE] = str(opts.feats_type)
    data.write(out_dir)
    write_kv(out_dir / "feats.scp", feats)   # last: its presence marks a finished dump
    return len(feats), skipped


def extract_feats(
    data_dir: PathLike,
    out_dir: PathLike,
    opts: DumpOptions,
    *,
    nj: int = 1,
    cmd: Optional[str] = None,
    num_threads: int = 1,
) -> Tuple[int, int]:
    """Copy ``data_dir`` to ``out_dir`` and add dumped features (feats.scp, utt2num_frames, feats_type).

    Work is split into ``nj`` jobs (at most one per utterance), run through the job runner
    ``cmd`` (e.g. ``utils/run.pl``; ``num_threads`` torch threads each) or, without one, one
    after another in this process. Finished jobs of an earlier run over the same data are
    reused. Returns ``(num_utterances_written, num_skipped)``.
    """
    src, out = Path(data_dir), Path(out_dir).absolute()
    if nj < 1:
        raise ConfigError(f"--nj must be >= 1, got {nj}")
    if src.absolute().resolve() == out.resolve():
        raise ConfigError(f"output data dir must differ from the input data dir ({src})")
    data = DataDir.load(src)
    if data.wav_scp is None:
        raise DataError("no wav.scp: features need audio", src / "wav.scp")
    if not len(data):
        raise DataError("data dir has no utterances", src)
    # The copy drops features of the input (and of an earlier run): they are recomputed here.
    data.feats_scp = data.utt2num_frames = None
    data.meta.pop(FEATS_TYPE_FILE, None)
    data.write(out)
    splits = split_data_dir(out, min(nj, len(data)), by_speaker=False)
    if cmd:
        _run_with_runner(cmd, splits, out, opts, num_threads)
    else:
        _run_in_process(splits, out, opts)
    written, skipped = _merge(src, out, len(splits), opts)
    if skipped:
        logger.warning("skipped %d bad utterance(s); see %s/extract_feats.*.log", skipped, out / "log")
    logger.info("wrote features of %d utterances to %s (%s)", written, out / "feats.scp", opts.feats_type)
    return written, skipped


def set_threads(num_threads: Optional[int]) -> None:
    """Set torch's intra-op threads when given (jobs run in parallel use 1 each)."""
    if num_threads:
        torch.set_num_threads(int(num_threads))
