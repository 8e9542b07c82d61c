#!/usr/bin/env bash
# Usage: utils/validate_data_dir.sh [--no-feats] [--no-text] [--no-wav] [--non-print] [--no-spk-sort] <data-dir>
# Accepts exactly the data dirs Kaldi's validator accepts (and exits non-zero on a malformed utt2spk).
# Runs partlib's implementation with the repository's Python (${PYTHON:-python3}); works through
# a recipe's utils -> ../../../utils link.
root=$(cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/.." && pwd)
PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}" exec "${PYTHON:-python3}" -m partlib.bin.datadir validate "$@"
