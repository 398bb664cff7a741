"""Data preparation: reading raw sources, the candidate pool and the target sets."""
