"""Tests of the whole pipeline: DVC, the command, the docs (pipeline.runner, cli, reference)."""
