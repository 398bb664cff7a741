"""Baseline selectors: one module each, on the same selector protocol as NAIT."""
