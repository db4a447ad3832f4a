"""Management API routes (mounted under /api/manage/ by llamaproxy.manage_api)."""

from ninja import Router

router = Router()
