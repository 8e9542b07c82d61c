"""Packaging for partlib, the library behind the PART recipes."""
from setuptools import find_packages, setup

setup(
    name="partlib",
    version="0.1.0",
    description=(
        "Recipes and library for PART (Progressive Alignment Representation Training) "
        "of multilingual speech-to-text Speech LLMs"
    ),
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=find_packages(include=["partlib", "partlib.*"]),
    package_data={"partlib": ["models/configs/*.json", "models/configs/*.yaml", "scoring/published/*.yaml"]},
    install_requires=[
        # Never pin torch with ==: it would replace a user's CUDA build.
        "torch>=2.1",
        "transformers>=4.45",
        "peft>=0.12",
        "sentencepiece",
        "tokenizers>=0.19",
        "safetensors",
        "kaldiio>=2.18",
        "soundfile>=0.12",
        "soxr>=0.3",
        "numpy",
        "pyyaml",
        "jiwer>=3.0",
        "sacrebleu>=2.3",
        "whisper-normalizer",
        "langid",
        "tqdm",
        "tensorboard",
        "matplotlib",
        "scikit-learn",
        # voice activity for long recordings (partlib.infer.longform); its wheel carries the model and
        # needs only torch (its torchaudio extras are not wanted: audio is read with soundfile)
        "silero-vad==6.2.3",
        # Lhotse Shar shards for streaming training (partlib.data.shards); lhotse imports urllib3
        # without declaring it. Not lhotse[webdataset]: it pins an old webdataset.
        "lhotse==1.33.0",
        "urllib3",
    ],
    extras_require={
        "dev": ["pytest>=7", "pytest-timeout"],
        "ja": ["mecab-python3", "ipadic"],
        "torchaudio": ["torchaudio"],
    },
    classifiers=[
        "Programming Language :: Python :: 3",
        "Topic :: Scientific/Engineering :: Artificial Intelligence",
    ],
)
