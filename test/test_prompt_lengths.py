"""The example's LLM length (``Example.n_tokens``, what the dynamic batcher bounds) is exactly the
padded length of the real training batches the loader tokenises, for every task of the registry
(streamed examples are made by the same ``finish_examples``)."""
import pytest
import torch

from partlib import tasks
from partlib.data.batching import collate
from partlib.data.datadir import DataDir
from partlib.data.examples import TaskSpec, build_examples
from partlib.data.streaming import SpeechLengths
from partlib.features.source import FeatureSource
from partlib.models.builders import tiny_model_config
from partlib.models.prompt import PromptLengths
from partlib.models.speech_llm import SpeechLLM
from partlib.train.loader import PromptTokens
from train_fixtures import audio_data


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("lengths")
    audio_data(root / "data", n_train=5, n_dev=1)
    model = SpeechLLM.from_config(tiny_model_config(root / "m", lora=False))
    spans = model.adapter.output_lengths(model.encoder.output_lengths(torch.arange(model.encoder.max_frames + 1)))
    dirs = [DataDir.load(root / "data" / f"train_{lang}") for lang in ("en", "de")]
    return model, dirs, PromptTokens(model.prompt, SpeechLengths(spans.numpy()))


@pytest.mark.parametrize("task", tasks.names())
def test_example_length_is_the_padded_length_of_its_batch(setup, task):
    model, dirs, tokens = setup
    features = FeatureSource(dirs, model.n_mels, "on_the_fly")
    exs = []
    for i, d in enumerate(dirs):
        exs += build_examples(TaskSpec(task, 1.0, ["x"]), [d], PromptLengths(model.prompt),
                              model.speech_embed_length, dir_offset=i)
    assert len({e.src_lang for e in exs}) == 2

    def padded(batch_examples):
        feats = features.load([(e.dir_index, e.utt) for e in batch_examples]) if tasks.get(task).speech else None
        return tokens(collate(batch_examples, feats))["input_ids"].shape[1]

    for e in exs:  # one example alone: its own length, nothing padded
        assert padded([e]) == e.n_tokens, e.key
    assert padded(exs) == max(e.n_tokens for e in exs)
    # the lengths differ between examples (targets, languages), so the check above is not vacuous
    assert len({e.n_tokens for e in exs}) > 1


def test_speech_prompts_are_tokenised_once_per_language_pair(setup):
    model, dirs, _ = setup
    lengths = PromptLengths(model.prompt)
    rows = [("en", "de", None, "ein Satz"), ("en", "de", None, "noch ein Satz"), ("de", "en", None, "a sentence")]
    out = lengths("s2tt", rows)
    assert sorted(lengths._prompts) == [("s2tt", "de", "en", None), ("s2tt", "en", "de", None)]
    built = [model.prompt.build("s2tt", s, t, n_speech=0, target=target) for s, t, _, target in rows]
    assert out == [len(b.prefix) + len(b.suffix) + len(b.target) for b in built]


def test_the_planner_counts_the_longest_prompt_of_the_stages_languages_and_directions(setup):
    from partlib.train.memory import longest_prompt
    from partlib.train.schedule import parse_schedule

    model, _, _ = setup
    lengths = PromptLengths(model.prompt)

    def stage(**spec):
        return parse_schedule({"stages": [{"name": "s", "max_steps": 1,
                                           "tasks": [{"task": "s2tt", "data": ["x"], **spec}]}]}).stages[0]

    pair = {(s, t): lengths.prompt("s2tt", s, t) + 1 for s, t in (("en", "de"), ("de", "en"), ("en", "zh"))}
    assert longest_prompt(stage(directions=["en-de"]), model, "s2tt") == pair[("en", "de")]
    assert longest_prompt(stage(directions=["en-de", "de-en"]), model, "s2tt") == max(pair[("en", "de")],
                                                                                       pair[("de", "en")])
    assert longest_prompt(stage(langs=["en"], tgt_langs=["de", "zh"]), model, "s2tt") == max(pair[("en", "de")],
                                                                                              pair[("en", "zh")])
    # no languages named: every language of the table, at least as long as any named pair
    assert longest_prompt(stage(), model, "s2tt") >= max(pair.values())
