"""Tests of the latents and their scores (pipeline.latents)."""
