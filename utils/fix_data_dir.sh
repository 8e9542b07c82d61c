#!/usr/bin/env bash
# Usage: utils/fix_data_dir.sh <data-dir>
# Keeps utterances present in every file, regenerates spk2utt, prunes speaker and recording files;
# the original files are kept in <data-dir>/.backup/.
# Runs partlib's implementation with the repository's Python (${PYTHON:-python3}); works through
# a recipe's utils -> ../../../utils link.
root=$(cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/.." && pwd)
PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}" exec "${PYTHON:-python3}" -m partlib.bin.datadir fix "$@"
