"""Long recordings: voice-activity regions, hard splits between words, packing and stitching."""
import numpy as np
import pytest
import torch

from partlib.common import ConfigError
from partlib.data import langs
from partlib.infer import longform
from audio_fixtures import espeak, join, needs_espeak

SR = 16000
WORDS = ("one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen "
         "seventeen eighteen nineteen twenty").split()


def _inside(span, segments):
    return [k for k, (s, e) in enumerate(segments) if s <= span[0] and span[1] <= e]


@needs_espeak
def test_no_word_is_lost_at_a_hard_split():
    # words 40 ms apart: too short a pause for the detector, so the whole row is one region
    samples, spans = join([espeak(w) for w in WORDS], [0.04] * len(WORDS))
    vad = longform.VoiceActivity()
    assert len(vad.regions(samples)) == 1
    segments = longform.plan_segments(samples, 3.0, vad)
    assert len(segments) >= 3 and all(e - s <= 3 * SR for s, e in segments)
    assert all(b[0] >= a[1] for a, b in zip(segments, segments[1:]))  # in order, no overlap
    for word, span in zip(WORDS, spans):
        assert len(_inside(span, segments)) == 1, word
    # the test has teeth: cutting every 3 s instead cuts words
    naive = [(i, min(i + 3 * SR, len(samples))) for i in range(0, len(samples), 3 * SR)]
    assert any(not _inside(span, naive) for span in spans)


@needs_espeak
def test_pauses_make_regions_and_segments_pack_them():
    sentences = ["the cat sat on the mat", "a dog ran home", "we like green tea", "it is cold today"]
    samples, spans = join([espeak(s) for s in sentences], [0.6, 0.3, 0.6, 0.0])
    regions = longform.VoiceActivity().regions(samples)
    assert len(regions) == len(sentences)
    for (s, e), (rs, re_) in zip(spans, regions):  # each region is its sentence, give or take the padding
        assert abs(rs - s) < 0.2 * SR and abs(re_ - e) < 0.2 * SR
    longest = max(e - s for s, e in spans) / SR
    max_s = 2 * longest + 0.7  # room for two sentences and a pause between them
    segments = longform.plan_segments(samples, max_s, longform.VoiceActivity())
    assert segments == longform.pack(regions, int(max_s * SR))
    per_segment = [len([sp for sp in spans if _inside(sp, [seg])]) for seg in segments]
    assert sum(per_segment) == len(sentences) and max(per_segment) >= 2


def test_pack_and_hard_split_on_known_signals():
    assert longform.pack([(0, 10), (12, 20), (25, 40), (41, 44)], 20) == [(0, 20), (25, 44)]
    assert longform.pack([(0, 30), (31, 35)], 20) == [(0, 30), (31, 35)]  # never splits by itself
    rng = np.random.default_rng(0)
    x = rng.standard_normal(10 * SR).astype(np.float32)
    x[int(3.3 * SR):int(3.36 * SR)] *= 0.01  # one quiet dip, in the second half of the first 5 s
    pieces = longform.hard_split(x, (0, len(x)), 5 * SR)
    assert 3.3 * SR <= pieces[0][1] <= 3.36 * SR
    assert all(e - s <= 5 * SR for s, e in pieces) and pieces[-1][1] == len(x)
    assert all(e - s >= 2.5 * SR for s, e in pieces[:-1]) and [p[0] for p in pieces[1:]] == [p[1] for p in pieces[:-1]]


class _NoVad(longform.VoiceActivity):
    def regions(self, samples):
        raise AssertionError("short audio must not go through the detector")


def test_short_audio_is_one_segment_and_options_are_checked():
    x = np.zeros(2 * SR, np.float32)
    assert longform.plan_segments(x, 2.0, _NoVad()) == [(0, 2 * SR)]
    with pytest.raises(ConfigError, match="at least"):
        longform.plan_segments(x, 0.01)
    assert longform.plan_segments(np.zeros(5 * SR, np.float32), 2.0) == []  # silence: nothing to decode
    assert langs.join_texts(["你好", "", "世界"], "zh") == "你好世界"
    assert langs.join_texts(["hello", "", "world"], "en") == "hello world"


def test_detector_keeps_the_thread_setting():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        longform.VoiceActivity().regions(np.zeros(SR, np.float32))
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
