#!/usr/bin/env bash
# Usage: utils/combine_data.sh <dest-dir> <src-dir1> <src-dir2> ...
# Runs partlib's implementation with the repository's Python (${PYTHON:-python3}); works through
# a recipe's utils -> ../../../utils link.
root=$(cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/.." && pwd)
PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}" exec "${PYTHON:-python3}" -m partlib.bin.datadir combine "$@"
