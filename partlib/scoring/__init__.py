"""Scoring of speech-to-text outputs.

normalize (text normalisation, scoring units), align (sclite-compatible alignment), wer (error
counts), bleu (sacrebleu BLEU/chrF), diagnostics (wrong language, repetitions, runaway lengths),
trn (sclite trn format), wer_bleu (error rates and BLEU/chrF of a ref/hyp pair and their files),
accuracy (label accuracy and confusion), scorers (the scorer registry: name -> metric family),
scores (the scores.json reader and writer), decode_dir (one decode dir scored with its task's
scorer), bootstrap and significance (paired tests), published (reference numbers of a paper),
results (RESULTS.md, with experiments, tables, comparisons, targets, sections, against_paper).
"""
