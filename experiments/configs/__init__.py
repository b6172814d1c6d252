"""Experiment configurations (frozen dataclasses) and their presets: default, demo, quick."""
