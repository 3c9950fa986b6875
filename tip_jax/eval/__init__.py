"""Evaluation: benchmark test sets, the evaluator job beside the trainer, and scoring
folders of restored images (ours or another method's) with `tip_jax.metrics`."""
