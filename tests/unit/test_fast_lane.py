"""The fast lane takes exactly the routes the URLconfs would send to the relay's views."""

from __future__ import annotations

import json

import pytest
from django.http import HttpRequest, JsonResponse
from django.test import RequestFactory, override_settings
from django.urls import path

from llamaproxy.fast_lane import FAST_PATHS, FastLane, build_routes
from proxies import openai_face

PORTS = {"dashboard": 8080, "api": 8585, "ollama": 11434, "lmstudio": 1234}


def other_view(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"other": True})


# A face whose /v1/completions is its own view: the lane must leave that route alone.
urlpatterns = [path("v1/completions", other_view), path("", openai_face.api.urls)]


def test_every_api_port_has_the_relay_routes_and_the_dashboard_none() -> None:
    routes = build_routes(PORTS)
    assert set(routes) == {
        (str(port), p) for face, port in PORTS.items() if face != "dashboard" for p in FAST_PATHS
    }
    lane = routes[("8585", "/v1/chat/completions")]
    assert (lane.face, lane.view, lane.api) == ("api", openai_face.chat_completions, openai_face.api)
    assert routes[("11434", "/v1/embeddings")].face == "ollama"


def test_a_route_that_resolves_to_another_view_stays_on_the_normal_path() -> None:
    faces = {"dashboard": "llamaproxy.urls.dashboard", "api": __name__}
    with override_settings(FACE_URLCONFS=faces):
        routes = build_routes({"api": 8585})
    assert ("8585", "/v1/completions") not in routes
    assert routes[("8585", "/v1/chat/completions")].view is openai_face.chat_completions


def make_request(method: str, url: str, port: str = "8585") -> HttpRequest:
    request = getattr(RequestFactory(), method.lower())(url)
    request.META["SERVER_PORT"] = port
    return request


def test_only_posts_to_those_paths_on_those_ports_take_the_lane() -> None:
    lane = FastLane()
    with override_settings(LLAMAPROXY_PORTS=PORTS):
        assert lane.lane(make_request("POST", "/v1/completions")) is not None
        assert lane.lane(make_request("GET", "/v1/completions")) is None
        assert lane.lane(make_request("POST", "/v1/completions/")) is None
        assert lane.lane(make_request("POST", "/v1/models")) is None
        assert lane.lane(make_request("POST", "/v1/completions", port="8080")) is None


@pytest.mark.django_db
async def test_the_lane_sets_the_face_and_a_failing_view_still_answers_in_the_face_shape() -> None:
    routes = build_routes(PORTS)
    lane = routes[("8585", "/v1/completions")]

    async def broken(request: HttpRequest) -> JsonResponse:
        assert request.face == "api"
        raise RuntimeError("boom")

    request = make_request("POST", "/v1/completions")
    with override_settings(DEBUG=False):
        response = await FastLane().run(type(lane)(lane.face, lane.urlconf, broken, lane.api), request)
    assert response.status_code == 500
    assert json.loads(response.content)["error"]["code"] == "internal_error"
