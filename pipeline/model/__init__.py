"""The model and its math: the article's quantities and the objective (subo), likelihood
families (likelihoods), custom layers (layers), the flow proxy and the VampPrior (posterior),
encoder and decoder (networks), the VAE built from them and one config (vae_config, vae), the
model's `auto` from the data (resolve_model; what the resolved model implies, in resolved/),
bound and collapse diagnostics (diagnostics), and the saved bundle (bundle). No training
policy: schedules belong to pipeline.training."""
