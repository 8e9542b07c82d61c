"""Output control without a reference: script masks, trouble signs, training-rate bounds."""

import numpy as np
import pytest
import torch

from partlib.common import ConfigError
from partlib.data.batching import collate
from partlib.data.examples import Example
from partlib.infer import control

torch.set_num_threads(1)


def _repeats_reference(units, times=3):
    """Brute force: some window of times*n units is one n-gram times over."""
    return any(units[i:i + times * n] == units[i:i + n] * times
               for n in range(1, len(units) + 1) for i in range(len(units) - times * n + 1))


def test_repeats_and_troubles():
    rng = np.random.default_rng(0)
    for _ in range(400):
        units = [str(u) for u in rng.integers(0, 3, size=rng.integers(0, 12))]
        assert control.repeats(units) == _repeats_reference(units), units
    assert control.repeats("ha ha ha".split()) and not control.repeats("ha ha".split())
    assert control.troubles("a b c", 3, True, 2.0, "en", bound=5.0) == []
    assert control.troubles("a b c", 3, False, 2.0, "en", bound=None) == ["budget"]
    assert control.troubles("a b c", 12, True, 2.0, "en", bound=5.0) == ["rate"]  # 6 tokens/s
    assert control.troubles("a b c", 4, True, 0.2, "en", bound=5.0) == []  # a short clip counts as 1 s
    assert control.troubles("go go go", 3, False, 1.0, "en", bound=1.0) == ["budget", "rate", "repeat"]
    assert control.troubles("你好你好你好", 6, True, 9.0, "zh", bound=None) == ["repeat"]  # characters, no spaces
    assert control.trouble_counts(["budget,repeat", "rate", "repeat"]) == {
        "redecoded": 3, "budget": 1, "rate": 1, "repeat": 2}


def test_target_rates_are_a_percentile_of_tokens_per_second():
    rng = np.random.default_rng(1)
    items = [("asr", "en", int(n), float(s)) for n, s in zip(rng.integers(1, 40, 200), rng.uniform(0.3, 8, 200))]
    items += [("s2tt", "de", 5, 2.0), ("s2tt", "de", 9, 3.0)]
    rates = control.target_rates(items)
    en = [n / max(1.0, s) for _, _, n, s in items[:200]]
    assert rates["asr"]["en"] == pytest.approx(np.percentile(en, 99), abs=1e-3)
    assert rates["s2tt"]["de"] == pytest.approx(np.percentile([2.5, 3.0], 99), abs=1e-3)
    trouble = control.Trouble(rates, rate_factor=2.0)
    assert trouble.bound("s2tt", "de") == pytest.approx(2 * rates["s2tt"]["de"]) and trouble.bound("asr", "fr") is None


def test_script_letters():
    assert control.letters_in_script("Straße, 12 élan!", "Latn")
    assert not control.letters_in_script("hello 你", "Latn")
    assert control.letters_in_script("你好，世界。123", "Hani") and not control.letters_in_script("你好 ok", "Hani")
    assert control.letters_in_script("привет", "Cyrl") and control.letters_in_script("ひらがな漢字", "Jpan")
    with pytest.raises(ConfigError, match="no script mask"):
        control.letters_in_script("x", "Zzzz")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from partlib.models.builders import tiny_model_config
    from partlib.models.speech_llm import SpeechLLM

    torch.manual_seed(0)
    return SpeechLLM.from_config(tiny_model_config(tmp_path_factory.mktemp("ctl") / "pretrained", lora=False)).eval()


def _batch(tgts, seed=0):
    g = torch.Generator().manual_seed(seed)
    feats = [torch.randn(30 + 9 * i, 80, generator=g) for i in range(len(tgts))]
    exs = [Example(key=f"k{i}", utt=f"u{i}", dir_index=i, task="s2tt", src_lang="de", tgt_lang=t,
                   num_frames=int(f.shape[0]), src_text=None, target="", n_tokens=0)
           for i, (f, t) in enumerate(zip(feats, tgts))]
    batch = collate(exs, feats)
    batch["targets"] = None
    return batch


def test_script_mask_keeps_each_row_in_its_script(tiny):
    tok = tiny.tokenizer
    mask = control.script_mask(tiny)
    assert control.script_mask(tiny) is mask  # built once per model
    han, latin = mask.allowed("zh"), mask.allowed("en")
    pieces = {tok.decode([i]): i for i in range(len(tok))}
    word = next(i for p, i in pieces.items() if len(p.strip()) > 2 and p.strip().isascii() and p.strip().isalpha())
    assert all(han[pieces[c]] and not latin[pieces[c]] for c in ("狐", "色"))
    assert latin[word] and not han[word]
    digit = next(i for p, i in pieces.items() if p.strip().isdigit() or p.strip() in (",", "."))
    assert han[digit] and latin[digit]  # no letters: every script
    assert all(han[i] and latin[i] for i in tiny.prompt.stop_ids)
    assert mask.allowed("de") is latin  # one mask per script: Latin-script languages share it
    tgts = ["zh", "en", "zh", "de"]
    batch = _batch(tgts)

    def generate(b, beams=1, **opts):  # the script mask reaches the model as a logits processor
        return tiny.generate(b, num_beams=beams, logits_processors=[mask.processor(b["tgt_langs"], beams)], **opts)

    free = tiny.generate(batch, max_new_tokens=12)
    masked = generate(batch, max_new_tokens=12)
    script = {"zh": "Hani", "en": "Latn", "de": "Latn"}
    assert all(control.letters_in_script(h, script[t]) for h, t in zip(masked, tgts))
    assert not all(control.letters_in_script(h, script[t]) for h, t in zip(free, tgts))  # the mask did something
    # row by row equals the batch; beams are masked too
    for i in range(len(tgts)):
        one = {k: (v[i:i + 1] if torch.is_tensor(v) else v[i:i + 1] if isinstance(v, list) else v)
               for k, v in batch.items()}
        assert generate(one, max_new_tokens=12) == [masked[i]]
    beams = generate(batch, beams=3, max_new_tokens=8)
    assert all(control.letters_in_script(h, script[t]) for h, t in zip(beams, tgts))


def test_hypotheses_report_length_and_end(tiny):
    batch = _batch(["en", "en"], seed=3)
    short = tiny.hypotheses(batch, max_new_tokens=2)
    assert all(not h.ended and h.n_tokens == 2 for h in short)  # a random model never stops in 2 tokens
    assert [h.text for h in short] == tiny.generate(batch, max_new_tokens=2)
    for h in tiny.hypotheses(batch, max_new_tokens=40):
        assert h.n_tokens < 40 if h.ended else h.n_tokens == 40
