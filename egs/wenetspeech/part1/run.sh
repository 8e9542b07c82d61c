#!/usr/bin/env bash
# WenetSpeech: Mandarin ASR (CER) on TEST_NET and TEST_MEETING with PART and its two baselines at
# paper scale (conf/model.yaml: PART-8B: Whisper-large-v3 encoder + Qwen2.5-7B). Stage 1 also
# writes every segment's audio once into arks under dump/audio (local/data.sh).
#   corpus path: db.sh (WENETSPEECH)    training subset: conf/data.conf    jobs: cmd.sh (+ conf/slurm.conf)
#   ./run.sh                              every stage, the three schedules, seed 1
#   ./run.sh --stage 5 --seeds "1 2 3"    training onwards with three seeds
# Options of egs/TEMPLATE/part1/part.sh can be added and override the settings below (--help).
set -euo pipefail

# shellcheck disable=SC1091
. conf/data.conf  # train_subset
./part.sh \
  --local_data_opts "--config conf/data.conf" \
  --train_sets "wenetspeech_train_$(echo "${train_subset}" | tr 'A-Z' 'a-z')" \
  --dev_sets wenetspeech_dev \
  --test_sets "wenetspeech_test_net wenetspeech_test_meeting" \
  --features dumped --n_mels 128 \
  --normalizer whisper \
  --schedules "part baseline_2stage joint_lora" \
  --results_compare "part/s4_text:baseline_2stage/s2_enc_all part/s4_text:joint_lora/joint_lora" \
  "$@"
