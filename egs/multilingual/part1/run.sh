#!/usr/bin/env bash
# The paper's combined setup (README.md): ASR on Common Voice 15 + FLEURS + WenetSpeech, speech
# translation on CoVoST 2, text tasks on CoVoST 2 / FLEURS text pairs, with contamination removed;
# PART and its two baselines at paper scale (conf/model.yaml: PART-8B: Whisper-large-v3 + Qwen2.5-7B).
#   corpus paths: db.sh    languages and directions: conf/data.conf    jobs: cmd.sh (+ conf/slurm.conf)
#   ./run.sh                              every stage, the three schedules, seed 1
#   ./run.sh --stage 5 --seeds "1 2 3"    training onwards with three seeds
#   ./run.sh --stage 5 --schedules "part baseline_2stage joint_lora part_3stage ablation_1 ablation_2"
#                                         + the paper's ablations (ablation 3 = baseline_2stage)
# Options of egs/TEMPLATE/part1/part.sh can be added and override the settings below (--help).
set -euo pipefail

case " $* " in *" --help "* | *" -h "*) exec ./part.sh --help ;; esac

# Stage 1 runs first, on its own (it is skipped once data/.done exists): it prepares every corpus,
# removes the contamination and lists the data sets of each role in data/sets/<split>_<task>, which
# configure the later stages. (part.sh wants some --train_sets; stage 1 does not read it.)
./part.sh --stage 1 --stop_stage 1 --train_sets data/sets --local_data_opts "--config conf/data.conf"

sets() {  # sets <list>...: the data sets named in data/sets/<list>, on one line
  local f
  for f in "$@"; do tr '\n' ' ' < "data/sets/${f}"; done
}
decodes=""  # asr on the ASR test sets; s2tt "set:tgt", the target from each set's text.<tgt>
for s in $(sets test_asr); do decodes+=" asr:${s}"; done
for s in $(sets test_s2tt); do
  for f in "data/${s}"/text.*; do
    if [ -f "${f}" ]; then decodes+=" s2tt:${s}:${f##*.}"; fi
  done
done
fleurs_tests=""  # FLEURS sentences are parallel across languages (utt2sent): representation analysis
for s in $(sets test_asr); do
  if [[ ${s} == fleurs_* ]]; then fleurs_tests+=" ${s}"; fi
done

./part.sh \
  --local_data_opts "--config conf/data.conf" \
  --train_sets "$(sets train_asr train_s2tt train_t2tt)" \
  --dev_sets "$(sets dev_asr dev_s2tt)" \
  --test_sets "$(sets test_asr test_s2tt)" \
  --test_tasks "" --test_decodes "${decodes}" \
  --features dumped --n_mels 128 \
  --normalizer whisper --results_args "--paper part" \
  --schedules "part baseline_2stage joint_lora" \
  --results_compare "part/s4_text:baseline_2stage/s2_enc_all part/s4_text:joint_lora/joint_lora" \
  --analysis_sets "${fleurs_tests}" \
  "$@"
