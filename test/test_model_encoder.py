"""Variable-length Whisper encoder and adapters: batch invariance, exact lengths, errors, trainable parts."""
import pytest
import torch

from partlib.common import ConfigError, DataError
from partlib.models.adapter import ConvAdapter, StackAdapter, WindowQFormer, build_adapter
from partlib.models.builders import build_tiny_encoder
from partlib.models.encoder import SpeechEncoder, conv_output_lengths, load_whisper_encoder


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return build_tiny_encoder(tmp_path_factory.mktemp("enc") / "whisper")


def _encoder(tiny_dir, attn="sdpa", **kw):
    w = load_whisper_encoder(tiny_dir)
    w.config._attn_implementation = attn
    return SpeechEncoder(w, **kw).eval()


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_alone_equals_batched(tiny_dir, attn):
    enc = _encoder(tiny_dir, attn)
    torch.manual_seed(0)
    lens = torch.tensor([301, 300, 57, 2, 1, 128])  # odd and even lengths, down to one frame
    feats = torch.randn(len(lens), 310, 80) * 3  # padding holds garbage: it must be ignored
    with torch.no_grad():
        out, out_lens = enc(feats, lens)
        assert out.shape == (6, 155, 32)
        assert out_lens.tolist() == [151, 150, 29, 1, 1, 64]
        for i, n in enumerate(lens.tolist()):
            alone, alone_len = enc(feats[i:i + 1, :n], lens[i:i + 1])
            assert alone.shape[1] == alone_len.item() == out_lens[i].item()
            torch.testing.assert_close(out[i, : out_lens[i]], alone[0], atol=1e-5, rtol=0)
            assert out[i, out_lens[i]:].abs().sum() == 0


