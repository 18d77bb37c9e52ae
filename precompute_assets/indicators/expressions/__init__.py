"""Qlib expressions: evaluated by Qlib's own engine on stocks laid end to end."""
