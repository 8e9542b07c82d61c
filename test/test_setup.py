"""The environment tools/setup.sh makes: the CPU torch it chose survived the other requirements
(lhotse and silero-vad among them), and nothing pulls in torchaudio (its wheels need another torch)."""
import importlib.metadata
import subprocess
import sys

import torch


def test_torch_build_matches_the_machine():
    if not torch.cuda.is_available():
        assert torch.version.cuda is None, f"a CUDA torch ({torch.__version__}) on a machine without a GPU"


def test_no_torchaudio_installed_or_imported():
    try:
        importlib.metadata.version("torchaudio")
        installed = True
    except importlib.metadata.PackageNotFoundError:
        installed = False
    assert not installed, "torchaudio is installed: it is an optional extra (pip install -e .[torchaudio])"
    # the code paths that use silero-vad (and everything else partlib imports) load no torchaudio
    code = ("import sys, numpy as np\n"
            "import partlib.infer.transcribe, partlib.infer.longform as lf, partlib.bin.decode_longform\n"
            "import partlib.data.shards, partlib.data.streaming, partlib.bin.export_shards, lhotse\n"
            "lf.VoiceActivity().regions(np.zeros(16000, np.float32))\n"
            "assert 'torchaudio' not in sys.modules, sorted(m for m in sys.modules if 'audio' in m)\n")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-2000:]
