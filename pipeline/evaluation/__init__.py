"""Evaluation: probes (probes) on raw and PCA baselines (baselines) and on the latents
(evaluate, latent_quality), batch mixing (mixing), pictures of the model (pictures) and of
its odd rows (odd_rows) drawn with plotting primitives (plotting), the UMAP (umap_view), the
combined report (report, its text in report_text/), the explore stage's page and projector
files (explorer/), and the offline `dvc plots` page (plots_page)."""
