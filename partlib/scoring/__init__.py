"""Scoring of speech-to-text outputs.

normalize (text normalisation, scoring units), align (sclite-compatible alignment), wer (error
counts), bleu (sacrebleu BLEU/chrF), diagnostics (wrong language, repetitions, runaway lengths),
trn (sclite trn format), report (one scoring run and its files), bootstrap (paired significance
tests), results (RESULTS.md).
"""
