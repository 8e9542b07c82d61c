#!/usr/bin/env bash
# The generic PART recipe: every corpus's run.sh sets a few variables and calls this script.
#
#   1 data preparation (local/data.sh)       -> data/<set>
#   2 validation, utt2dur, length filtering   -> dump/raw/<set>
#   3 features (dumped log-mel, or none: on the fly) -> dump/whisper_mel<N>/<set>;
#     with --features shards: the training sets exported to Lhotse Shar -> dump/raw/<set>/shar
#   4 tokenizer / LLM / encoder preparation   (local/prepare_models.sh, when the recipe has one)
#   5 training: every schedule x seed, all alignment stages -> exp/<schedule>_seed<k>/<stage>/model
#   6 decoding: every exported stage model x test set x task (+ the recipe's own decodes, below)
#   7 scoring   8 representation analysis   9 RESULTS.md and training curves (exp/curves)
#  10 export: the first schedule's last stage of each seed -> exp/model_<schedule>_seed<k>, a
#     self-contained model folder with its model card and scores (python -m partlib.bin.export)
#  11 demo: a long recording joined from a test set, transcribed by that folder -> exp/demo/*.srt
#
# Stages whose outputs are complete are skipped on re-run; training resumes where it stopped.
#
# A recipe adds decodes of its own (controls, long-form, ...) with local/decode_extra.sh, sourced
# before the options are parsed (its variables become options of that recipe). It may define
#   decode_extra <schedule> <seed> <stage> <model>   called in stage 6 after each schedule x seed has
#                                                    been decoded (<stage>, <model>: its last stage)
#   results_extra                                    called in stage 9: adds experiment dirs to exps
#                                                    and options of partlib.bin.results to copts
# and use decode_all, log and the variables of this script (egs/README.md).
set -euo pipefail

