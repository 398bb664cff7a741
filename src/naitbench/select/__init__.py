"""Selection: the selector protocol, shared top-ratio selection and aggregation, the CLI."""

from naitbench.select.protocol import SelectionContext, Selector

__all__ = ["SelectionContext", "Selector"]
