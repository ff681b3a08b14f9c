"""Remote commands on the device: a registry of what can be run (roles extend it), and the runner
that checks, runs and acknowledges each command exactly once."""
