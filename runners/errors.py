"""Why the scheduler could not hand out a runner; each face renders these in its own shape."""

from __future__ import annotations


class SchedulerError(Exception):
    status = 503
    code = "model_unavailable"

    def __init__(self, model: str, message: str) -> None:
        super().__init__(message)
        self.model = model
        self.message = message


class ModelNotFound(SchedulerError):
    status = 404
    code = "model_not_found"

    def __init__(self, model: str) -> None:
        super().__init__(model, f"model '{model}' not found")


class ModelDisabled(SchedulerError):
    status = 403
    code = "model_disabled"

    def __init__(self, model: str) -> None:
        super().__init__(model, f"model '{model}' is disabled")


def file_problem(state: str, error: str = "") -> str:
    """What is wrong with a catalog entry's file, in words, for an entry that is not available."""
    if state == "missing":
        return "its file is missing"
    if state == "error":
        return f"its file could not be read: {error}" if error else "its file could not be read"
    return f"its file is {state}"


class ModelFileUnavailable(SchedulerError):
    """The entry's file is missing or unreadable: nothing to start (the faces answer the same)."""

    status = 503
    code = "model_unavailable"

    def __init__(self, model: str, state: str, error: str = "") -> None:
        super().__init__(model, f"model '{model}' is not available: {file_problem(state, error)}")


class ModelUnavailable(SchedulerError):
    """The runner failed to start (the message carries llama-server's own error text)."""

    status = 503
    code = "model_unavailable"


class QueueTimeout(SchedulerError):
    status = 503
    code = "queue_timeout"


class QueueFull(SchedulerError):
    status = 429
    code = "queue_full"
