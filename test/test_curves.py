"""Training curves: tensorboard scalars of each stage on one cumulative step axis, plotted."""
from __future__ import annotations

import json

import pytest
import yaml
from torch.utils.tensorboard import SummaryWriter

from partlib.analysis.curves import training_curves
from partlib.bin import plot_curves
from partlib.common import DataError


@pytest.fixture
def exp(tmp_path):
    e = tmp_path / "part_seed1"
    stages = [{"name": "stage1_within", "max_steps": 100, "activation": []},
              {"name": "stage2_cross", "max_steps": 60,
               "activation": [{"step": 0, "layers": {"top_frac": 0.5}}, {"step": 30, "layers": "all"}]}]
    e.mkdir()
    (e / "config.yaml").write_text(yaml.safe_dump({"schedule": {"stages": stages}, "model": {}}), encoding="utf-8")
    for name, n, dev in (("stage1_within", 100, {"loss": [(50, 2.0), (100, 1.5)], "wer": [(50, 80.0), (100, 60.0)]}),
                         ("stage2_cross", 60, {"loss": [(60, 1.2)], "bleu": [(60, 12.5)], "wer": [(60, 50.0)]})):
        w = SummaryWriter(str(e / "tensorboard" / name))
        for step in range(10, n + 1, 10):
            w.add_scalar("train/loss", 3.0 - step / 100, step)
        for metric, pts in dev.items():
            for step, v in pts:
                w.add_scalar(f"dev/{metric}", v, step)
        w.close()
    return e


def test_curves_are_cumulative_over_stages(exp):
    c = training_curves(exp)
    s1, s2 = c["stages"]
    assert c["total_steps"] == 160 and (s1["start"], s1["end"], s2["start"], s2["end"]) == (0, 100, 100, 160)
    assert s1["dev"]["loss"] == [[50, 2.0], [100, 1.5]] and s2["dev"]["loss"] == [[160, pytest.approx(1.2)]]
    assert s2["train_loss"][0] == [110, pytest.approx(2.9)] and len(s2["train_loss"]) == 6
    assert s2["activations"] == [[100, {"top_frac": 0.5}], [130, "all"]]
    assert s1["end_dev"] == {"loss": 1.5, "wer": 60.0} and s2["end_dev"]["bleu"] == pytest.approx(12.5)


def test_cli_writes_plot_json_and_index(exp, tmp_path):
    out = tmp_path / "curves"
    assert plot_curves.main([str(exp), "--out-dir", str(out)]) == 0
    assert (out / "part_seed1.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads((out / "part_seed1.json").read_text())["total_steps"] == 160
    md = (out / "curves.md").read_text()
    assert "| part_seed1 | stage1_within | 0-100 | 1.500 | 60.00 | - | - |" in md
    assert "| part_seed1 | stage2_cross | 100-160 | 1.200 | 50.00 | 12.50 | - |" in md
    assert "![part_seed1](part_seed1.png)" in md


def test_untrained_experiment_is_a_clear_error(tmp_path):
    with pytest.raises(DataError, match="has not been trained"):
        training_curves(tmp_path)
    assert plot_curves.main([str(tmp_path), "--out-dir", str(tmp_path / "c")]) == 1
    assert not (tmp_path / "c").exists()
