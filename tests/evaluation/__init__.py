"""Tests of evaluation, report and explorer (pipeline.evaluation)."""
