"""SpeechLLM on tiny models: prompts and labels, gradients, LoRA activation, persistence, decoding."""
import json

import pytest
import torch
import yaml
from transformers import AutoModelForCausalLM

from partlib.common import ConfigError, DataError
from partlib.models.builders import build_paper, tiny_model_config
from partlib.models.prompt import IGNORE_INDEX
from partlib.models.speech_llm import SpeechLLM

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def cfg(tmp_path_factory):
    return tiny_model_config(tmp_path_factory.mktemp("tiny"))


def _lora(cfg, **options) -> dict:
    """A trainable-spec LoRA section with the shape of the fixture model's adapters."""
    return {"lora": {**{k: v for k, v in cfg["lora"].items() if k != "layers"}, **options}}


def _model(cfg, **changes) -> SpeechLLM:
    torch.manual_seed(0)
    return SpeechLLM.from_config({**cfg, **changes})


def _batch(n=4, seed=0, targets=True):
    g = torch.Generator().manual_seed(seed)
    tasks = ["asr", "s2tt", "t2tt", "lm", "asr", "s2tt", "asr", "t2tt"][:n]
    src = ["en", "de", "fr", "en", "zh", "ja", "ru", "es"][:n]
    tgt = ["en", "en", "de", "en", "zh", "en", "ru", "en"][:n]
    lens = torch.randint(40, 300, (n,), generator=g)
    speech = torch.tensor([t in ("asr", "s2tt") for t in tasks])
    lens = lens * speech
    texts = [None if s else t for s, t in zip(speech.tolist(), ["", "", "Bonjour le monde.", "The quick brown",
                                                                   "", "", "", "Hola amigo."][:n])]
    return {"utt_ids": [f"u{i}" for i in range(n)], "tasks": tasks, "src_langs": src, "tgt_langs": tgt,
            "feats": torch.randn(n, int(lens.max()), 80, generator=g), "feat_lens": lens, "src_texts": texts,
            "targets": ["Hello world.", "Good day to you.", "Hallo Welt.", "fox jumps."] * (n // 4) + [
                "x"] * (n % 4) if targets else None}


def test_labels_cover_target_and_end_token_only(cfg):
    m = _model(cfg)
    tok = m.tokenizer
    t, examples = m._prompt_batch(_batch(), train=True)
    im_end = tok.convert_tokens_to_ids("<|im_end|>")
    for i, ex in enumerate(examples):
        lab = t["labels"][i]
        kept = lab[lab != IGNORE_INDEX].tolist()
        assert kept == tok(_batch()["targets"][i], add_special_tokens=False)["input_ids"] + [im_end]
        # the labelled tokens sit right after the assistant header, inside the attended region
        start = ex.n_input
        assert t["input_ids"][i, start: start + len(kept)].tolist() == kept
        assert t["attention_mask"][i, : start + len(kept)].all() and not t["attention_mask"][i, start + len(kept):].any()
    text = tok.decode(t["input_ids"][2][t["attention_mask"][2].bool()])
    assert "Translate the following French text into German.\nBonjour le monde." in text
    assert text.endswith("<|im_start|>assistant\nHallo Welt.<|im_end|>")
    speech_text = tok.decode(t["input_ids"][1][~t["speech_mask"][1] & t["attention_mask"][1].bool()])
    assert "<|im_start|>user\nTranslate the German speech into English.<|im_end|>" in speech_text
    assert t["speech_mask"][1].sum() == (examples[1].n_speech) > 0 and not t["speech_mask"][2].any()
    assert [m.speech_embed_length(int(n)) for n in _batch()["feat_lens"]] == [ex.n_speech for ex in examples]


def test_loss_sum_is_token_nll_over_targets(cfg):
    m = _model(cfg).eval()
    batch = _batch()
    out = m(batch)
    t, _ = m._prompt_batch(batch, train=True)
    logits = m.llm(inputs_embeds=t["inputs_embeds"], attention_mask=t["attention_mask"]).logits
    ref = torch.nn.functional.cross_entropy(logits[:, :-1].flatten(0, 1), t["labels"][:, 1:].flatten(),
                                            ignore_index=IGNORE_INDEX, reduction="sum")
    assert out["n_tokens"] == int((t["labels"] != IGNORE_INDEX).sum())
    torch.testing.assert_close(out["loss_sum"], ref, rtol=1e-5, atol=1e-4)


def test_frozen_modules_hold_no_grads(cfg):
    m = _model(cfg)
    m.apply_trainable({"encoder": "frozen", "adapter": "full", "llm": "frozen"})
    m.train()
    m(_batch())["loss_sum"].backward()
    for name, p in m.named_parameters():
        assert (p.grad is not None) == name.startswith("adapter."), name
    assert all(p.grad.abs().sum() > 0 for p in m.adapter.parameters())


