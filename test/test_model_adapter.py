"""The PART paper's adapter (``transformer``: one strided convolution, Transformer layers): output
lengths, outputs against a plain-torch reference run on the valid frames only, batch invariance,
config errors, training inside a tiny SpeechLLM, save/load and the memory planner's view of it."""
import math

import pytest
import torch

from partlib.common import ConfigError
from partlib.models.adapter import TransformerAdapter, build_adapter
from partlib.models.builders import build_tiny_encoder, build_tiny_llm
from partlib.models.speech_llm import SpeechLLM

torch.set_num_threads(1)


def _adapter(**kw) -> TransformerAdapter:
    torch.manual_seed(0)
    opts = {"type": "transformer", "stride": 3, "kernel": 7, "layers": 2, "dim": 16, "heads": 4, "ffn": 32, **kw}
    ad = build_adapter(opts, 12, 24, 50.0)
    assert isinstance(ad, TransformerAdapter)
    return ad.eval()


@pytest.mark.parametrize("stride, kernel", [(1, 1), (2, 2), (3, 7), (4, 6), (5, 8)])
def test_output_lengths_are_one_per_started_group(stride, kernel):
    ad = _adapter(stride=stride, kernel=kernel, layers=1)
    lens = torch.tensor([1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 17, 40])
    expected = [math.ceil(n / stride) for n in lens.tolist()]
    assert ad.output_lengths(lens).tolist() == expected
    with torch.no_grad():
        y, ylens = ad(torch.randn(len(lens), 41, 12), lens)
    assert ylens.tolist() == expected and y.shape == (len(lens), math.ceil(41 / stride), 24)


def _layer_norm(x, norm):
    mean = x.mean(-1, keepdim=True)
    var = ((x - mean) ** 2).mean(-1, keepdim=True)
    return (x - mean) / torch.sqrt(var + norm.eps) * norm.weight + norm.bias


def _gelu(x):
    return 0.5 * x * (1 + torch.erf(x / math.sqrt(2)))


def _reference(ad: TransformerAdapter, x: torch.Tensor, heads: int) -> torch.Tensor:
    """The adapter's outputs for one utterance x [n, D] (its frames only), in plain torch ops:
    the convolution as windows (unfold) times the flattened kernel, attention as an explicit
    softmax over the n' = ceil(n / stride) outputs, which are all valid: nothing to mask."""
    s, k = ad.stride, ad.kernel
    n, d = x.shape
    n_out = math.ceil(n / s)
    left = (k - s) // 2  # output j covers frames [j*s - left, j*s - left + k)
    z = torch.zeros(left + n_out * s + k, d)
    z[left: left + n] = x
    windows = z.T.unfold(1, k, s)[:, :n_out]  # [D, n', k]
    w = ad.conv.weight  # [dim, D, k]
    h = _gelu(windows.permute(1, 0, 2).reshape(n_out, d * k) @ w.reshape(w.shape[0], -1).T + ad.conv.bias)
    dim = h.shape[1]
    half = dim // 2
    pe = torch.tensor([[math.sin(p / 10000 ** (i / half)) if i < half else math.cos(p / 10000 ** ((i - half) / half))
                        for i in range(dim)] for p in range(n_out)])
    h = h + pe
    hd = dim // heads
    for block in ad.blocks:
        a = _layer_norm(h, block.norm_a) @ block.qkv.weight.T + block.qkv.bias
        q, kk, v = a[:, :dim], a[:, dim: 2 * dim], a[:, 2 * dim:]
        outs = []
        for i in range(heads):
            sl = slice(i * hd, (i + 1) * hd)
            scores = q[:, sl] @ kk[:, sl].T / math.sqrt(hd)
            p = torch.exp(scores - scores.max(-1, keepdim=True).values)
            outs.append((p / p.sum(-1, keepdim=True)) @ v[:, sl])
        h = h + torch.cat(outs, dim=1) @ block.proj.weight.T + block.proj.bias
        f1, f2 = block.ffn[0], block.ffn[2]
        h = h + _gelu(_layer_norm(h, block.norm_f) @ f1.weight.T + f1.bias) @ f2.weight.T + f2.bias
    return _layer_norm(h, ad.norm) @ ad.out.weight.T + ad.out.bias


