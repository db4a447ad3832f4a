"""The one error type catalog services raise for bad input; views and commands present it."""

from __future__ import annotations


class CatalogError(ValueError):
    """Bad input or a conflict: `field` names what was wrong (dotted, e.g. `parameters.ctx_size`).

    `status` is the HTTP status the manage API answers with (400 invalid, 404 unknown, 409 conflict).
    """

    def __init__(self, message: str, field: str | None = None, status: int = 400) -> None:
        self.message = message
        self.field = field
        self.status = status
        super().__init__(f"{field}: {message}" if field else message)
