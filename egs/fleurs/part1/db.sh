# Corpus location for this recipe: edit it here or export it before running run.sh.
# FLEURS: folder with one folder per locale: <locale>/{train,dev,test}.tsv and <locale>/audio/.
FLEURS="${FLEURS:-}"   # e.g. /corpora/fleurs
