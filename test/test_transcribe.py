"""Audio in, text out: the Transcriber API and the transcribe CLI on an exported tiny model."""
import json

import numpy as np
import pytest
import soundfile as sf
import torch

from partlib.bin import transcribe as cli
from partlib.common import ConfigError
from partlib.data import audio, langs
from partlib.data.batching import collate
from partlib.data.datadir import DataDir
from partlib.data.examples import Example
from partlib.features.compute import compute_features
from partlib.infer import longform
from partlib.infer.transcribe import Transcriber
from partlib.models import card
from partlib.models.builders import tiny_model_config
from partlib.models.speech_llm import SpeechLLM
from partlib.train.schedule import parse_schedule
from partlib.train.trainer import Trainer
from audio_fixtures import espeak, join, needs_espeak
from train_fixtures import SENTENCES, audio_dir

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("transcribe")
    torch.manual_seed(0)
    model = SpeechLLM.from_config(tiny_model_config(root / "pretrained", lora=False))
    model.save_pretrained(root / "model", self_contained=True)
    lid = {lang: {"utterances": 1, "hours": 0.1} for lang in ("de", "en")}
    card.write(root / "model", {"data": {"asr": lid, "lid": lid}, "stage": "s", "experiment": "t"}, model.config)
    return root / "model"


def _tone(seconds, rate, freq, channels=1):
    t = np.arange(int(seconds * rate)) / rate
    x = (0.3 * np.sin(2 * np.pi * freq * t) * (1 + 0.5 * np.sin(2 * np.pi * 3 * t))).astype(np.float32)
    return np.stack([x] * channels, axis=1) if channels > 1 else x


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("audio")
    out = {}
    for i, (fmt, subtype, ext) in enumerate([("WAV", "PCM_16", "wav"), ("FLAC", "PCM_16", "flac"),
                                             ("OGG", "OPUS", "opus"), ("MP3", "MPEG_LAYER_III", "mp3")]):
        path = d / f"x{i}.{ext}"
        rate = 48000 if ext == "opus" else 16000 if i % 2 == 0 else 22050
        sf.write(path, _tone(0.6 + 0.3 * i, rate, 220 * (i + 1), channels=2 if i == 1 else 1), rate,
                 format=fmt, subtype=subtype)
        out[ext] = path
    return out


def test_every_input_kind_and_batches_equal_batch_one(folder, files):
    model = Transcriber(folder)
    inputs = [files["wav"], files["flac"], files["opus"], files["mp3"], (_tone(0.5, 8000, 300, channels=2), 8000)]
    batched = model(inputs, src_lang="de", batch_size=5, max_new_tokens=4)
    alone = [model(x, src_lang="de", batch_size=1, max_new_tokens=4)[0] for x in inputs]
    assert [r.text for r in batched] == [r.text for r in alone]
    assert [r.source for r in batched] == [str(p) for p in inputs[:4]] + ["<array 4>"]
    for r, x in zip(batched, inputs):
        assert r.language == "de" and r.task == "asr" and len(r.segments) == 1
        seconds = len(audio.load_file(x) if not isinstance(x, tuple) else audio.from_array(*x)) / 16000
        assert r.segments[0].start == 0.0 and r.segments[0].end == pytest.approx(seconds, abs=1e-3)
    # a file and the same samples as an array give the same output
    samples, rate = sf.read(files["wav"], dtype="float32")
    assert model((samples, rate), src_lang="de", max_new_tokens=4)[0].text == batched[0].text


