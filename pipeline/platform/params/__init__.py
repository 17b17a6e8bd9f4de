"""params.yaml read into typed, checked knobs: config (the blocks' dataclasses: each knob's
default, type and bounds), load (reading the file), config_checker (each value against its
type and bounds), rules (the checks across keys), param_watch (a stage reads only the keys
dvc.yaml declares for it)."""
