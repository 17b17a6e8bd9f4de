"""Tests of training and its engines (pipeline.training)."""