log() {
  local fname=${BASH_SOURCE[1]##*/}
  echo -e "$(date '+%Y-%m-%dT%H:%M:%S') (${fname}:${BASH_LINENO[0]}:${FUNCNAME[1]}) $*" >&2
}
min() { [ "$1" -lt "$2" ] && echo "$1" || echo "$2"; }
SECONDS=0

# General options
stage=1                # first stage to run
stop_stage=100         # last stage to run
nj=4                   # parallel jobs for data preparation and feature extraction
decode_nj=1            # parallel decoding jobs per test set
datadir=data           # Kaldi data dirs written by stage 1
dumpdir=dump           # filtered data dirs and features
expdir=exp             # experiments
python=python3         # the Python of the environment (path.sh activates it)

# Stage 1
local_data_opts=""     # options passed to local/data.sh

# Data sets (names of dirs under $datadir; text-only dirs are allowed in train_sets)
train_sets=""
dev_sets=""
test_sets=""

# Stage 2
min_dur=0.1            # seconds
max_dur=30             # seconds: Whisper's positional table ends at 30 s
max_text_chars=400     # longest transcript/translation kept in training data

# Stage 3
features=dumped        # dumped: log-mel in ark/scp (stage 3); on_the_fly: computed from audio while
                       # training and decoding; auto: stage 3 dumps nothing, later stages use the
                       # feats.scp of a data dir that has one (put there by hand) and audio elsewhere;
                       # shards: training sets exported to Lhotse Shar shards and streamed (features
                       # computed in the loader's workers), dev/test sets as on_the_fly
n_mels=80              # 80 for Whisper <= v2, 128 for large-v3
shard_utts=20000       # --features shards: utterances per shard (at most; recordings are kept whole)
shard_mb=1024          # --features shards: estimated megabytes per shard (at most)

# Stage 4
prepare_models_opts="" # options passed to local/prepare_models.sh

# Stage 5
model_config=conf/model.yaml
schedule_dir=conf      # where schedule_<name>.yaml are
schedules="part"       # ${schedule_dir}/schedule_<name>.yaml for each name
seeds="1"
train_args=""          # extra options of partlib.bin.train (e.g. --set stages.0.max_steps=100)
num_workers=0
train_nj=1             # trainings (schedule x seed) run at once; on a small CPU each with fewer threads
train_launcher=""      # replaces ${python} for training, e.g. "torchrun --standalone --nproc_per_node 8"
ngpu=0                 # GPUs per training (the launcher's processes): > 0 runs the memory planner
                       # (python -m partlib.bin.plan) first and stops when a stage cannot fit
gpu_mem=80             # GiB per GPU, for that check
plan_args=""           # extra options of partlib.bin.plan (e.g. --grad-ckpt off --utt-seconds 15)

# Stage 6
test_tasks="asr"       # within-language tasks decoded on every test set (python -m partlib.bin.tasks list)
test_decodes=""        # further decodes "<task>:<set>[:<tgt>]", e.g. "s2tt:test_de:en s2tt:test_en:de"
decode_args=""         # extra options of partlib.bin.decode_sets (e.g. --beam 4 --max-new-tokens 64)

# Stage 7
normalizer=part-basic-v1  # text normalisers before WER/CER: part-basic-v1 (ours: keeps bracketed text) or
                          # whisper (Whisper's English and basic normalisers, as the PART paper scores);
                          # docs/scoring.md

# Stage 8
analysis_sets=""       # data dirs with utt2sent (parallel utterances) for representation analysis
analysis_args=""

# Stage 9
results_compare=""     # "systemA/stage:systemB/stage" pairs compared with significance in RESULTS.md
results_targets=""     # goals listed in RESULTS.md with whether they were reached (partlib.bin.results --target)
results_args=""        # extra options of partlib.bin.results, e.g. the paper's tables with its published rows:
                       # "--paper part --ablation part_3stage/s3_joint_lora=ablation_1/s3_joint_lora,..."

# Stage 11
demo_set=""            # a test set: its first utterances joined into one long recording (exp/demo/*.wav)
                       # and transcribed by the exported model to subtitles (exp/demo/*.srt)
demo_utts=20           # utterances in the demo recording
demo_lang=""           # its spoken language (empty: the model identifies it)

help_message=$(cat <<EOF
Usage: $0 --train_sets "<sets>" --dev_sets "<sets>" --test_sets "<sets>" [options]
Options (defaults in the script):
  --stage N --stop_stage M   stages to run (1 data, 2 filter, 3 features, 4 models, 5 train,
                             6 decode, 7 score, 8 analysis, 9 RESULTS.md, 10 export, 11 demo)
  --schedules "part baseline_2stage joint_lora"   --seeds "1 2 3"
  --features dumped|on_the_fly|auto|shards   --n_mels 80|128   --nj N   --decode_nj N
  --shard_utts N --shard_mb MB   shard bounds of --features shards
  --model_config FILE   --train_args "..."   --train_nj N (trainings at once)
  --ngpu N --gpu_mem GiB     check that every stage fits on the GPUs before training
  --test_tasks "asr lid"   --test_decodes "s2tt:test_de:en ..."   (what stage 6 decodes)
  --decode_args "..."   --demo_set <set>
  --normalizer part-basic-v1|whisper   text normalisers of WER/CER scoring (stage 7)
EOF
)

. ./path.sh
. ./cmd.sh
if [ -f local/decode_extra.sh ]; then
  # shellcheck disable=SC1091
  . local/decode_extra.sh
fi
. utils/parse_options.sh

[ $# -gt 0 ] && { log "unexpected arguments: $*"; log "${help_message}"; exit 2; }
[ -z "${train_sets}" ] && { log "--train_sets is required"; exit 2; }
all_sets="${train_sets} ${dev_sets} ${test_sets}"
# Stage 6's decodes, "<task>:<set>[:<tgt>]": the test tasks on every test set, then test_decodes;
# checked against the task registry now, before any work.
decodes=""
for t in ${test_tasks}; do for dset in ${test_sets}; do decodes+=" ${t}:${dset}"; done; done
decodes="${decodes# } ${test_decodes}"
# shellcheck disable=SC2086
[ -z "${decodes// /}" ] || ${python} -m partlib.bin.tasks decodes ${decodes} > /dev/null
${python} -m partlib.bin.score_decode_dirs --normalizer "${normalizer}"  # stage 7's option, checked now
case "${features}" in
  dumped) data_root=${dumpdir}/whisper_mel${n_mels} ;;
  on_the_fly | auto | shards) data_root=${dumpdir}/raw ;;
  *) log "--features must be dumped, on_the_fly, auto or shards, not '${features}'"; exit 2 ;;
