"""Evaluation: probes (probes) on raw and PCA baselines (baselines) and on the latents
(evaluate), pictures of the model (pictures) drawn with plotting primitives (plotting), the
UMAP (umap_view), the combined report (report), and the offline `dvc plots` page
(plots_page)."""
