#!/usr/bin/env bash
# Prepare Common Voice 15.0 data dirs: <data_dir>/cv15_<locale>_{train,dev,test}
# (wav.scp = the mp3 clip, decoded and resampled to 16 kHz when read; text; utt2spk/spk2utt with
# speaker = shortened client_id; utt2lang; spk2gender when every speaker's gender is known).
# The corpus path CV15 comes from db.sh (or the environment).
set -euo pipefail
log() { echo "$(date -u '+%Y-%m-%dT%H:%M:%SZ') ${0##*/}: $*" >&2; }

locales="de en"          # Common Voice locale codes, e.g. "de en zh-CN sv-SE"
splits="train dev test"
allow_missing=false      # true: skip (and count) clips listed in a tsv but absent on disk
data_dir=data
help_message="Usage: $0 [--locales \"de zh-CN\"] [--splits \"train dev test\"] [--allow-missing true|false] [--data-dir data]"

. ./db.sh
. utils/parse_options.sh

if [ -z "${CV15}" ]; then
  log "CV15 is not set: point it at cv-corpus-15.0-2023-09-08 in db.sh (expected <CV15>/<locale>/{train,dev,test}.tsv and <locale>/clips/)"
  exit 1
fi
log "preparing Common Voice 15.0 (${locales}) from ${CV15}"
python3 -m partlib.bin.prep_corpus commonvoice "${CV15}" "${data_dir}" \
  --locales "${locales}" --splits "${splits}" --allow-missing "${allow_missing}"
for locale in ${locales}; do
  for split in ${splits}; do
    utils/validate_data_dir.sh --no-feats "${data_dir}/cv15_${locale}_${split}"
  done
done
log "done"
