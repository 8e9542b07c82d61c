#!/usr/bin/env bash
# Usage: utils/copy_data_dir.sh [--utt-prefix P] [--spk-prefix P] [--utt-suffix S] <src> <dst>
# Runs partlib's implementation with the repository's Python (${PYTHON:-python3}); works through
# a recipe's utils -> ../../../utils link.
root=$(cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/.." && pwd)
PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}" exec "${PYTHON:-python3}" -m partlib.bin.datadir copy "$@"
