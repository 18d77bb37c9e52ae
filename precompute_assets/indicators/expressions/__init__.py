"""Qlib expressions: the panel engine (dates x stocks arrays, the default) and Qlib's own engine."""
