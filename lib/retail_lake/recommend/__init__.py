"""Implicit-feedback recommendation: blocked top-N from ALS factors and ranking metrics."""
