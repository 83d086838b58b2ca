"""What a trained checkpoint learned beyond its test error (the library of scripts/evaluate.py):
calibration, penultimate-feature rank and linear probes, corruption robustness.

Imports numpy / scipy / scikit-learn / matplotlib (the ``[analysis]`` extra); never imported by ``sam``.
"""
