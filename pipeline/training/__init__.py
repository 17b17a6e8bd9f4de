"""Training: the run's `auto` knobs resolved once (resolve_run), the tf.data input (feed), the
schedules and per-epoch logging the trainer owns (callbacks), and the train stage (train)."""
