"""Evaluation: perplexity, BLEU, label-likelihood classification, scaling laws, attention maps."""
