#!/usr/bin/env bash
# Common Voice 15.0: multilingual ASR (WER; CER for zh ja ko yue) with PART and its two
# baselines at paper scale (conf/model.yaml: PART-8B: Whisper-large-v3 encoder + Qwen2.5-7B).
#   corpus path: db.sh (CV15)    locales: conf/data.conf    jobs: cmd.sh (+ conf/slurm.conf)
#   ./run.sh                              every stage, the three schedules, seed 1
#   ./run.sh --stage 5 --seeds "1 2 3"    training onwards with three seeds
# Options of egs/TEMPLATE/part1/part.sh can be added and override the settings below (--help).
set -euo pipefail

# shellcheck disable=SC1091
. conf/data.conf  # locales
# shellcheck disable=SC2086
./part.sh \
  --local_data_opts "--config conf/data.conf" \
  --train_sets "$(printf 'cv15_%s_train ' ${locales})" \
  --dev_sets "$(printf 'cv15_%s_dev ' ${locales})" \
  --test_sets "$(printf 'cv15_%s_test ' ${locales})" \
  --features dumped --n_mels 128 \
  --normalizer whisper --results_args "--paper part" \
  --schedules "part baseline_2stage joint_lora" \
  --results_compare "part/s4_text:baseline_2stage/s2_enc_all part/s4_text:joint_lora/joint_lora" \
  "$@"
