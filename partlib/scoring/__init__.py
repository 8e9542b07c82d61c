"""Scoring of speech-to-text outputs.

normalize (text normalisation, scoring units), align (sclite-compatible alignment), wer (error
counts), bleu (sacrebleu BLEU/chrF), diagnostics (wrong language, repetitions, runaway lengths),
trn (sclite trn format), wer_bleu (error rates and BLEU/chrF of a ref/hyp pair and their files),
accuracy (label accuracy and confusion), decode_dir (one decode dir scored with its task's
scorer), bootstrap (paired significance tests), results (RESULTS.md).
"""
