# Corpus locations for the combined recipe: edit them here or export them before running run.sh.
# Layouts: see the db.sh of egs/commonvoice15, egs/fleurs, egs/wenetspeech and egs/covost2.
CV15="${CV15:-}"               # Common Voice 15.0 release
FLEURS="${FLEURS:-}"           # FLEURS, one folder per locale
WENETSPEECH="${WENETSPEECH:-}" # folder of WenetSpeech.json
COVOST2="${COVOST2:-}"         # covost_v2.<src>_<tgt>.tsv tables
CV4="${CV4:-}"                 # Common Voice 4, one folder per CoVoST 2 source locale
