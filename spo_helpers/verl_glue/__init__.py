"""Glue between the SPO core and verl 0.6.1: config presets, the CPU worker group, the trainers."""
