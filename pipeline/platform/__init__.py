"""The platform every job stands on: params as typed config (config, config_checker) and the
record of each `auto` choice (choices), what a stage prints (console), user errors (errors),
crash-safe publication of outputs (io), where batch work runs (engine: local | Ray), and
what the hardware has (hardware). Imports nothing else of the pipeline."""