def test_lora_trains_only_active_layers(cfg):
    m = _model(cfg)
    m.apply_trainable({"encoder": {"top_k": 1}, "adapter": "frozen", "llm": _lora(cfg, layers=[1, 3])})
    assert m.lora_active_layers == [1, 3]
    m.train()
    m(_batch())["loss_sum"].backward()
    with_grad = {n for n, p in m.named_parameters() if p.grad is not None}
    lora = {n for n in with_grad if "lora_" in n}
    assert lora and all((".layers.1." in n or ".layers.3." in n) for n in lora)
    assert {n for n in with_grad if "lora_B" in n}  # B gets gradient although it starts at zero
    rest = with_grad - lora
    assert rest and all(n.startswith(("encoder.whisper.layers.1.", "encoder.whisper.layer_norm.")) for n in rest)


def test_lora_activation_leaves_outputs_unchanged_and_is_saved_in_state(cfg):
    m = _model(cfg).eval()
    batch = _batch()
    m.apply_trainable({"adapter": "full", "llm": _lora(cfg, layers=[0])})
    # train layer 0 a little so that its adapters are non-zero
    opt = torch.optim.SGD([p for p in m.parameters() if p.requires_grad], lr=0.5)
    m(batch)["loss_sum"].backward()
    opt.step()
    before = m(batch)["loss_sum"].item()
    b_norm = {layer: sum(p.abs().sum().item() for n, p in m.llm.named_parameters()
                         if "lora_B" in n and f".layers.{layer}." in n) for layer in range(4)}
    assert b_norm[0] > 0 and b_norm[1] == b_norm[2] == b_norm[3] == 0  # never-trained layers: B = 0
    m.set_lora_active_layers([0, 1, 2, 3])
    assert m(batch)["loss_sum"].item() == before
    state = m.state_dict()
    fresh = _model(cfg)
    assert fresh.lora_active_layers == []
    fresh.load_state_dict(state)
    assert fresh.lora_active_layers == [0, 1, 2, 3]
    assert all(p.requires_grad for n, p in fresh.named_parameters() if "lora_" in n)


def test_trainable_spec_errors(cfg):
    m = _model(cfg)
    with pytest.raises(ConfigError):
        m.apply_trainable({"decoder": "full"})
    with pytest.raises(ConfigError):
        m.apply_trainable({"llm": _lora(cfg, layers=[4])})
    with pytest.raises(ConfigError):
        m.apply_trainable({"llm": {"lora": {"r": 16}}})
    with pytest.raises(ConfigError, match="target_modules"):
        _model(cfg, lora={"target_modules": ["qkv"]})
    with pytest.raises(ConfigError):
        m.apply_trainable({"encoder": {"top_k": 9}})
    with pytest.raises(DataError):
        m({**_batch(), "tasks": ["asr", "s2tt", "t2tt", "summarise"]})
    with pytest.raises(DataError, match="u0.*segment the audio"):
        m({**_batch(), "feats": torch.zeros(4, 3001, 80), "feat_lens": torch.tensor([3001, 10, 0, 0])})


def test_lora_added_by_trainable_spec_when_config_has_none(cfg):
    base = {k: v for k, v in cfg.items() if k != "lora"}
    m = SpeechLLM.from_config(base)
    assert m.lora_config is None
    m.apply_trainable({"llm": {"lora": {"r": 2, "layers": [-1]}}})
    assert m.lora_active_layers == [3] and m.lora_config["r"] == 2


def _train_a_bit(m, batch):
    m.apply_trainable({"encoder": "full", "adapter": "full", "llm": _lora(m.config, layers=[1, 2])})
    opt = torch.optim.SGD([p for p in m.parameters() if p.requires_grad], lr=0.1)
    for _ in range(2):
        m(batch)["loss_sum"].backward()
        opt.step()
        opt.zero_grad()
    m.eval()


def test_save_load_round_trip(cfg, tmp_path):
    m = _model(cfg)
    batch = _batch()
    _train_a_bit(m, batch)
    m.save_pretrained(tmp_path / "model")
    out = tmp_path / "model"
    assert (out / "adapter.safetensors").is_file() and (out / "lora" / "adapter_model.safetensors").is_file()
    assert json.loads((out / "state.json").read_text()) == {"lora_active_layers": [1, 2]}
    assert not (out / "llm").exists()  # base LLM untouched: referenced, not copied
    assert (out / "encoder" / "model.safetensors").is_file()  # trained: saved
    loaded = SpeechLLM.from_pretrained(out).eval()
    assert loaded.lora_active_layers == [1, 2]
    assert m(batch)["loss_sum"].item() == loaded(batch)["loss_sum"].item()
    dec = {**batch, "targets": None}
    assert m.generate(dec, max_new_tokens=8) == loaded.generate(dec, max_new_tokens=8)


