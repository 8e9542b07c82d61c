#!/usr/bin/env bash
# Prepare CoVoST 2 data dirs, per direction <src>_<tgt>:
#   <data_dir>/covost2_<src>_<tgt>_{train,dev,test}       speech: text = transcript,
#        text.<tgt> = translation (canonical code), usable for asr and s2tt
#   <data_dir>/covost2_<src>_<tgt>_{train,dev,test}_text  text only (unique pairs), for t2tt
# train = CoVoST splits train + train_covost. Rows of a translation table without a match in the
# Common Voice 4 validated.tsv are dropped, counted and reported.
# The corpus paths COVOST2 and CV4 come from db.sh (or the environment).
set -euo pipefail
log() { echo "$(date -u '+%Y-%m-%dT%H:%M:%SZ') ${0##*/}: $*" >&2; }

# X->en: fr de es ca it ru zh-CN pt fa et mn nl tr ar sv-SE lv sl ta ja id cy;
# en->X: de tr fa sv-SE mn zh-CN cy ca sl et id ar ta lv ja
directions="de_en en_de"
allow_missing=false      # true: skip (and count) clips listed but absent on disk
data_dir=data
help_message="Usage: $0 [--directions \"de_en zh-CN_en en_de\"] [--allow-missing true|false] [--data-dir data]"

. ./db.sh
. utils/parse_options.sh

if [ -z "${COVOST2}" ] || [ -z "${CV4}" ]; then
  log "COVOST2 and CV4 must be set in db.sh (expected <COVOST2>/covost_v2.<src>_<tgt>.tsv and <CV4>/<src>/{validated.tsv,clips/})"
  exit 1
fi
log "preparing CoVoST 2 (${directions}) from ${COVOST2} and ${CV4}"
python3 -m partlib.bin.prep_corpus covost2 "${COVOST2}" "${CV4}" "${data_dir}" \
  --directions "${directions}" --allow-missing "${allow_missing}"
for d in ${directions}; do
  for split in train dev test; do
    utils/validate_data_dir.sh --no-feats "${data_dir}/covost2_${d}_${split}"
    utils/validate_data_dir.sh --no-feats --no-wav "${data_dir}/covost2_${d}_${split}_text"
  done
done
log "done"
