"""The one base class of operational errors: their message says what happened and what to do."""


class OperationError(RuntimeError):
    """An operation refused or stopped safely; the store is as it was before it."""