esac

if [ ${stage} -le 1 ] && [ ${stop_stage} -ge 1 ]; then
  if [ -f "${datadir}/.done" ]; then
    log "Stage 1: ${datadir}/.done exists, skipping data preparation"
  else
    log "Stage 1: data preparation (local/data.sh ${local_data_opts})"
    # shellcheck disable=SC2086
    local/data.sh ${local_data_opts}
    touch "${datadir}/.done"
  fi
fi

if [ ${stage} -le 2 ] && [ ${stop_stage} -ge 2 ]; then
  log "Stage 2: validate, utt2dur, length filtering -> ${dumpdir}/raw"
  mkdir -p "${dumpdir}/raw" "${expdir}/logs"
  for dset in ${all_sets}; do
    src=${datadir}/${dset}
    dst=${dumpdir}/raw/${dset}
    [ -f "${dst}/.done" ] && continue
    opts="--no-feats"
    [ -f "${src}/wav.scp" ] || opts+=" --no-wav"
    utils/validate_data_dir.sh ${opts} "${src}"
    if [[ " ${train_sets} " == *" ${dset} "* ]]; then
      ${python} -m partlib.bin.filter_data --min-dur "${min_dur}" --max-dur "${max_dur}" \
        --max-text-chars "${max_text_chars}" "${src}" "${dst}" 2>&1 | tee "${expdir}/logs/filter_${dset}.log"
    else  # dev/test sets are never filtered: scores must cover every utterance
      ${python} -m partlib.bin.filter_data --min-dur 0 --max-dur 1e9 --max-text-chars 1000000000 \
        "${src}" "${dst}" 2>&1 | tee "${expdir}/logs/filter_${dset}.log"
    fi
    touch "${dst}/.done"
  done
fi

if [ ${stage} -le 3 ] && [ ${stop_stage} -ge 3 ]; then
  if [ "${features}" = dumped ]; then
    log "Stage 3: Whisper log-mel (${n_mels} bins) -> ${data_root}"
    for dset in ${all_sets}; do
      src=${dumpdir}/raw/${dset}
      dst=${data_root}/${dset}
      [ -f "${dst}/.done" ] && continue
      if [ -f "${src}/wav.scp" ]; then
        ${python} -m partlib.bin.extract_feats --feature whisper_mel --num-mel-bins "${n_mels}" \
          --nj "$(min "${nj}" "$(wc -l < "${src}/utt2spk")")" --cmd "${train_cmd}" "${src}" "${dst}"
      else  # text-only dir: nothing to extract
        rm -rf "${dst}"; mkdir -p "$(dirname "${dst}")"; cp -r "${src}" "${dst}"
      fi
      touch "${dst}/.done"
    done
  elif [ "${features}" = shards ]; then
    log "Stage 3: training sets -> Lhotse Shar shards (${data_root}/<set>/shar)"
    for dset in ${train_sets}; do
      src=${data_root}/${dset}
      # a complete export of the current data is kept (the tool checks the manifest against the data)
      ${python} -m partlib.bin.export_shards --shard-utts "${shard_utts}" --shard-mb "${shard_mb}" \
        --nj "$(min "${nj}" "$(wc -l < "${src}/utt2spk")")" --cmd "${train_cmd}" "${src}"
    done
  else
    log "Stage 3: no features dumped (--features ${features})"
  fi
fi

if [ ${stage} -le 4 ] && [ ${stop_stage} -ge 4 ]; then
  if [ -x local/prepare_models.sh ]; then
    log "Stage 4: model preparation (local/prepare_models.sh ${prepare_models_opts})"
    # shellcheck disable=SC2086
    local/prepare_models.sh --data_root "${data_root}" --datadir "${datadir}" --train_sets "${train_sets}" \
      --dev_sets "${dev_sets}" --test_sets "${test_sets}" ${prepare_models_opts}
  else
    log "Stage 4: no local/prepare_models.sh: ${model_config} must point to pretrained models"
  fi
fi