def test_different_audio_reaches_the_model_and_changes_its_output(folder, files, monkeypatch):
    """What the API hands to generation depends on the audio: the same target is more or less likely
    after two different inputs (and equally likely after the same one twice)."""
    model = Transcriber(folder)
    seen = []
    original = Transcriber._generate

    def spy(self, task, tgt, feats, src_langs, batch_size, opts):
        seen.extend(feats)
        return original(self, task, tgt, feats, src_langs, batch_size, opts)

    monkeypatch.setattr(Transcriber, "_generate", spy)
    model([files["wav"], files["flac"], files["wav"]], src_lang="de", max_new_tokens=2)
    exs = [Example(key=f"k{i}", utt="u", dir_index=i, task="asr", src_lang="de", tgt_lang="de",
                   num_frames=int(f.shape[0]), src_text=None, target="die katze schläft", n_tokens=0)
           for i, f in enumerate(seen)]
    logp = model.model.target_log_probs(collate(exs, seen)).tolist()
    assert abs(logp[0] - logp[1]) > 1e-3 and logp[0] == pytest.approx(logp[2], abs=1e-5)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """(model folder, wav files, transcripts): a tiny model trained on the ASR of six English
    sentences, each a tone of its own pitch and length (train_fixtures.audio_dir)."""
    root = tmp_path_factory.mktemp("trained")
    audio_dir(root / "data" / "train_en", "en", range(6), "de", np.random.default_rng(0))
    sched = {"seed": 1, "stages": [{
        "name": "s1", "max_steps": 120, "log_interval": 120, "save_interval": 120,
        "optim": {"lr": 3e-3}, "scheduler": {"type": "constant"}, "batch": {"max_frames": 600, "max_tokens": 4000},
        "tasks": [{"task": "asr", "data": ["train_en"]}],
        "trainable": {"encoder": "full", "adapter": "full", "llm": "full"}}]}
    model_dir = Trainer(parse_schedule(sched), tiny_model_config(root / "models", lora=False), root / "exp",
                        data_root=str(root / "data"), tensorboard=False, features="on_the_fly").run()[0]
    data = DataDir.load(root / "data" / "train_en")
    return model_dir, [data.wav_scp[u] for u in data.utts], [data.text[u] for u in data.utts]


def test_a_trained_model_gets_the_words_right(trained):
    model_dir, wavs, texts = trained
    assert texts == SENTENCES["en"]
    model = Transcriber(model_dir)
    assert [r.text for r in model(wavs, src_lang="en", batch_size=3, max_new_tokens=24)] == texts


def test_language_is_identified_when_not_given(folder, files, monkeypatch):
    model = Transcriber(folder)
    inputs = [files["wav"], files["flac"], files["mp3"]]
    feats = compute_features([audio.load_file(x) for x in inputs], 80)
    # the closed-set choice, computed here one candidate at a time
    expected = []
    for f in feats:
        logp = {}
        for code in ("de", "en"):
            ex = Example(key="k", utt="u", dir_index=0, task="lid", src_lang=code, tgt_lang=code,
                         num_frames=int(f.shape[0]), src_text=None, target=langs.name(code), n_tokens=0)
            logp[code] = float(model.model.target_log_probs(collate([ex], [f]))[0])
        expected.append(max(logp, key=logp.get))
    assert model.identify(feats, batch_size=3) == expected == [model.identify([f], 1)[0] for f in feats]
    # per-example log-probabilities add up to the model's summed NLL of the same batch
    exs = [Example(key=f"k{i}", utt="u", dir_index=i, task="lid", src_lang="en", tgt_lang="en",
                   num_frames=int(f.shape[0]), src_text=None, target="English", n_tokens=0) for i, f in enumerate(feats)]
    batch = collate(exs, feats)
    with torch.no_grad():
        torch.testing.assert_close(-model.model.target_log_probs(batch).sum(), model.model.eval()(batch)["loss_sum"])
    calls = []
    original = Transcriber._generate

    def spy(self, task, tgt, feats, src_langs, batch_size, opts):
        calls.append((task, list(src_langs)))
        return original(self, task, tgt, feats, src_langs, batch_size, opts)

    monkeypatch.setattr(Transcriber, "_generate", spy)
    results = model(inputs, max_new_tokens=3)
    assert [r.language for r in results] == expected and calls == [("asr", expected)]
    # a long recording without speech has no segments and no language; the other inputs are unaffected
    silent, normal = model([(np.zeros(40 * 16000, np.float32), 16000), inputs[1]], max_new_tokens=3)
    assert (silent.language, silent.text, silent.segments) == ("", "", []) and normal.language == expected[1]
    # a model that never learned lid does not guess
    model.languages = []
    with pytest.raises(ConfigError, match="not trained on the lid task"):
        model(inputs[0])