def test_merged_export_is_a_plain_llm(cfg, tmp_path):
    m = _model(cfg)
    batch = _batch()
    _train_a_bit(m, batch)
    m.save_pretrained(tmp_path / "merged", merge_lora=True)
    plain = AutoModelForCausalLM.from_pretrained(tmp_path / "merged" / "llm")
    assert not any("lora" in n for n, _ in plain.named_parameters())
    loaded = SpeechLLM.from_pretrained(tmp_path / "merged").eval()
    assert loaded.lora_config is None
    torch.testing.assert_close(loaded(batch)["loss_sum"], m(batch)["loss_sum"], rtol=1e-5, atol=1e-4)


def test_greedy_decoding_is_batch_invariant(tmp_path):
    # a wide initialisation makes outputs depend strongly on the input
    from partlib.models.builders import build_tiny_encoder, build_tiny_llm

    cfg = {"encoder": {"path": str(build_tiny_encoder(tmp_path / "enc", seed=3))},
           "adapter": {"hidden": 64},
           "llm": {"path": str(build_tiny_llm(tmp_path / "llm", seed=3, initializer_range=0.5))}}
    m = _model(cfg).eval()
    batch = _batch(8, seed=5, targets=False)
    together = m.generate(batch)
    assert len(set(together)) > 4 and all(together)
    for i in range(8):
        one = {k: (v[i:i + 1] if isinstance(v, (list, torch.Tensor)) else v) for k, v in batch.items()}
        one["feats"] = batch["feats"][i:i + 1, : max(int(batch["feat_lens"][i]), 1)]
        assert m.generate(one) == [together[i]], i
    beams = m.generate(batch, max_new_tokens=6, num_beams=3, repetition_penalty=1.2, no_repeat_ngram_size=2)
    assert len(beams) == 8


def test_paper_preset_builds_on_meta():
    m = build_paper(device="meta")
    enc = sum(p.numel() for p in m.encoder.parameters())
    llm = sum(p.numel() for n, p in m.llm.named_parameters() if "lora_" not in n)
    assert 630e6 < enc < 640e6, enc
    assert 7.6e9 < llm < 7.65e9, llm
    assert m.n_mels == 128 and m.num_llm_layers() == 28
    assert m.adapter.out.out_features == 3584
    assert next(m.llm.parameters()).device.type == "meta"


