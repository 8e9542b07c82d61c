#!/usr/bin/env bash
# CoVoST 2: speech translation X->en (en->X optional; BLEU per direction) and source-language ASR, with
# PART and its two baselines at paper scale (conf/model.yaml: Whisper-large-v3 encoder +
# Qwen2.5-7B, PART-8B). Text tasks train on the transcript/translation pairs (<set>_text dirs).
#   corpus paths: db.sh (COVOST2, CV4)    directions: conf/data.conf    jobs: cmd.sh (+ conf/slurm.conf)
#   ./run.sh                              every stage, the three schedules, seed 1
#   ./run.sh --stage 5 --seeds "1 2 3"    training onwards with three seeds
#   ./run.sh --stage 5 --schedules "part baseline_2stage joint_lora part_3stage ablation_1 ablation_2"
#                                         + the paper's ablations (ablation 3 = baseline_2stage)
# Options of egs/TEMPLATE/part1/part.sh can be added and override the settings below (--help).
set -euo pipefail

# shellcheck disable=SC1091
. ./path.sh       # the environment's python (language-code table below)
# shellcheck disable=SC1091
. conf/data.conf  # directions
# ASR is decoded once per source language (en->X directions share their English audio); s2tt
# decodes "set:tgt" with the canonical code of each direction's target.
# shellcheck disable=SC2086
decodes=$(python3 - ${directions} <<'PYEOF'
import sys
from partlib.data.langs import canonical
directions = sys.argv[1:]
first = {}
for d in directions:
    first.setdefault(d.split("_", 1)[0], d)
print(" ".join([f"asr:covost2_{d}_test" for d in first.values()]
               + [f"s2tt:covost2_{d}_test:{canonical(d.split('_', 1)[1])}" for d in directions]))
PYEOF
)
# shellcheck disable=SC2086
./part.sh \
  --local_data_opts "--config conf/data.conf" \
  --train_sets "$(printf 'covost2_%s_train ' ${directions}) $(printf 'covost2_%s_train_text ' ${directions})" \
  --dev_sets "$(printf 'covost2_%s_dev ' ${directions})" \
  --test_sets "$(printf 'covost2_%s_test ' ${directions})" \
  --test_tasks "" --test_decodes "${decodes}" \
  --features dumped --n_mels 128 \
  --normalizer whisper --results_args "--paper part" \
  --schedules "part baseline_2stage joint_lora" \
  --results_compare "part/s4_text:baseline_2stage/s2_enc_all part/s4_text:joint_lora/joint_lora" \
  "$@"