if [ ${stage} -le 5 ] && [ ${stop_stage} -ge 5 ]; then
  if [ "${ngpu}" -gt 0 ]; then
    mkdir -p "${expdir}"
    for sched in ${schedules}; do
      log "Stage 5: memory plan of ${sched} on ${ngpu} GPU(s) x ${gpu_mem} GiB -> ${expdir}/plan_${sched}.txt"
      # shellcheck disable=SC2086
      ${python} -m partlib.bin.plan --schedule "${schedule_dir}/schedule_${sched}.yaml" \
        --model-config "${model_config}" --gpus "${ngpu}" --gpu-mem "${gpu_mem}" --train-args "${train_args}" \
        --output "${expdir}/plan_${sched}.txt" --check ${plan_args} \
        || { log "Stage 5: ${sched} does not fit (see ${expdir}/plan_${sched}.txt)"; exit 1; }
    done
  fi
  failed=()
  for sched in ${schedules}; do
    for seed in ${seeds}; do
      tag=${sched}_seed${seed}
      log "Stage 5: training ${tag} (${schedule_dir}/schedule_${sched}.yaml) -> ${expdir}/${tag}"
      mkdir -p "${expdir}/${tag}"
      rm -f "${expdir}/${tag}/.failed"
      ${python} -m partlib.bin.exp env "${expdir}/${tag}"
      # shellcheck disable=SC2086
      ${cuda_cmd} "${expdir}/${tag}/train.log" \
        ${train_launcher:-${python}} -m partlib.bin.train --schedule "${schedule_dir}/schedule_${sched}.yaml" \
          --model-config "${model_config}" --data-root "${data_root}" --exp-dir "${expdir}/${tag}" \
          --seed "${seed}" --num-workers "${num_workers}" --features "${features}" ${train_args} \
        || touch "${expdir}/${tag}/.failed" &
      # at most train_nj trainings at once
      while [ "$(jobs -rp | wc -l)" -ge "${train_nj}" ]; do wait -n || true; done
    done
  done
  wait
  for sched in ${schedules}; do
    for seed in ${seeds}; do
      [ -f "${expdir}/${sched}_seed${seed}/.failed" ] && failed+=("${expdir}/${sched}_seed${seed}/train.log")
    done
  done
  [ ${#failed[@]} -eq 0 ] || { log "Stage 5: training failed, see ${failed[*]}"; exit 1; }
fi

# Decode one model (every entry of ${decodes}) into <out_root>/decode_<set>[_to_<tgt>]_<task>, the
# model loaded once; with --decode_nj N each set is split into N jobs of ${decode_cmd}.
decode_all() {  # decode_all <model> <out root> <decodes> [decode_sets options]
  local model=$1 out_root=$2 specs=$3; shift 3
  # shellcheck disable=SC2086
  ${decode_cmd} "${out_root}/logs/decode_sets.log" ${python} -m partlib.bin.decode_sets \
    --model-dir "${model}" --data-root "${data_root}" --decodes "${specs}" --features "${features}" \
    --nj "${decode_nj}" --cmd "${decode_cmd}" ${decode_args} "$@" "${out_root}"
}

first_sched=${schedules%% *}
if [ ${stage} -le 6 ] && [ ${stop_stage} -ge 6 ]; then
  for sched in ${schedules}; do
    for seed in ${seeds}; do
      tag=${sched}_seed${seed}
      last_model=""; last_stage=""
      while read -r sname mdir; do
        log "Stage 6: decoding ${tag}/${sname}"
        decode_all "${mdir}" "${expdir}/${tag}/${sname}" "${decodes}"
        last_model=${mdir}; last_stage=${sname}
      done < <(${python} -m partlib.bin.exp models "${expdir}/${tag}")
      [ -n "${last_model}" ] || { log "Stage 6: ${expdir}/${tag} has no exported model (run stage 5)"; exit 1; }
      if declare -F decode_extra > /dev/null; then decode_extra "${sched}" "${seed}" "${last_stage}" "${last_model}"; fi
    done
  done
fi

if [ ${stage} -le 7 ] && [ ${stop_stage} -ge 7 ]; then
  log "Stage 7: scoring"
  dirs=()
  for d in "${expdir}"/*/*/decode_*; do [ -f "${d}/hyp" ] && dirs+=("${d}"); done
  [ ${#dirs[@]} -gt 0 ] && ${python} -m partlib.bin.score_decode_dirs --normalizer "${normalizer}" "${dirs[@]}"
fi

if [ ${stage} -le 8 ] && [ ${stop_stage} -ge 8 ] && [ -n "${analysis_sets}" ]; then
  log "Stage 8: representation analysis"
  for seed in ${seeds}; do
    margs=()
    for sched in ${schedules}; do
      while read -r sname mdir; do margs+=(--model-dir "${sched}/${sname}=${mdir}"); done \
        < <(${python} -m partlib.bin.exp models "${expdir}/${sched}_seed${seed}")
    done
    dargs=()
    for dset in ${analysis_sets}; do dargs+=(--data-dir "${data_root}/${dset}"); done
    # shellcheck disable=SC2086
    ${python} -m partlib.bin.analyze "${margs[@]}" "${dargs[@]}" ${analysis_args} "${expdir}/analysis_seed${seed}"
  done
fi

# RESULTS.md from every scored decode, with links to the analysis reports that exist.
if [ ${stage} -le 9 ] && [ ${stop_stage} -ge 9 ]; then
  log "Stage 9: ${expdir}/RESULTS.md"
  exps=(); copts=(); links=()
  for sched in ${schedules}; do for seed in ${seeds}; do exps+=("${expdir}/${sched}_seed${seed}"); done; done
  if declare -F results_extra > /dev/null; then results_extra; fi
  for pair in ${results_compare}; do copts+=(--compare "${pair}"); done
  for seed in ${seeds}; do
    [ -f "${expdir}/analysis_seed${seed}/analysis.md" ] && \
      links+=(--link "Seed ${seed}: language-specific vs shared representations=analysis_seed${seed}/analysis.md")
  done
  curve_exps=(); for sched in ${schedules}; do curve_exps+=("${expdir}/${sched}_seed${seeds%% *}"); done
  ${python} -m partlib.bin.plot_curves --out-dir "${expdir}/curves" "${curve_exps[@]}"
  links+=(--link "Training curves of every schedule (seed ${seeds%% *})=curves/curves.md")
  for t in ${results_targets}; do copts+=(--target "${t}"); done
  # shellcheck disable=SC2086
  ${python} -m partlib.bin.results --seeds "${copts[@]}" "${links[@]}" ${results_args} --out "${expdir}/RESULTS.md" "${exps[@]}"
fi

# The model users take away: one self-contained folder per seed of the first schedule.
if [ ${stage} -le 10 ] && [ ${stop_stage} -ge 10 ]; then
  for seed in ${seeds}; do
    tag=${first_sched}_seed${seed}
    last_model=$(${python} -m partlib.bin.exp models "${expdir}/${tag}" | tail -n 1 | cut -d' ' -f2)
    [ -n "${last_model}" ] || { log "Stage 10: ${expdir}/${tag} has no exported model (run stage 5)"; exit 1; }
    log "Stage 10: ${last_model} -> ${expdir}/model_${tag}"
    ${python} -m partlib.bin.export "${last_model}" "${expdir}/model_${tag}"
  done
fi

# A long recording from a test set, transcribed to subtitles by the exported model.
if [ ${stage} -le 11 ] && [ ${stop_stage} -ge 11 ] && [ -n "${demo_set}" ]; then
  seed=${seeds%% *}
  model=${expdir}/model_${first_sched}_seed${seed}
  [ -f "${model}/done" ] || { log "Stage 11: ${model} is not an exported model (run stage 10)"; exit 1; }
  ${python} -m partlib.bin.join_audio --data-dir "${data_root}/${demo_set}" --utts-per-recording "${demo_utts}" \
    --limit 1 --seed "${seed}" "${expdir}/demo"
  for wav in "${expdir}"/demo/*.wav; do
    log "Stage 11: ${model} transcribes ${wav} -> ${wav%.wav}.srt"
    ${python} -m partlib.bin.transcribe --model "${model}" ${demo_lang:+--src-lang "${demo_lang}"} \
      --output-format srt --output "${wav%.wav}.srt" "${wav}"
  done
fi

log "Finished stages ${stage}-${stop_stage} in ${SECONDS} s"