def test_gradient_checkpointing_gives_the_same_gradients(cfg):
    spec = {"encoder": "full", "adapter": "full", "llm": _lora(cfg, layers="all")}
    grads = []
    for ckpt in (False, True):
        m = _model(cfg, encoder={**cfg["encoder"], "gradient_checkpointing": ckpt},
                   llm={**cfg["llm"], "gradient_checkpointing": ckpt})
        m.apply_trainable(spec)
        m.train()
        m(_batch())["loss_sum"].backward()
        grads.append({n: p.grad for n, p in m.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys() and len(grads[0]) > 10
    for n in grads[0]:
        torch.testing.assert_close(grads[0][n], grads[1][n], rtol=1e-4, atol=1e-6)


def test_untouched_pretrained_weights_are_referenced(cfg, tmp_path):
    m = _model(cfg)  # encoder and LLM frozen: only the adapter changes
    m.save_pretrained(tmp_path / "m")
    saved = yaml.safe_load((tmp_path / "m" / "config.yaml").read_text())
    assert saved["encoder"]["path"] == cfg["encoder"]["path"] and saved["llm"]["path"] == cfg["llm"]["path"]
    assert not (tmp_path / "m" / "encoder").exists()
    loaded = SpeechLLM.from_pretrained(tmp_path / "m").eval()
    assert loaded(_batch())["loss_sum"].item() == m.eval()(_batch())["loss_sum"].item()


# ---------------------------------------------------------- where pretrained weights come from
@pytest.mark.parametrize("name, hub", [
    ("Qwen/Qwen2.5-7B-Instruct", True), ("openai/whisper-large-v3", True), ("gpt2", True), ("exp/model", True),
    ("/data/whisper", False), ("./llm", False), ("../models/llm", False), ("exp/a/model", False),
    ("org/-name", False), ("a--b", False), ("a..b/c", False), ("x" * 97, False), ("", False),
])
def test_hub_id_form(name, hub):
    from partlib.models.pretrained import looks_like_hub_id

    assert looks_like_hub_id(name) is hub


def test_load_pretrained_rule(tmp_path):
    from partlib.models.pretrained import load_pretrained

    calls = []

    def offline(name):  # what transformers raises for a hub id it cannot fetch offline
        calls.append(name)
        raise OSError("We couldn't connect to 'https://huggingface.co' to load the files.\nCheck your connection.")

    missing = tmp_path / "whisper"
    with pytest.raises(ConfigError) as e:
        load_pretrained(offline, missing, "encoder.path")
    assert str(e.value) == f"encoder.path: model directory {missing} does not exist" and calls == []
    with pytest.raises(ConfigError) as e:
        load_pretrained(offline, "org/name", "llm.path", base_dir=tmp_path)
    assert str(e.value).startswith(f"llm.path: 'org/name' is neither a local directory (nor under {tmp_path}) "
                                   "nor in the Hugging Face cache")
    assert str(e.value).endswith("We couldn't connect to 'https://huggingface.co' to load the files.)")
    assert calls == ["org/name"]
    with pytest.raises(ConfigError, match=f"llm.tokenizer: cannot load {tmp_path}: We couldn't connect"):
        load_pretrained(offline, tmp_path, "llm.tokenizer")
    assert load_pretrained(lambda name: name.upper(), "gpt2", "llm.path") == "GPT2"


def test_loaders_name_the_config_key(cfg, tmp_path):
    """Every loader follows the rule: a missing path names its key before transformers is asked; an
    existing directory without the files is named too."""
    from partlib.models.encoder import load_whisper_encoder
    from partlib.models.llm import llm_config, load_causal_lm, load_tokenizer

    missing = str(tmp_path / "nowhere")
    for load, key in ((lambda p: load_whisper_encoder(p), "encoder.path"), (lambda p: llm_config(p, None), "llm.path"),
                      (lambda p: load_causal_lm(p, None, torch.float32), "llm.path"),
                      (lambda p: load_tokenizer(p), "llm.tokenizer")):
        with pytest.raises(ConfigError, match=f"^{key}: model directory {missing} does not exist$"):
            load(missing)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match=f"^llm.tokenizer: cannot load {tmp_path / 'empty'}: "):
        load_tokenizer(tmp_path / "empty")
    with pytest.raises(ConfigError, match=f"^encoder.path: model directory {missing} does not exist$"):
        SpeechLLM.from_config({**cfg, "encoder": {"path": missing}})


def test_from_pretrained_names_a_missing_or_incomplete_dir(cfg, tmp_path):
    with pytest.raises(ConfigError, match=f"^--model-dir: model directory {tmp_path / 'm'} does not exist$"):
        SpeechLLM.from_pretrained(tmp_path / "m", key="--model-dir")
    _model(cfg).save_pretrained(tmp_path / "m")
    (tmp_path / "m" / "adapter.safetensors").unlink()
    with pytest.raises(DataError, match="incomplete model directory.*adapter.safetensors") as e:
        SpeechLLM.from_pretrained(tmp_path / "m")
    assert e.value.path == str(tmp_path / "m")


def test_prompt_config_system_and_templates(cfg):
    m = _model(cfg, prompt={"system": "You transcribe.", "templates": {"asr": "Write down the {src_lang}."}})
    t, _ = m._prompt_batch(_batch(), train=False)
    text = m.tokenizer.decode(t["input_ids"][0][~t["speech_mask"][0] & t["attention_mask"][0].bool()])
    assert text == ("<|im_start|>system\nYou transcribe.<|im_end|>\n<|im_start|>user\n"
                    "Write down the English.<|im_end|>\n<|im_start|>assistant\n")
    assert t["attention_mask"][0, -1] == 1  # left padding for generation: prompts end together
    with pytest.raises(ConfigError, match="fields"):
        _model(cfg, prompt={"templates": {"s2tt": "Translate into {target}."}})
    with pytest.raises(ConfigError):
        _model(cfg, prompt={"templates": {"summarise": "x"}})


def test_speech_row_without_frames_gets_the_prompt_without_speech(cfg):
    m = _model(cfg).eval()
    batch = {**_batch(), "feat_lens": torch.tensor([50, 0, 0, 0])}
    t, examples = m._prompt_batch(batch, train=False)
    assert examples[1].n_speech == 0 and not t["speech_mask"][1].any() and t["speech_mask"][0].any()
    text = m.tokenizer.decode(t["input_ids"][1][t["attention_mask"][1].bool()])
    assert text.endswith("<|im_start|>user\nTranslate the German speech into English.<|im_end|>\n"
                         "<|im_start|>assistant\n")
    assert len(m.generate({**batch, "targets": None}, max_new_tokens=3)) == 4


def test_llm_layout_assumptions_are_checked():
    """Qwen2 (like Llama) has decoder layers named '.layers.<N>.'; GPT-2 ('.h.<N>.') is named as
    not fitting, instead of LoRA silently choosing nothing."""
    from transformers import GPT2Config, GPT2LMHeadModel, Qwen2Config, Qwen2ForCausalLM

    from partlib.models.llm import decoder_layers
    from partlib.models.lora import normalize_lora_config

    qwen = Qwen2ForCausalLM(Qwen2Config(vocab_size=50, hidden_size=16, intermediate_size=32, num_hidden_layers=3,
                                        num_attention_heads=2, num_key_value_heads=1))
    assert len(decoder_layers(qwen)) == 3
    gpt2 = GPT2LMHeadModel(GPT2Config(vocab_size=50, n_embd=16, n_layer=2, n_head=2))
    with pytest.raises(ConfigError, match="GPT2LMHeadModel.*'.layers.<N>.'"):
        decoder_layers(gpt2)
    with pytest.raises(ConfigError, match="no ModuleList 'layers'"):
        normalize_lora_config({"target_modules": ["c_attn"]}, gpt2, 2)


def test_another_llm_architecture_plugs_in(cfg, tmp_path):
    """Any Hugging Face causal LM with the '.layers.<N>.' layout: a tiny Llama saved locally (with
    the tiny tokenizer and its chat template) trains with LoRA, generates and round-trips."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tok = AutoTokenizer.from_pretrained(cfg["llm"]["path"])
    torch.manual_seed(0)
    llama = LlamaForCausalLM(LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64,
                                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                                         pad_token_id=tok.pad_token_id))
    llama.save_pretrained(tmp_path / "llama")
    tok.save_pretrained(tmp_path / "llama")
    m = _model(cfg, llm={"path": str(tmp_path / "llama"), "dtype": "float32"},
               lora={"r": 2, "alpha": 4, "dropout": 0.0, "target_modules": ["q_proj", "v_proj"], "layers": "all"})
    m.apply_trainable({"encoder": "frozen", "adapter": "full", "llm": _lora(m.config)})
    out = m(_batch())
    out["loss_sum"].backward()
    assert torch.isfinite(out["loss_sum"]) and out["n_tokens"] > 0
    assert any(p.grad is not None for n, p in m.named_parameters() if "lora_" in n)
    assert len(m.shard_units()) == 2 + len(m.encoder.whisper.layers)
    hyps = m.eval().generate(_batch(targets=False), max_new_tokens=3)
    assert len(hyps) == 4 and all(isinstance(h, str) for h in hyps)
    m.save_pretrained(tmp_path / "saved")
    loaded = SpeechLLM.from_pretrained(tmp_path / "saved")
    assert loaded(_batch())["loss_sum"].item() == pytest.approx(m(_batch())["loss_sum"].item(), abs=1e-5)


def test_loader_tokenised_batches_give_the_models_own_loss(cfg):
    """PromptTokens (the loader's tokenising step) makes the tensors the model would make itself:
    every task, a speech row without frames, the same loss to the bit; a speech span that does not
    match the embeddings is an error naming the utterance."""
    from partlib.data.streaming import SpeechLengths
    from partlib.models.prompt import TOKEN_KEYS
    from partlib.train.loader import PromptTokens

    m = _model(cfg)
    spans = m.adapter.output_lengths(m.encoder.output_lengths(torch.arange(m.encoder.max_frames + 1)))
    tokens = PromptTokens(m.prompt, SpeechLengths(spans.numpy()))
    batch = _batch(8, seed=3)
    batch["feat_lens"][4] = 0  # a speech row without frames (the no-audio control)
    own, _ = m._prompt_batch(batch, train=True)
    tokenised = tokens(dict(batch))
    for k in TOKEN_KEYS:
        assert torch.equal(tokenised[k], own[k]), k
    with torch.no_grad():
        assert torch.equal(m(tokenised)["loss_sum"], m(batch)["loss_sum"])
    tokenised["speech_mask"] = tokenised["speech_mask"].clone()
    tokenised["speech_mask"][1, tokenised["speech_mask"][1].nonzero()[0]] = False
    with pytest.raises(DataError, match="u1.*speech positions"):
        m(tokenised)
