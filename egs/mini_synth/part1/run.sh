#!/usr/bin/env bash
# mini_synth: a synthetic five-language parallel speech corpus (en de fr es zh, espeak-ng) and the
# full PART recipe — PART and both baselines — end to end on a CPU.
#   ./run.sh                      default config, one seed
#   ./run.sh --seeds "1 2 3"      what RESULTS.md reports
#   ./run.sh --fast true          every stage, smaller (the test suite runs this)
#   ./run.sh --full true          more data, longer pretraining and training (conf/full/), the best numbers
set -euo pipefail

fast=false
full=false
langs="en de fr es zh"
. ./path.sh
# --fast and --full are this recipe's own options; everything else goes to part.sh (--stop_stage
# and --seeds are read here too: the error breakdown below follows stage 9).
args=()
stop_stage=100
seeds=1
while [ $# -gt 0 ]; do
  case "$1" in
    --fast) fast=$2; shift 2 ;;
    --full) full=$2; shift 2 ;;
    --stop_stage) stop_stage=$2; args+=("$1" "$2"); shift 2 ;;
    --seeds) seeds=$2; args+=("$1" "$2"); shift 2 ;;
    *) args+=("$1"); shift ;;
  esac
done

# Speech translation test directions: X->en and en->X (the fast preset: X->en and en->zh only).
s2tt_decodes=""
for l in ${langs}; do
  [ "${l}" = en ] && continue
  s2tt_decodes+=" s2tt:test_${l}:en"
  if [ "${fast}" != true ] || [ "${l}" = zh ]; then s2tt_decodes+=" s2tt:test_en:${l}"; fi
done

if [ "${fast}" = true ] && [ "${full}" = true ]; then
  echo "$0: --fast true and --full true exclude each other" >&2; exit 2
elif [ "${fast}" = true ]; then
  conf=conf/fast
  data_opts="--fast true --nj 2"
elif [ "${full}" = true ]; then
  conf=conf/full
  data_opts="--full true --nj 2"
else
  conf=conf
  data_opts="--nj 2"
fi
# The preset's goals, listed in RESULTS.md with whether they were reached (${conf}/targets; the fast
# preset has none).
targets=""
[ -f "${conf}/targets" ] && targets=$(grep -v "^#" "${conf}/targets" || true)

./part.sh \
  --local_data_opts "${data_opts}" \
  --prepare_models_opts "--conf ${conf} --nj 2" \
  --train_sets "$(printf 'train_%s text_train_%s ' ${langs} ${langs})" \
  --dev_sets "$(printf 'dev_%s ' ${langs})" \
  --test_sets "$(printf 'test_%s ' ${langs})" \
  --test_tasks "asr lid" --test_decodes "${s2tt_decodes}" \
  --schedules "part frozen_llm joint_lora" \
  --schedule_dir "${conf}" \
  --model_config conf/model.yaml \
  --features dumped --n_mels 80 --nj 2 \
  --train_nj 3 --train_args "--threads 1" \
  --results_compare "part/stage3_text:frozen_llm/frozen_all part/stage3_text:joint_lora/joint_lora" \
  --results_targets "${targets}" \
  --output_controls true --longform_sets "$(printf 'test_%s ' ${langs})" --longform_args "--max-segment 8" \
  --demo_set test_en --demo_lang en \
  --analysis_sets "$(printf 'test_%s ' ${langs})" \
  "${args[@]}"

# Where the error comes from (encoder CTC alone, LLM on text alone, the systems), first seed.
if [ "${stop_stage}" -ge 9 ]; then
  seed=${seeds%% *}
  python3 -m partlib.bin.error_breakdown --encoder exp/pretrained/encoder --llm exp/pretrained/llm \
    --data $(printf 'dump/whisper_mel80/test_%s ' ${langs}) \
    --system "part=exp/part_seed${seed}/stage3_text" --system "frozen_llm=exp/frozen_llm_seed${seed}/frozen_all" \
    --system "joint_lora=exp/joint_lora_seed${seed}/joint_lora" --out exp/error_breakdown > /dev/null
  echo "$0: exp/RESULTS.md, exp/error_breakdown.md and exp/curves/curves.md written"
fi
