#!/usr/bin/env bash
# Data preparation of mini_synth: generate parallel sentences in five languages, synthesise them
# with espeak-ng at 16 kHz and write Kaldi data dirs (see local/make_corpus.py for the layout).
#
#   local/data.sh [--fast true | --full true] [--nj 2] [--seed 1] [--num_train 300] ...
set -euo pipefail

nj=2             # parallel synthesis jobs
seed=1           # corpus seed (sentences, speakers)
fast=false       # small preset for the quick run (600 / 20 / 20 sentences, +1500 text-only)
full=false       # large preset (3000 training sentences, +6000 text-only, 48 speakers per language)
langs="en de fr es zh"
num_train=1000   # training sentences, spoken in every language
num_dev=40
num_test=40
num_text_extra=3000  # text-only training sentences (LLM pretraining and text tasks)
num_spk_train=24 # synthetic speakers per language (many voices: the encoder must generalise to new ones)
num_spk_dev=2
num_spk_test=2
data_dir=data
db=downloads/mini_synth   # generated wavs

help_message="Usage: $0 [options]   (options: --fast --nj --seed --langs --num_train --num_dev
  --full --num_test --num_text_extra --num_spk_train --num_spk_dev --num_spk_test --data_dir --db)"

. ./utils/parse_options.sh

if [ $# -ne 0 ]; then
  echo "${help_message}" >&2
  exit 1
fi

if "${fast}" && "${full}"; then
  echo "$0: --fast true and --full true exclude each other" >&2
  exit 1
fi
if "${full}"; then
  num_train=3000; num_text_extra=6000; num_spk_train=48
fi
if "${fast}"; then
  num_train=600; num_dev=20; num_test=20; num_text_extra=1500
  num_spk_train=12; num_spk_dev=1; num_spk_test=2
fi

command -v espeak-ng >/dev/null || { echo "$0: espeak-ng is not installed (apt-get install espeak-ng)" >&2; exit 1; }

python3 local/make_corpus.py \
  --data-dir "${data_dir}" --db "${db}" --seed "${seed}" --langs "${langs}" --nj "${nj}" \
  --num-train "${num_train}" --num-dev "${num_dev}" --num-test "${num_test}" \
  --num-text-extra "${num_text_extra}" --num-spk-train "${num_spk_train}" \
  --num-spk-dev "${num_spk_dev}" --num-spk-test "${num_spk_test}"
