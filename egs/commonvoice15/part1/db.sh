# Corpus location for this recipe: edit it here or export it before running run.sh.
# CV15: the extracted Common Voice 15.0 release, holding <locale>/{train,dev,test}.tsv and <locale>/clips/.
CV15="${CV15:-}"   # e.g. /corpora/cv-corpus-15.0-2023-09-08