def test_outputs_match_a_reference_on_the_valid_frames_and_are_batch_invariant():
    ad = _adapter()
    torch.manual_seed(1)
    lens = torch.tensor([23, 10, 1, 16, 3, 2])
    x = torch.randn(len(lens), 25, 12)
    x[torch.arange(25)[None, :] >= lens[:, None]] = 50.0  # padding holds garbage: it must be ignored
    with torch.no_grad():
        y, ylens = ad(x, lens)
        assert ylens.tolist() == [8, 4, 1, 6, 1, 1] and y.shape == (6, 9, 24)
        for i, n in enumerate(lens.tolist()):
            m = int(ylens[i])
            torch.testing.assert_close(y[i, :m], _reference(ad, x[i, :n], heads=4), atol=1e-5, rtol=0)
            alone, alone_lens = ad(x[i:i + 1, :n], lens[i:i + 1])
            assert alone.shape[1] == int(alone_lens[0]) == m
            torch.testing.assert_close(y[i, :m], alone[0], atol=1e-5, rtol=0)
            assert y[i, m:].abs().sum() == 0
        # a batch padded further than its longest utterance gives the same outputs
        longer, _ = ad(torch.cat([x, torch.full((6, 7, 12), -9.0)], dim=1), lens)
        assert longer.shape[1] == 11
        torch.testing.assert_close(longer[:, :9], y, atol=1e-5, rtol=0)
        assert longer[:, 9:].abs().sum() == 0


def test_a_row_without_frames_gives_zeros_and_finite_gradients():
    ad = _adapter().train()
    x = torch.randn(2, 9, 12, requires_grad=True)
    y, ylens = ad(x, torch.tensor([9, 0]))
    assert ylens.tolist() == [3, 0] and y[1].abs().sum() == 0
    y.sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in ad.parameters())
    assert x.grad[1].abs().sum() == 0


@pytest.mark.parametrize("opts, message", [
    ({"dim": 18, "heads": 4}, r"adapter\.heads: must divide dim \(18\), got 4"),
    ({"stride": 4, "kernel": 3}, r"adapter\.kernel: must be at least stride \(4\) not to skip frames, got 3"),
    ({"layers": 0}, r"adapter\.layers: expected a positive integer, got 0"),
    ({"stride": 2.5}, r"adapter\.stride: expected a positive integer, got 2\.5"),
    ({"heads": True}, r"adapter\.heads: expected a positive integer, got True"),
    ({"window_s": 0.3}, r"adapter\.window_s: unknown key for adapter type transformer "
                        r"\(known: type, stride, kernel, layers, dim, heads, ffn\)"),
])
def test_config_errors_name_the_key(opts, message):
    with pytest.raises(ConfigError, match=message) as e:
        build_adapter({"type": "transformer", **opts}, 8, 8, 50.0)
    assert "\n" not in str(e.value)


def test_model_config_file_errors_name_the_file_and_key(tmp_path):
    import yaml

    from partlib.models.schema import load_model_config

    path = tmp_path / "model.yaml"
    path.write_text(yaml.safe_dump({"encoder": {"path": "enc"}, "llm": {"path": "llm"},
                                    "adapter": {"type": "transformer", "dim": 30, "heads": 4}}))
    with pytest.raises(ConfigError) as e:
        load_model_config(path)
    assert str(e.value) == f"{path}: adapter.heads: must divide dim (30), got 4"


# ---------------------------------------------------------------- inside a tiny SpeechLLM
ADAPTER = {"type": "transformer", "stride": 2, "kernel": 4, "layers": 2, "dim": 32, "heads": 4, "ffn": 64}


