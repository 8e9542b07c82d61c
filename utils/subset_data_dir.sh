#!/usr/bin/env bash
# Usage: utils/subset_data_dir.sh [--first|--last] <src> <N> <dst>
#        utils/subset_data_dir.sh --first N|--last N <src> <dst>
#        utils/subset_data_dir.sh --utt-list <file> | --spk-list <file> <src> <dst>
#        utils/subset_data_dir.sh [--seed S] <src> <N> <dst>     (N random utterances)
# Runs partlib's implementation with the repository's Python (${PYTHON:-python3}); works through
# a recipe's utils -> ../../../utils link.
root=$(cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/.." && pwd)
PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}" exec "${PYTHON:-python3}" -m partlib.bin.datadir subset "$@"
