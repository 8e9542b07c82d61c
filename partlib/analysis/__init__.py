"""Representation analysis: how language-specific and how shared a SpeechLLM's representations are.

``extract`` pools one vector per utterance at chosen model points (cached), ``metrics`` measures
them (language-ID probe, retrieval, centroids, separability, CKA), ``plots`` draws the figures and
``gradsim`` compares the loss gradients of (task, language) groups of a stage model, and
``report`` runs it all and writes metrics.json / analysis.md. Definitions: docs/analysis.md.
"""
