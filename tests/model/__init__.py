"""Tests of the model, its likelihoods and the SUBO (pipeline.model)."""
