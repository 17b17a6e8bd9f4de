"""Tests of prepare's readers, columns and splits (pipeline.data)."""