def test_output_lengths_match_conv_arithmetic():
    lens = torch.arange(1, 3001)
    expected = torch.tensor([(t + 2 * 1 - 3) // 2 + 1 for t in range(1, 3001)])  # conv2: k3 s2 p1
    assert torch.equal(conv_output_lengths(lens), expected)
    assert conv_output_lengths(torch.tensor([3000])).item() == 1500


def test_too_long_and_wrong_mels_are_clear_errors(tiny_dir):
    enc = _encoder(tiny_dir)
    with pytest.raises(DataError, match="3000 frames"):
        enc(torch.zeros(1, 3001, 80), torch.tensor([3001]))
    with pytest.raises(ConfigError, match="num_mel_bins"):
        enc(torch.zeros(1, 100, 128), torch.tensor([100]))


def test_pad_to_30s_runs_stock_conditions(tiny_dir):
    enc = _encoder(tiny_dir, pad_to_30s=True)
    stock = load_whisper_encoder(tiny_dir).eval()
    torch.manual_seed(1)
    feats = torch.randn(1, 200, 80)
    with torch.no_grad():
        out, lens = enc(feats, torch.tensor([200]))
        x = torch.full((1, 3000, 80), max(feats.max().item() - 2.0, -1.5))
        x[:, :200] = feats
        ref = stock(x.transpose(1, 2)).last_hidden_state
        varlen, _ = _encoder(tiny_dir)(feats, torch.tensor([200]))
    assert lens.item() == 100 and out.shape == (1, 100, 32)
    torch.testing.assert_close(out, ref[:, :100], atol=1e-5, rtol=0)
    assert (out - varlen).abs().max() > 1e-3  # the 30 s context really differs


def test_top_k_trains_top_layers_and_runs_the_rest_without_grad(tiny_dir):
    enc = _encoder(tiny_dir)
    enc.set_trainable(1)
    trainable = {n for n, p in enc.named_parameters() if p.requires_grad}
    assert trainable and all(n.startswith(("whisper.layers.1.", "whisper.layer_norm.")) for n in trainable)
    enc.train()
    out, _ = enc(torch.randn(2, 40, 80), torch.tensor([40, 30]))
    out.sum().backward()
    for n, p in enc.named_parameters():
        assert (p.grad is not None) == (n in trainable), n
    enc.set_trainable("frozen")
    out, _ = enc(torch.randn(2, 40, 80), torch.tensor([40, 30]))
    assert not out.requires_grad
    with pytest.raises(ConfigError):
        enc.set_trainable(3)


@pytest.mark.parametrize("cls", [StackAdapter, ConvAdapter])
def test_adapter_lengths_and_batch_invariance(cls):
    torch.manual_seed(0)
    ad = cls(16, 24, k=4, hidden=32)
    lens = torch.tensor([13, 12, 1, 9])
    x = torch.randn(4, 13, 16)
    y, ylens = ad(x, lens)
    assert ylens.tolist() == [4, 3, 1, 3] and y.shape == (4, 4, 24)
    for i, n in enumerate(lens.tolist()):
        alone, _ = ad(x[i:i + 1, :n], lens[i:i + 1])
        torch.testing.assert_close(y[i, : ylens[i]], alone[0], atol=1e-6, rtol=0)
        assert y[i, ylens[i]:].abs().sum() == 0


def test_build_adapter_validates():
    assert isinstance(build_adapter({"type": "conv", "stack": 2}, 8, 8, 50.0), ConvAdapter)
    with pytest.raises(ConfigError, match=r"adapter\.type: expected one of stack \| conv \| qformer"):
        build_adapter({"type": "lstm"}, 8, 8, 50.0)
    with pytest.raises(ConfigError, match=r"adapter\.stack: expected a positive integer, got 0"):
        build_adapter({"stack": 0}, 8, 8, 50.0)
    with pytest.raises(ConfigError, match=r"adapter\.stride: unknown key .*known: type, stack, hidden"):
        build_adapter({"stride": 2}, 8, 8, 50.0)
    with pytest.raises(ConfigError, match="window_s"):
        build_adapter({"type": "qformer", "window_s": 0}, 8, 8, 50.0)


def _qformer(**kw):
    torch.manual_seed(0)
    return build_adapter({"type": "qformer", "window_s": 0.1, "queries": 2, "layers": 2, "dim": 16, "heads": 2,
                          "ffn": 32, **kw}, 12, 24, 50.0)


def test_qformer_lengths_masking_and_batch_invariance():
    ad = _qformer().eval()
    assert isinstance(ad, WindowQFormer) and ad.window == 5  # 0.1 s of 50 states/s
    lens = torch.tensor([23, 10, 1, 16])
    x = torch.randn(4, 23, 12)
    y, ylens = ad(x, lens)
    # ceil(n / 5) windows of 2 queries each
    assert ylens.tolist() == [10, 4, 2, 8] and y.shape == (4, 10, 24)
    assert ad.output_lengths(lens).tolist() == ylens.tolist()
    for i, n in enumerate(lens.tolist()):
        alone, _ = ad(x[i:i + 1, :n], lens[i:i + 1])
        torch.testing.assert_close(y[i, : ylens[i]], alone[0], atol=1e-5, rtol=0)
        assert y[i, ylens[i]:].abs().sum() == 0
    # frames past an utterance's end do not change its outputs
    noisy = x.clone()
    noisy[3, 16:] = 100.0
    torch.testing.assert_close(ad(noisy, lens)[0], y, atol=1e-5, rtol=0)
    # the last window of the 16-frame utterance holds one real frame (15) and four padded ones: its
    # two outputs are those of the blocks run on that frame alone, with no padded key to attend to
    with torch.no_grad():
        q = ad.queries[None]
        frame = ad.inp(x[3:4, 15:16]) + ad.pos[:1]
        for block in ad.blocks:
            q = block(q, frame, torch.zeros(1, 1, dtype=torch.bool))
        torch.testing.assert_close(y[3, 6:8], ad.out(ad.norm(q))[0], atol=1e-5, rtol=0)


def test_qformer_trains_a_short_run():
    """A few steps reduce a regression loss to fixed targets: the adapter is trainable end to end."""
    ad = _qformer(queries=1)
    x, lens = torch.randn(3, 20, 12), torch.tensor([20, 15, 7])
    target = torch.randn(3, 4, 24)
    opt = torch.optim.Adam(ad.parameters(), lr=3e-3)
    losses = []
    for _ in range(60):
        y, ylens = ad(x, lens)
        mask = (torch.arange(4)[None] < ylens[:, None])[..., None]
        loss = ((y - target) ** 2 * mask).sum() / mask.sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]
    assert all(p.grad is not None for p in ad.parameters())


def test_loads_encoder_of_a_full_whisper_checkpoint(tmp_path, monkeypatch):
    # the layout of openai/whisper-* checkpoints: WhisperForConditionalGeneration, keys "model.encoder.*"
    from transformers import WhisperConfig, WhisperForConditionalGeneration

    cfg = WhisperConfig(num_mel_bins=80, d_model=16, encoder_layers=1, encoder_attention_heads=2, encoder_ffn_dim=32,
                        decoder_layers=1, decoder_attention_heads=2, decoder_ffn_dim=32, vocab_size=40,
                        max_target_positions=8, pad_token_id=1, bos_token_id=0, eos_token_id=1,
                        decoder_start_token_id=0, begin_suppress_tokens=None, suppress_tokens=None)
    full = WhisperForConditionalGeneration(cfg)
    full.save_pretrained(tmp_path / "w")

    def no_decoder(*args, **kwargs):
        raise AssertionError("loading the encoder built the decoder")

    from transformers.models.whisper import modeling_whisper

    monkeypatch.setattr(modeling_whisper.WhisperDecoder, "__init__", no_decoder)
    enc = load_whisper_encoder(tmp_path / "w")
    ref = full.get_encoder().state_dict()
    got = enc.state_dict()
    assert ref.keys() == got.keys()
    assert all(torch.equal(ref[k], got[k]) for k in ref)
    enc.save_pretrained(tmp_path / "saved")  # saved under the encoder's own keys, and loads back
    again = load_whisper_encoder(tmp_path / "saved").state_dict()
    assert all(torch.equal(ref[k], again[k]) for k in ref)
    # a folder without encoder weights is named
    (tmp_path / "other").mkdir()
    from safetensors.torch import save_file

    save_file({"proj.weight": torch.zeros(2, 2)}, str(tmp_path / "other" / "model.safetensors"))
    (tmp_path / "other" / "config.json").write_text((tmp_path / "w" / "config.json").read_text())
    with pytest.raises(ConfigError, match="encoder weights missing"):
        load_whisper_encoder(tmp_path / "other")
