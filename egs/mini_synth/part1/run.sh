#!/usr/bin/env bash
# mini_synth: a synthetic five-language parallel speech corpus (en de fr es zh, espeak-ng) and the
# full PART recipe — PART and the paper's Baseline-2stage — end to end on a CPU.
#   ./run.sh                      default config, one seed
#   ./run.sh --seeds "1 2 3"      what RESULTS.md reports
#   ./run.sh --fast true          every stage, smaller (the test suite runs this)
#   ./run.sh --full true          more data, longer pretraining and training (conf/full/), the best numbers
#   ./run.sh --ablations true     also the paper's cumulative ablation chain (part_3stage, ablation_1,
#                                 ablation_2; ablation 3 is baseline_2stage)
#   ./run.sh --schedules "part baseline_2stage joint_lora"   the systems to train (first: PART)
set -euo pipefail

fast=false
full=false
ablations=false
# PART and the paper's Baseline-2stage (PART first: controls, export and demo use the first); the
# joint-LoRA baseline, not in the paper, with --schedules "part baseline_2stage joint_lora" (a third
# training on two cores would take the default past its 25-minute goal).
schedules="part baseline_2stage"
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
    --ablations) ablations=$2; shift 2 ;;
    --schedules) schedules=$2; shift 2 ;;
    --stop_stage) stop_stage=$2; args+=("$1" "$2"); shift 2 ;;
    --seeds) seeds=$2; args+=("$1" "$2"); shift 2 ;;
    --help | -h) exec ./part.sh --help ;;  # part.sh's options (this recipe's own decodes included)
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
[ "${ablations}" = true ] && schedules+=" part_3stage ablation_1 ablation_2"
# Each system's last stage; RESULTS.md compares the first system's with every other one's.
declare -A last
for s in ${schedules}; do last[${s}]=$(python3 -m partlib.bin.exp stages "${conf}/schedule_${s}.yaml" | tail -n 1); done
first=${schedules%% *}
compare=""
for s in ${schedules}; do
  [ "${s}" = "${first}" ] || compare+=" ${first}/${last[${first}]}:${s}/${last[${s}]}"
done
# The paper's cumulative ablation chain, when one of its steps is trained: each step's change against
# PART (part_3stage, the paper's PART, when it runs; else the first system), the paper's deltas beside.
# Ablation 3 is Baseline-2stage, so baseline_2stage stands for it; "-" marks a step not run.
results_args=""
if [[ " ${schedules} " =~ " ablation_"[123]" " ]]; then
  ref=${first}; [[ " ${schedules} " == *" part_3stage "* ]] && ref=part_3stage
  chain=""
  for k in 1 2 3; do
    s=ablation_${k}
    [ "${k}" = 3 ] && [[ " ${schedules} " != *" ${s} "* ]] && s=baseline_2stage
    if [[ " ${schedules} " == *" ${s} "* ]]; then chain+=",${s}/${last[${s}]}"; else chain+=",-"; fi
  done
  results_args="--paper part --paper-columns ASR=asr:test_*,BLEU=s2tt:test_*:en --ablation ${ref}/${last[${ref}]}=${chain#,}"
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
  --schedules "${schedules}" \
  --schedule_dir "${conf}" \
  --model_config conf/model.yaml \
  --features dumped --n_mels 80 --nj 2 \
  --train_nj 3 --train_args "--threads 1" \
  --results_compare "${compare# }" \
  --results_targets "${targets}" --results_args "${results_args}" \
  --output_controls true --longform_sets "$(printf 'test_%s ' ${langs})" --longform_args "--max-segment 8" \
  --demo_set test_en --demo_lang en \
  --analysis_sets "$(printf 'test_%s ' ${langs})" \
  "${args[@]}"

# Where the error comes from (encoder CTC alone, LLM on text alone, the systems), first seed.
if [ "${stop_stage}" -ge 9 ]; then
  seed=${seeds%% *}
  systems=()
  for s in ${schedules}; do systems+=(--system "${s}=exp/${s}_seed${seed}/${last[${s}]}"); done
  python3 -m partlib.bin.error_breakdown --encoder exp/pretrained/encoder --llm exp/pretrained/llm \
    --data $(printf 'dump/whisper_mel80/test_%s ' ${langs}) "${systems[@]}" --out exp/error_breakdown > /dev/null
  echo "$0: exp/RESULTS.md, exp/error_breakdown.md and exp/curves/curves.md written"
fi
