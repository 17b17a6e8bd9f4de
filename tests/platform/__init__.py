"""Tests of params, publishing and faults (pipeline.platform)."""
