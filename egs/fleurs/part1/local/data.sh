#!/usr/bin/env bash
# Prepare FLEURS data dirs: <data_dir>/fleurs_<locale>_{train,dev,test}
# (text = raw_transcription with odd Unicode spaces normalised; utt2sent = FLoRes sentence id,
# which pairs utterances across languages; one speaker per utterance). Audio archives
# (audio/<split>.tar.gz) are extracted once under <extract_dir>.
# The corpus path FLEURS comes from db.sh (or the environment).
set -euo pipefail
log() { echo "$(date -u '+%Y-%m-%dT%H:%M:%SZ') ${0##*/}: $*" >&2; }

locales="de_de en_us"    # any of the 102 FLEURS locales, e.g. "de_de cmn_hans_cn es_419"
splits="train dev test"
allow_missing=false      # true: skip (and count) recordings listed in a tsv but absent on disk
data_dir=data
extract_dir=dump/fleurs  # where audio/<split>.tar.gz archives are extracted
help_message="Usage: $0 [--locales \"de_de cmn_hans_cn\"] [--splits \"train dev test\"] [--allow-missing true|false] [--data-dir data] [--extract-dir dump/fleurs]"

. ./db.sh
. utils/parse_options.sh

if [ -z "${FLEURS}" ]; then
  log "FLEURS is not set: point it at the FLEURS folder in db.sh (expected <FLEURS>/<locale>/{train,dev,test}.tsv and <locale>/audio/)"
  exit 1
fi
log "preparing FLEURS (${locales}) from ${FLEURS}"
python3 -m partlib.bin.prep_corpus fleurs "${FLEURS}" "${data_dir}" --locales "${locales}" \
  --splits "${splits}" --allow-missing "${allow_missing}" --dump-dir "${extract_dir}"
for locale in ${locales}; do
  for split in ${splits}; do
    utils/validate_data_dir.sh --no-feats "${data_dir}/fleurs_${locale}_${split}"
  done
done
log "done"
