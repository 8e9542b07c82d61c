# Corpus locations for this recipe: edit them here or export them before running run.sh.
# COVOST2: folder holding the covost_v2.<src>_<tgt>.tsv translation tables.
# CV4: Common Voice 4 (cv-corpus-4-2019-12-10), one folder per source locale (named as in CoVoST 2:
#      en, de, zh-CN, sv-SE, ...) each holding validated.tsv and clips/.
COVOST2="${COVOST2:-}"   # e.g. /corpora/covost2
CV4="${CV4:-}"           # e.g. /corpora/cv-corpus-4
