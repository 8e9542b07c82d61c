#!/usr/bin/env bash
# Usage: utils/split_data.sh [--per-utt] <data-dir> <N>
# Writes <data-dir>/split<N>/1..N (by speaker) or <data-dir>/split<N>utt/1..N with --per-utt.
# Runs partlib's implementation with the repository's Python (${PYTHON:-python3}); works through
# a recipe's utils -> ../../../utils link.
root=$(cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/.." && pwd)
PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}" exec "${PYTHON:-python3}" -m partlib.bin.datadir split "$@"