def test_cli_formats_and_bad_files(folder, files, tmp_path, capsys, caplog):
    bad = tmp_path / "broken.wav"
    bad.write_bytes(b"RIFF not really")
    out = tmp_path / "out.jsonl"
    args = ["--model", str(folder), "--src-lang", "en", "--max-new-tokens", "3", "--output-format", "jsonl"]
    assert cli.main([*args, "--output", str(out), str(files["wav"]), str(files["mp3"])]) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["file"] for r in rows] == [str(files["wav"]), str(files["mp3"])]
    assert all({"file", "text", "language", "task", "segments"} <= set(r) for r in rows)
    assert rows[0]["segments"][0]["start"] == 0.0
    # an unreadable file stops the run and is named; --skip-bad goes on
    assert cli.main([*args, str(files["wav"]), str(bad)]) == 1
    assert f"{bad}: cannot decode audio" in caplog.text
    caplog.clear()
    capsys.readouterr()
    assert cli.main([*args, "--skip-bad", str(files["wav"]), str(bad)]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 1 and f"1 of 2 inputs skipped: {bad}" in caplog.text
    caplog.clear()
    assert cli.main([*args, "--skip-bad", str(bad)]) == 1
    assert "no input could be read" in caplog.text
    # subtitles of one input
    assert cli.main(["--model", str(folder), "--src-lang", "en", "--max-new-tokens", "3", "--output-format", "srt",
                     str(files["flac"])]) == 0
    srt = capsys.readouterr().out.splitlines()
    assert srt[0] == "1" and srt[1] == "00:00:00,000 --> 00:00:00,900"
    # a wav.scp of inputs, names by utterance id
    scp = tmp_path / "wav.scp"
    scp.write_text(f"u1 {files['wav']}\nu2 {files['flac']}\n")
    assert cli.main([*args, "--wav-scp", str(scp)]) == 0
    assert [json.loads(line)["file"] for line in capsys.readouterr().out.splitlines()] == ["u1", "u2"]


@needs_espeak
def test_long_recording_is_segmented_decoded_and_stitched(folder):
    sentences = ["the cat sat on the mat", "a dog ran home", "we like green tea", "it is cold today",
                 "one two three four five six seven eight nine ten"]
    samples, _ = join([espeak(s) for s in sentences], [0.5, 0.3, 0.5, 0.2, 0.0])
    model = Transcriber(folder, max_segment_s=3.0)
    with pytest.raises(ConfigError, match="encoder window"):
        Transcriber(folder, max_segment_s=31.0)
    (long,) = model((samples, 16000), src_lang="en", max_new_tokens=4, batch_size=3)
    segs = long.segments
    assert len(segs) >= 3 and all(0 <= g.start < g.end <= len(samples) / 16000 + 1e-3 for g in segs)
    assert all(g.end - g.start <= 3.0 + 1e-3 for g in segs) and all(b.start >= a.end for a, b in zip(segs, segs[1:]))
    # each segment's text is the one of its span decoded alone; the result joins them in order
    for g in segs:
        piece = samples[round(g.start * 16000):round(g.end * 16000)]
        assert model((piece, 16000), src_lang="en", max_new_tokens=4)[0].text == g.text
    assert long.text == " ".join(g.text for g in segs if g.text)
    # without a language the segments of one recording decide together: their lid scores summed
    spans = longform.plan_segments(samples, 3.0, model.vad)
    feats = compute_features([samples[s:e] for s, e in spans], 80)
    summed = model._lid_scores(feats, 4).sum(dim=0)
    (auto,) = model((samples, 16000), max_new_tokens=2)
    assert auto.language == model.languages[int(summed.argmax())]


@needs_espeak
def test_decode_longform_and_join_audio_clis(folder, tmp_path):
    from partlib.bin import decode_longform, join_audio
    from partlib.data.datadir import DataDir
    from partlib.data.kv import read_kv

    sentences = ["the cat sat on the mat", "a dog ran home", "we like green tea", "it is cold today",
                 "one two three", "the sun is hot"]
    data = tmp_path / "data"
    wavs, text = {}, {}
    for i, s in enumerate(sentences):
        path = tmp_path / "wav" / f"s{i}.wav"
        path.parent.mkdir(exist_ok=True)
        sf.write(path, espeak(s), 16000)
        wavs[f"spk-{i}"], text[f"spk-{i}"] = str(path), s
    DataDir({u: "spk" for u in wavs}, wav_scp=wavs, text=text, utt2lang={u: "en" for u in wavs}).write(data)
    model = Transcriber(folder, max_segment_s=3.0)
    alone_dir = tmp_path / "alone"
    alone_dir.mkdir()
    alone = {u: model(p, src_lang="en", max_new_tokens=3)[0].text for u, p in wavs.items()}
    (alone_dir / "hyp").write_text("".join(f"{u} {h}\n" for u, h in alone.items()))
    (alone_dir / "decode.json").write_text(json.dumps({"task": "asr"}))
    out, obo = tmp_path / "long", tmp_path / "obo"
    args = ["--model-dir", str(folder), "--data-dir", str(data), "--one-by-one", str(alone_dir),
            "--utts-per-recording", "3", "--max-segment", "3", "--seed", "4", str(out), str(obo)]
    # the references and the one-by-one hypotheses, joined per recording
    recs = longform.join_utterances(data, 3, (0.1, 0.4), seed=4)
    assert decode_longform.main(args) == 0
    assert read_kv(out / "ref") == read_kv(obo / "ref") == {r.name: " ".join(text[u] for u in r.utts) for r in recs}
    assert read_kv(obo / "hyp") == {r.name: " ".join(h for h in (alone[u] for u in r.utts) if h) for r in recs}
    stats = json.loads((out / "decode.json").read_text())["longform"]
    segs = [v.split() for v in read_kv(out / "segments").values()]
    assert stats["recordings"] == 2 and stats["segments"] == len(segs) and stats["max_segment_s"] == 3.0
    held = []
    for r in recs:
        spans = [(round(float(a) * 16000), round(float(b) * 16000)) for name, a, b in segs if name == r.name]
        held += longform.utterances_per_segment(r.spans, spans)
        # the recording's hypothesis is what the API gives for its audio
        assert read_kv(out / "hyp", allow_empty=True).get(r.name, "") == model(
            (r.samples, 16000), src_lang="en")[0].text
    assert stats["utterances_per_segment"] == pytest.approx(sum(held) / len(held), abs=1e-3)
    assert decode_longform.main(args) == 0  # done: not redone
    bad = [*args[:5], str(tmp_path / "nothing"), *args[6:-2], str(tmp_path / "o1"), str(tmp_path / "o2")]
    assert decode_longform.main(bad) == 1 and not (tmp_path / "o1").exists()  # not a decode dir
    # the demo's long recording: a wav and its references
    assert join_audio.main(["--data-dir", str(data), "--utts-per-recording", "4", "--limit", "1", "--seed", "4",
                            str(tmp_path / "demo")]) == 0
    (wav,) = (tmp_path / "demo").glob("*.wav")
    x, rate = sf.read(wav, dtype="float32")
    first = longform.join_utterances(data, 4, (0.1, 0.4), seed=4, limit=1)[0]
    assert rate == 16000 and len(x) == len(first.samples)
    assert wav.with_suffix(".txt").read_text().splitlines() == sentences[:4]
