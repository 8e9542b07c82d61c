#!/usr/bin/env bash
# Data of the paper's combined setup: ASR from Common Voice 15 + FLEURS + WenetSpeech, S2TT from
# CoVoST 2, text tasks (t2tt) from CoVoST 2 transcript/translation pairs and FLEURS sentence pairs.
# Each corpus is prepared by its own recipe's local/data.sh (run from here, with this db.sh).
#
# Contamination: CoVoST 2's audio is Common Voice 4, which Common Voice 15 contains. Every speech
# training set loses the utterances that share a clip name or a sentence (transcript or
# translation) with the CoVoST 2 and Common Voice 15 dev/test sets; the text-task sets lose every
# pair that shares a sentence with any dev/test set. Counts go to <data_dir>/contamination_*.json;
# any overlap left afterwards fails this script.
#
# Output: the data dirs, and <data_dir>/sets/{train,dev,test}_{asr,s2tt,t2tt}, each listing the
# names of the data dirs of one role (one per line).
set -euo pipefail
log() { echo "$(date -u '+%Y-%m-%dT%H:%M:%SZ') ${0##*/}: $*" >&2; }

cv15_locales="de en zh-CN"
fleurs_locales="de_de en_us cmn_hans_cn"
fleurs_pivot=en_us       # FLEURS text pairs <locale> -> pivot (skipped when the pivot is not prepared)
wenet_subset=S
covost2_directions="de_en zh-CN_en en_de en_zh-CN"
allow_missing=false
data_dir=data
stage=1
stop_stage=6
help_message="Usage: $0 [--cv15-locales ..] [--fleurs-locales ..] [--wenet-subset S|M|L] [--covost2-directions ..] [--allow-missing true|false] [--data-dir data] [--stage N] [--stop-stage N]"

. ./db.sh
. utils/parse_options.sh

egs=$(cd "$(dirname "$0")/../../.." && pwd)
common=(--allow-missing "${allow_missing}" --data-dir "${data_dir}")
wenet_sets="train_$(echo "${wenet_subset}" | tr 'A-Z' 'a-z')"

if [ "${stage}" -le 1 ] && [ "${stop_stage}" -ge 1 ] && [ -n "${cv15_locales}" ]; then
  "${egs}/commonvoice15/part1/local/data.sh" --locales "${cv15_locales}" "${common[@]}"
fi
if [ "${stage}" -le 2 ] && [ "${stop_stage}" -ge 2 ] && [ -n "${fleurs_locales}" ]; then
  "${egs}/fleurs/part1/local/data.sh" --locales "${fleurs_locales}" "${common[@]}"
fi
if [ "${stage}" -le 3 ] && [ "${stop_stage}" -ge 3 ] && [ -n "${wenet_subset}" ]; then
  "${egs}/wenetspeech/part1/local/data.sh" --train-subset "${wenet_subset}" "${common[@]}"
fi
if [ "${stage}" -le 4 ] && [ "${stop_stage}" -ge 4 ] && [ -n "${covost2_directions}" ]; then
  "${egs}/covost2/part1/local/data.sh" --directions "${covost2_directions}" "${common[@]}"
fi

# The role lists (also needed by the decontamination stage).
mkdir -p "${data_dir}/sets"
write_list() {  # write_list <name> <data dir names...>: atomically, one name a line
  local name=$1; shift
  printf '%s\n' "$@" | sed '/^$/d' > "${data_dir}/sets/.${name}.tmp"
  mv "${data_dir}/sets/.${name}.tmp" "${data_dir}/sets/${name}"
}
fleurs_pairs=()
for l in ${fleurs_locales}; do
  if [ "${l}" != "${fleurs_pivot}" ] && [[ " ${fleurs_locales} " == *" ${fleurs_pivot} "* ]]; then
    fleurs_pairs+=("fleurs_${l}_${fleurs_pivot}_train_text")
  fi
done
for split in train dev test; do
  asr=(); s2tt=(); t2tt=()
  for l in ${cv15_locales}; do asr+=("cv15_${l}_${split}"); done
  for l in ${fleurs_locales}; do asr+=("fleurs_${l}_${split}"); done
  if [ -n "${wenet_subset}" ]; then
    case ${split} in
      train) asr+=("wenetspeech_${wenet_sets}") ;;
      dev) asr+=(wenetspeech_dev) ;;
      test) asr+=(wenetspeech_test_net wenetspeech_test_meeting) ;;
    esac
  fi
  for d in ${covost2_directions}; do s2tt+=("covost2_${d}_${split}"); t2tt+=("covost2_${d}_${split}_text"); done
  [ "${split}" = train ] && t2tt+=("${fleurs_pairs[@]}")
  write_list "${split}_asr" "${asr[@]}"
  write_list "${split}_s2tt" "${s2tt[@]}"
  write_list "${split}_t2tt" "${t2tt[@]}"
done
dirs_of() { local f; for f in "$@"; do sed "s|^|${data_dir}/|" "${data_dir}/sets/${f}"; done; }

if [ "${stage}" -le 5 ] && [ "${stop_stage}" -ge 5 ]; then
  for l in ${fleurs_locales}; do
    if [ "${l}" != "${fleurs_pivot}" ] && [[ " ${fleurs_locales} " == *" ${fleurs_pivot} "* ]]; then
      log "FLEURS text pairs ${l} -> ${fleurs_pivot}"
      python3 -m partlib.bin.prep_corpus fleurs-pairs "${data_dir}/fleurs_${l}_train" \
        "${data_dir}/fleurs_${fleurs_pivot}_train" "${data_dir}/fleurs_${l}_${fleurs_pivot}_train_text"
    fi
  done
fi
if [ "${stage}" -le 6 ] && [ "${stop_stage}" -ge 6 ]; then
  # Speech training sets against the Common Voice based eval sets (clip names and sentences).
  mapfile -t speech_train < <(dirs_of train_asr train_s2tt)
  mapfile -t cv_eval < <(dirs_of dev_asr test_asr dev_s2tt test_s2tt | grep -E '/(cv15|covost2)_' || true)
  mapfile -t text_train < <(dirs_of train_t2tt)
  mapfile -t all_eval < <(dirs_of dev_asr test_asr dev_s2tt test_s2tt dev_t2tt test_t2tt)
  if [ ${#cv_eval[@]} -gt 0 ]; then
    log "decontaminating the speech training sets"
    python3 -m partlib.bin.prep_corpus decontaminate --train "${speech_train[@]}" \
      --eval "${cv_eval[@]}" --report "${data_dir}/contamination_speech.json"
  fi
  if [ ${#text_train[@]} -gt 0 ]; then
    log "decontaminating the text-task sets"
    python3 -m partlib.bin.prep_corpus decontaminate --train "${text_train[@]}" \
      --eval "${all_eval[@]}" --report "${data_dir}/contamination_text.json"
  fi
  for d in "${speech_train[@]}"; do utils/validate_data_dir.sh --no-feats "${d}"; done
  for d in "${text_train[@]}"; do utils/validate_data_dir.sh --no-feats --no-wav "${d}"; done
fi
log "done"
