"""The explore stage (explore): the UMAP's points as one offline page (page, its JavaScript
page_script), each point's example beside its reconstruction (examples), and TensorBoard
Embedding Projector files (projector)."""
