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
