"""Shared training machinery: Petastorm data, Horovod launch, devices, MLflow tracking."""
