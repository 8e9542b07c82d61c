"""Preparation of the paper's corpora into Kaldi data dirs (CommonVoice, Fleurs, WenetSpeech, CoVoST 2)."""