@pytest.fixture(scope="module")
def cfg(tmp_path_factory):
    # a wider LLM initialisation than the default lets the speech span sway its predictions
    root = tmp_path_factory.mktemp("tiny")
    return {"encoder": {"path": str(build_tiny_encoder(root / "enc", seed=3))}, "adapter": ADAPTER,
            "llm": {"path": str(build_tiny_llm(root / "llm", seed=3, initializer_range=0.2))},
            "prompt": {"system": None}}


def _batch():
    g = torch.Generator().manual_seed(0)
    lens = torch.tensor([120, 57, 90, 33])
    return {"utt_ids": ["u0", "u1", "u2", "u3"], "tasks": ["asr", "s2tt", "asr", "s2tt"],
            "src_langs": ["en", "de", "fr", "en"], "tgt_langs": ["en", "en", "fr", "de"],
            "feats": torch.randn(4, 120, 80, generator=g), "feat_lens": lens, "src_texts": None,
            "targets": ["Hello world.", "Good day to you.", "Bonjour.", "Hallo Welt."]}


def test_speech_llm_with_the_adapter_trains_and_round_trips(cfg, tmp_path):
    torch.manual_seed(0)
    m = SpeechLLM.from_config(cfg)  # a new model trains its adapter only
    assert isinstance(m.adapter, TransformerAdapter) and m.adapter.stride == 2
    trainable = {n.split(".")[0] for n, p in m.named_parameters() if p.requires_grad}
    assert trainable == {"adapter"}
    # 120 log-mel frames -> 60 encoder states -> 30 embeddings
    assert m.speech_embed_length(120) == 30 and m.speech_embed_length(33) == math.ceil(17 / 2)
    batch = _batch()
    opt = torch.optim.Adam([p for p in m.parameters() if p.requires_grad], lr=3e-3)
    m.train()
    losses = []
    for _ in range(20):
        out = m(batch)
        loss = out["loss_sum"] / out["n_tokens"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.9 * losses[0], losses  # measured: 6.72 -> 5.61
    m.eval()
    m.save_pretrained(tmp_path / "model")
    loaded = SpeechLLM.from_pretrained(tmp_path / "model").eval()
    assert isinstance(loaded.adapter, TransformerAdapter)
    assert loaded.config["adapter"] == {"type": "transformer", **{k: v for k, v in ADAPTER.items() if k != "type"}}
    ref = m.adapter.state_dict()
    got = loaded.adapter.state_dict()
    assert ref.keys() == got.keys() and all(torch.equal(ref[k], got[k]) for k in ref)
    with torch.no_grad():
        assert m(batch)["loss_sum"].item() == loaded(batch)["loss_sum"].item()
    dec = {**batch, "targets": None}
    assert m.generate(dec, max_new_tokens=5) == loaded.generate(dec, max_new_tokens=5)


def test_memory_planner_counts_the_adapter_as_a_real_forward_does(cfg):
    """The planner runs the adapter on the meta device: its parameters are the real module's, and
    the bytes it sees kept for backward are those a real CPU forward of the adapter keeps."""
    from partlib.train import memory

    real = SpeechLLM.from_config(cfg)
    meta = memory.meta_model(cfg)
    assert memory.param_counts(meta).total["adapter"] == sum(p.numel() for p in real.adapter.parameters())
    meta.apply_trainable({"encoder": "frozen", "adapter": "full", "llm": "frozen"})
    probed = memory.probe_activations(meta, memory.BatchShape("asr", 3, 200, 150, 20))

    own = {p.untyped_storage().data_ptr() for p in real.adapter.parameters()}
    seen = {}

    def pack(t):
        if t.untyped_storage().data_ptr() not in own:
            seen[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    real.adapter.train()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        real.adapter(torch.randn(3, 100, real.encoder.d_model), torch.full((3,), 100))
    assert probed.saved["adapter"] > 0
    assert probed.saved["adapter"] == pytest.approx(sum(seen.values()), rel=0.01)
