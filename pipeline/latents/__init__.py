"""The latents, the pipeline's data product: the Parquet contract, writer and readers
(parquet), the encode stage (encode), the `vae-pipeline encode` command for new data
(encode_command) and its reading of that data as the training data was (new_data), and a
table model's imputation of missing cells (imputation)."""
