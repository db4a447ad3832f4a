"""Management API routes for usage history and API keys (mounted under /api/manage/)."""

from __future__ import annotations

from datetime import datetime

from django.db.models import Avg, Count, Q, Sum
from django.db.models.functions import TruncDay, TruncHour
from django.http import HttpRequest
from ninja import Field, Query, Router, Schema
from ninja.errors import HttpError

from llamaproxy.http_errors import MAX_DB_INT
from proxies.keys import create_key, revoke_key
from proxies.models import ApiKey, UsageRecord

router = Router(tags=["usage and keys"])


class UsageFilter(Schema):
    model: str | None = None
    key: int | None = Field(None, description="API key id", ge=0, le=MAX_DB_INT)
    face: str | None = None
    endpoint: str | None = None
    status: int | None = Field(None, ge=0, le=999)
    since: datetime | None = None
    until: datetime | None = None
    limit: int = Field(100, ge=1, le=5000)
    offset: int = Field(0, ge=0, le=MAX_DB_INT)


class UsageOut(Schema):
    id: int
    created_at: datetime
    face: str
    endpoint: str
    model: str
    client_address: str
    api_key_id: int | None
    api_key_name: str
    status: int
    stream: bool
    prompt_tokens: int | None
    completion_tokens: int | None
    cached_tokens: int | None
    ttft_ms: float | None
    prefill_tps: float | None
    decode_tps: float | None
    duration_ms: float
    load_ms: float | None
    audio_seconds: float | None
    error: str


class UsagePage(Schema):
    count: int
    results: list[UsageOut]


def _filtered(filters: UsageFilter):
    query = Q()
    if filters.model:
        query &= Q(model=filters.model)
    if filters.key is not None:
        query &= Q(api_key_id=filters.key)
    if filters.face:
        query &= Q(face=filters.face)
    if filters.endpoint:
        query &= Q(endpoint=filters.endpoint)
    if filters.status is not None:
        query &= Q(status=filters.status)
    if filters.since:
        query &= Q(created_at__gte=filters.since)
    if filters.until:
        query &= Q(created_at__lt=filters.until)
    return UsageRecord.objects.filter(query)


@router.get("usage", response=UsagePage, summary="Usage history, newest first")
def list_usage(request: HttpRequest, filters: Query[UsageFilter]) -> dict:
    rows = _filtered(filters).select_related("api_key")
    page = list(rows[filters.offset : filters.offset + filters.limit])
    for row in page:
        row.api_key_name = row.api_key.name if row.api_key else row.api_key_name
    return {"count": rows.count(), "results": page}


class UsageTotals(Schema):
    period: datetime | None = None
    model: str | None = None
    face: str | None = None
    requests: int
    errors: int
    prompt_tokens: int
    completion_tokens: int
    avg_ttft_ms: float | None
    avg_decode_tps: float | None


@router.get("usage/totals", response=list[UsageTotals], summary="Totals per day (or hour), model or face")
def usage_totals(request: HttpRequest, filters: Query[UsageFilter], by: str = "day") -> list[dict]:
    groupings = {
        "day": ["period"],
        "hour": ["period"],
        "model": ["model"],
        "face": ["face"],
        "day-model": ["period", "model"],
    }
    if by not in groupings:
        raise HttpError(400, f"by: must be one of {', '.join(groupings)}")
    rows = _filtered(filters)
    if "period" in groupings[by]:
        rows = rows.annotate(period=TruncHour("created_at") if by == "hour" else TruncDay("created_at"))
    rows = (
        rows.values(*groupings[by])
        .annotate(
            requests=Count("id"),
            errors=Count("id", filter=Q(status__gte=400)),
            prompt_tokens=Sum("prompt_tokens", default=0),
            completion_tokens=Sum("completion_tokens", default=0),
            avg_ttft_ms=Avg("ttft_ms"),
            avg_decode_tps=Avg("decode_tps"),
        )
        .order_by(*groupings[by])
    )
    return list(rows)


class KeyIn(Schema):
    name: str = Field(min_length=1, max_length=100)
    allowed_models: list[str] = []
    is_admin: bool = False


class KeyOut(Schema):
    id: int
    name: str
    prefix: str
    allowed_models: list[str]
    is_admin: bool
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None


class NewKeyOut(KeyOut):
    key: str = Field(description="The key itself: shown this once, stored only as a hash")


@router.get("keys", response=list[KeyOut], summary="API keys (never the keys themselves)")
def list_keys(request: HttpRequest) -> list[ApiKey]:
    return list(ApiKey.objects.all())


@router.post("keys", response={201: NewKeyOut}, summary="Create an API key; the response shows it once")
def add_key(request: HttpRequest, payload: KeyIn) -> tuple[int, dict]:
    key, plaintext = create_key(payload.name.strip(), payload.allowed_models, payload.is_admin)
    return 201, {**KeyOut.from_orm(key).dict(), "key": plaintext}


@router.delete("keys/{key_id}", response=KeyOut, summary="Revoke an API key")
def delete_key(request: HttpRequest, key_id: int) -> ApiKey:
    key = ApiKey.objects.filter(pk=key_id).first()
    if key is None:
        raise HttpError(404, f"no API key with id {key_id}")
    if key.revoked_at is None:
        revoke_key(key)
    return key
