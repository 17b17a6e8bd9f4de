"""Data: from a source to prepared arrays and back. Readers of every source (readers/),
prepare's `auto` rules (resolve_data), the fitted scaling (scaling), seeded splits (splits),
the prepare stage (prepare), which split each row goes to (row_assignment), the arrays and
manifest it writes (prepared_writer, manifest), and the prepared-data reader every later
stage uses (prepared). Needs no TensorFlow."""
