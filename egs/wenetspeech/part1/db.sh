# Corpus location for this recipe: edit it here or export it before running run.sh.
# WENETSPEECH: folder holding WenetSpeech.json and the audio/ tree it refers to.
WENETSPEECH="${WENETSPEECH:-}"   # e.g. /corpora/WenetSpeech
