"""Where pretrained weights and tokenizers come from — the one rule every loader follows.

A name in a model config (``encoder.path``, ``llm.path``, ``llm.tokenizer``) or on a command line
(``--model-dir``) is a local directory when it exists; otherwise it must look like a Hugging Face
hub id (``name`` or ``org/name``) and is handed to ``from_pretrained``, which reads the hub cache
(or downloads when online). Anything else — ``/data/whisper``, ``./models/llm``, ``exp/a/b`` — is a
local directory that is not there, and fails before transformers is asked.
"""
from __future__ import annotations

import os
import re
from typing import Callable, Optional, TypeVar

from partlib.common import ConfigError, PathLike

T = TypeVar("T")

# Hub repo ids (huggingface_hub.utils.validate_repo_id): one or two parts of word characters, '.'
# and '-', each starting and ending with a word character; no '--' or '..'; at most 96 characters.
_HUB_PART = r"\w(?:[\w.-]*\w)?"
_HUB_ID_RE = re.compile(rf"{_HUB_PART}(?:/{_HUB_PART})?")
_HUB_ID_MAX = 96


def looks_like_hub_id(name: str) -> bool:
    """Whether ``name`` has the form of a hub repo id: ``name`` or ``org/name``."""
    return (len(name) <= _HUB_ID_MAX and _HUB_ID_RE.fullmatch(name) is not None
            and "--" not in name and ".." not in name)


def _where(key: Optional[str]) -> str:
    return f"{key}: " if key else ""


def _also(name: str, base_dir: Optional[PathLike]) -> str:
    return f" (nor under {base_dir})" if base_dir is not None and not os.path.isabs(name) else ""


def missing_dir(name: PathLike, key: Optional[str], base_dir: Optional[PathLike] = None) -> ConfigError:
    """The error of a model directory ``name`` (config key or option ``key``) that does not exist;
    ``base_dir``: where relative names were looked up first."""
    return ConfigError(f"{_where(key)}model directory {name} does not exist{_also(str(name), base_dir)}")


def require(name: Optional[PathLike], key: Optional[str], base_dir: Optional[PathLike] = None) -> None:
    """Raise :func:`missing_dir` unless ``name`` (None: nothing to check) exists or looks like a hub
    id: the check of :func:`load_pretrained` without loading anything."""
    if name is not None and not os.path.exists(str(name)) and not looks_like_hub_id(str(name)):
        raise missing_dir(name, key, base_dir)


def load_pretrained(load: Callable[[str], T], name: PathLike, key: Optional[str],
                    base_dir: Optional[PathLike] = None) -> T:
    """``load(name)`` (a ``from_pretrained``) for the local directory or hub id ``name``, given by the
    config key ``key``.

    A name that neither exists nor looks like a hub id is a :class:`ConfigError` "model directory
    ... does not exist" (``base_dir``: where relative names were looked up first); what
    transformers raises for a hub id it cannot get (offline and not in the cache: ``OSError``,
    sometimes ``ValueError``) or for a local directory without the files it needs becomes one too.
    """
    name = str(name)
    require(name, key, base_dir)
    local = os.path.exists(name)
    try:
        return load(name)
    except (OSError, ValueError) as e:
        lines = str(e).strip().splitlines()
        reason = lines[0] if lines else type(e).__name__
        if local:
            raise ConfigError(f"{_where(key)}cannot load {name}: {reason}") from None
        raise ConfigError(f"{_where(key)}'{name}' is neither a local directory{_also(name, base_dir)} nor in the "
                          f"Hugging Face cache (a hub id needs the network or a cached copy: {reason})") from None
