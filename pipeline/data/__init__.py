"""Data: from a source to prepared arrays and back. Readers of every source (readers/),
prepare's `auto` rules (resolve_data), the fitted scaling (scaling), seeded splits (splits),
the prepare stage (prepare), its manifest (manifest), and the prepared-data reader every
later stage uses (prepared). Needs no TensorFlow."""
