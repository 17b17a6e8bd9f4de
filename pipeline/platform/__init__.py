"""The platform every job stands on: params as typed config (config, config_checker) and the
record of each `auto` choice (choices), what a stage prints (console), user errors (errors),
crash-safe publication of outputs (io), where batch work runs (engine: local | Ray, with the
Ray engine's tasks, actors and training in ray_engine), and what the hardware has (hardware).
Imports nothing else of the pipeline."""
