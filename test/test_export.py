"""Exported model folders are self-contained: copied elsewhere with the experiment and the
pretrained models deleted, they decode bit-identically; LoRA kept separate agrees with merged."""
import json
import shutil

import numpy as np
import pytest
import torch
import yaml

from partlib.bin import export, train
from partlib.common import DataError
from partlib.data.batching import collate
from partlib.data.datadir import DataDir
from partlib.features.source import FeatureSource
from partlib.infer.decode import decode_dir, decode_examples
from partlib.models.builders import tiny_model_config
from partlib.models.speech_llm import SpeechLLM
from train_fixtures import speech_data

torch.set_num_threads(1)

LORA = {"r": 2, "alpha": 4, "dropout": 0.0, "target_modules": ["q_proj", "v_proj"], "layers": "all"}


def _schedule():
    stage = {"max_steps": 2, "log_interval": 1, "save_interval": 2, "optim": {"lr": 3e-3},
             "batch": {"max_frames": 400, "max_tokens": 2000},
             "tasks": [{"task": "asr", "data": ["train_*"]}, {"task": "s2tt", "data": ["train_*"]}]}
    return {"seed": 1, "stages": [
        {**stage, "name": "s1", "trainable": {"encoder": "frozen", "adapter": "full", "llm": "frozen"}},
        {**stage, "name": "s2", "trainable": {"encoder": "frozen", "adapter": "full", "llm": {"lora": LORA}}}]}


def _text_files(folder):
    for path in folder.rglob("*"):
        if path.is_file():
            try:
                yield path, path.read_text(encoding="utf-8")
            except UnicodeDecodeError:
                continue  # weights


@pytest.mark.slow
def test_export_is_portable_and_keeps_lora_on_request(tmp_path, monkeypatch):
    work = tmp_path / "recipe"
    speech_data(work, n_train=6, n_dev=3)
    (work / "model.yaml").write_text(yaml.safe_dump(tiny_model_config(work / "pretrained", lora=False)))
    (work / "schedule.yaml").write_text(yaml.safe_dump(_schedule()))
    monkeypatch.chdir(work)
    assert train.main(["--schedule", "schedule.yaml", "--model-config", "model.yaml", "--data-root", "data",
                       "--exp-dir", "exp", "--threads", "1", "--no-tensorboard"]) == 0
    stage_model = work / "exp" / "s2" / "model"
    # The training export is self-contained already: encoder (frozen) and LLM weights are inside.
    assert (stage_model / "encoder" / "model.safetensors").is_file() and (stage_model / "llm").is_dir()
    info = json.loads((stage_model / "info.json").read_text())
    frames = sum(40 + 7 * i for i in range(6))  # the fixture's utterance lengths
    assert info["data"]["asr"] == {lang: {"utterances": 6, "hours": round(frames / 360000, 4)} for lang in ("de", "en")}
    assert info["languages"] == ["de", "en"] and info["target_languages"] == ["de", "en"]
    assert info["directions"] == {"s2tt": {"de": ["en"], "en": ["de"]}}  # what transcribe checks requests against
    assert [t["task"] for t in info["tasks"]] == ["asr", "s2tt"] and info["checkpoints"] == [2]
    # the bounds inference takes from the training data: longest utterance, target tokens/s
    assert info["longest_utterance_s"] == (40 + 7 * 5) / 100
    tok = SpeechLLM.from_pretrained(stage_model).tokenizer
    for task, text_file in (("asr", "text"), ("s2tt", None)):
        for src, tgt in (("de", "de"), ("en", "en")) if task == "asr" else (("de", "en"), ("en", "de")):
            d = DataDir.load(work / "data" / f"train_{src}")
            texts = d.text if text_file else d.translations[tgt]
            n = [len(tok(t, add_special_tokens=False)["input_ids"]) for t in texts.values()]  # all clips < 1 s
            assert info["target_rates"][task][tgt] == pytest.approx(float(np.percentile(n, 99)), abs=1e-3)
    assert "s2" in (stage_model / "README.md").read_text()

    # decode scores of the stage go into the card of the exported folder
    decode = work / "exp" / "s2" / "decode_dev_de_asr"
    decode.mkdir()
    (decode / "scores.json").write_text(json.dumps(
        {"sets": {"overall": {"primary": "wer", "num_utts": 3, "scores": {"wer": {"value": 42.0}}}}}))
    assert export.main(["exp/s2", "exp/s2"]) == 1 and export.main(["exp/s2", "exp"]) == 1  # would delete it
    (work / "notes").mkdir()
    assert export.main(["exp/s2", "notes"]) == 1 and (work / "notes").is_dir()  # not a model folder: kept
    assert export.main(["exp/s2", "out/merged"]) == 0
    assert export.main(["exp/s2", "out/lora", "--keep-lora"]) == 0
    merged, lora = work / "out" / "merged", work / "out" / "lora"
    card = json.loads((merged / "info.json").read_text())
    assert card["scores"] == {"decode_dev_de_asr": {"metric": "wer", "value": 42.0, "utterances": 3}}
    assert "| decode_dev_de_asr | wer | 42.00 | 3 |" in (merged / "README.md").read_text()
    assert (lora / "lora" / "adapter_model.safetensors").is_file() and not (merged / "lora").exists()
    for folder in (merged, lora):
        for path, text in _text_files(folder):
            assert str(tmp_path) not in text, f"{path} names a path outside the folder"

    data = work / "data" / "dev_de"
    reference = decode_dir(SpeechLLM.from_pretrained(merged), data, tmp_path / "d0", task="asr", max_new_tokens=6)
    batch_model = SpeechLLM.from_pretrained(merged)
    lora_model = SpeechLLM.from_pretrained(lora)
    assert lora_model.lora_config is not None and batch_model.lora_config is None
    exs = decode_examples(batch_model, data, "asr", None)
    feats = FeatureSource([DataDir.load(data)], 80).load([(e.dir_index, e.utt) for e in exs])
    with torch.no_grad():
        a = batch_model.eval()(collate(exs, feats))["loss_sum"]
        b = lora_model.eval()(collate(exs, feats))["loss_sum"]
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)  # merged W + BA vs separate: float rounding only

    # Copy the folder away, delete the experiment, the pretrained models and the original folder.
    copy = tmp_path / "elsewhere" / "model"
    shutil.copytree(merged, copy)
    for d in (work / "exp", work / "pretrained", work / "out"):
        shutil.rmtree(d)
    again = decode_dir(SpeechLLM.from_pretrained(copy), data, tmp_path / "d1", task="asr", max_new_tokens=6)
    assert again == reference
    assert (tmp_path / "d1" / "hyp").read_bytes() == (tmp_path / "d0" / "hyp").read_bytes()

    # pickled weights are refused
    (copy / "llm" / "pytorch_model.bin").write_bytes(b"\x80\x04N.")
    with pytest.raises(DataError, match="pytorch_model.bin: pickled weights are refused"):
        SpeechLLM.from_pretrained(copy)
