#!/usr/bin/env bash
# Prepare WenetSpeech data dirs. Step 1 writes segments-based dirs (recording = aid, speaker = aid,
# utterance = sid) to <data_dir>/local/wenetspeech_{train_<subset>,dev,test_net,test_meeting};
# step 2 decodes each recording once and stores every segment's 16 kHz audio in an ark under
# <audio_dump>/<set>/, giving <data_dir>/wenetspeech_<set> (no segments, wav.scp = ark offsets),
# so training never decodes a long recording per segment. Scored by CER (Chinese).
# The corpus path WENETSPEECH comes from db.sh (or the environment).
set -euo pipefail
log() { echo "$(date -u '+%Y-%m-%dT%H:%M:%SZ') ${0##*/}: $*" >&2; }

train_subset=S           # S (100 h), M (1k h) or L (10k h); membership by each segment's "subsets"
eval_subsets="DEV TEST_NET TEST_MEETING"
allow_missing=false      # true: skip (and count) segments whose recording is absent on disk
data_dir=data
audio_dump=dump/audio    # where step 2 writes the segment arks
stage=1
stop_stage=2
help_message="Usage: $0 [--train-subset S|M|L] [--eval-subsets \"DEV TEST_NET TEST_MEETING\"] [--allow-missing true|false] [--data-dir data] [--audio-dump dump/audio] [--stage 1] [--stop-stage 2]"

. ./db.sh
. utils/parse_options.sh

sets="train_$(echo "${train_subset}" | tr 'A-Z' 'a-z')"
for s in ${eval_subsets}; do sets+=" $(echo "${s}" | tr 'A-Z' 'a-z')"; done

if [ "${stage}" -le 1 ] && [ "${stop_stage}" -ge 1 ]; then
  if [ -z "${WENETSPEECH}" ]; then
    log "WENETSPEECH is not set: point it at the folder of WenetSpeech.json in db.sh (expected <WENETSPEECH>/WenetSpeech.json and the audio/ tree it lists)"
    exit 1
  fi
  log "step 1: segments-based data dirs (${train_subset} ${eval_subsets}) from ${WENETSPEECH}"
  python3 -m partlib.bin.prep_corpus wenetspeech "${WENETSPEECH}" "${data_dir}/local" \
    --train-subset "${train_subset}" --eval-subsets "${eval_subsets}" --allow-missing "${allow_missing}"
  for s in ${sets}; do
    utils/validate_data_dir.sh --no-feats "${data_dir}/local/wenetspeech_${s}"
  done
fi
if [ "${stage}" -le 2 ] && [ "${stop_stage}" -ge 2 ]; then
  for s in ${sets}; do
    log "step 2: dumping the segments of wenetspeech_${s}"
    python3 -m partlib.bin.prep_corpus wenet-dump "${data_dir}/local/wenetspeech_${s}" \
      "${data_dir}/wenetspeech_${s}" "${audio_dump}/wenetspeech_${s}"
    utils/validate_data_dir.sh --no-feats "${data_dir}/wenetspeech_${s}"
  done
fi
log "done"
