"""A VAE representation-learning pipeline driven by DVC.

Importing this package is cheap and has no side effects: TensorFlow and Keras are only
imported by the modules that need them (`pipeline.model.vae`, `pipeline.training.train`, ...).
Import `pipeline.model.vae` before `keras.saving.load_model("model.keras")` so that the
custom layers are registered.
"""

__version__ = "0.1.0"
