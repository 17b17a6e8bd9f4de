"""What a resolved model (pipeline.model.vae_config.ResolvedModel) implies, by arithmetic alone,
before anything is built: each convolution's strides (strides), a forward pass's floating-point
operations (flops), and the errors for an explicit choice the prepared data cannot take
(checks). pipeline.model.resolve_model's `forward_flops` and `check_model_fits_data` add them
up; pipeline.model.networks builds with the strides."""
