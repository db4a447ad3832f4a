"""The OpenAI face through the official `openai` SDK against the real stack."""

from __future__ import annotations

import asyncio
import json
import socket
import time

import httpx
import openai
import pytest

from models_catalog.tiny_model import write_tiny_model

pytestmark = pytest.mark.integration


# llama-server divides its context among its slots, and caps each at the model's trained context:
# tiny-chat is trained for 16K tokens, and each of its four slots gets that much.
CHAT_SLOTS = 4
CHAT_SLOT_CTX = 16384
BODY_LIMIT = 4 * 1024**2  # above Django's 2.5 MB default, which refused ordinary vision requests


def put_models(stack) -> None:
    write_tiny_model(
        stack.models_dir / "tiny-chat.gguf", name="tiny-chat", seed=1, context_length=CHAT_SLOT_CTX
    )
    write_tiny_model(stack.models_dir / "tiny-embed.gguf", name="tiny-embed", seed=2)
    # A reranker declares itself so in its file (rank pooling), as converted ones do.
    write_tiny_model(stack.models_dir / "tiny-rerank.gguf", name="tiny-rerank", seed=3, pooling="rank")


@pytest.fixture(scope="module")
def stack(request, tmp_path_factory, llama_server_binary):
    from tests.integration.conftest import Stack, stack_env

    root = tmp_path_factory.mktemp("openai-stack")
    env, ports = stack_env(
        root,
        llama_server_binary,
        LLAMAPROXY_MAX_LOADED_MODELS="3",
        LLAMAPROXY_MAX_REQUEST_BODY=f"{BODY_LIMIT}B",
    )
    stack = Stack(root=root, env=env, ports=ports)
    put_models(stack)
    stack.manage("migrate", "--noinput")
    stack.manage("scan_models")
    stack.start()
    # Each of tiny-chat's slots holds 16K tokens, so that an endless answer lasts several
    # seconds: the disconnect tests need it to outlast llama-server's 1 s check. (With 4K slots
    # an answer filled its slot in ~1.3 s and sometimes beat that check.)
    for model, parameters in (
        ("tiny-embed", {"embeddings": True, "pooling": "mean"}),
        ("tiny-chat", {"ctx_size": CHAT_SLOT_CTX * CHAT_SLOTS, "parallel": CHAT_SLOTS}),
    ):
        response = httpx.patch(
            stack.url("dashboard") + f"/api/manage/models/{model}",
            json={"parameters": parameters},
            headers=stack.admin_headers(),
        )
        assert response.status_code == 200, response.text
    yield stack
    stack.stop()


@pytest.fixture
def client(stack) -> openai.OpenAI:
    return openai.OpenAI(base_url=stack.url("api") + "/v1", api_key="sk-anything", max_retries=0, timeout=60)


def wait_for_rows(stack, count: int, timeout: float = 10, **filters: str) -> list[dict]:
    deadline = time.monotonic() + timeout
    rows = stack.usage_rows(**filters)
    while len(rows) < count and time.monotonic() < deadline:
        time.sleep(0.2)
        rows = stack.usage_rows(**filters)
    return rows


def test_it_lists_every_catalog_model(client: openai.OpenAI) -> None:
    models = {m.id: m for m in client.models.list()}
    assert {"tiny-chat", "tiny-embed"} <= set(models)
    chat = models["tiny-chat"]
    assert chat.object == "model"
    assert chat.owned_by == "llamaproxy"
    assert chat.model_extra["context_length"] == CHAT_SLOT_CTX
    assert isinstance(chat.model_extra["loaded"], bool)


def test_it_answers_a_chat_completion_with_usage(client: openai.OpenAI) -> None:
    completion = client.chat.completions.create(
        model="tiny-chat",
        messages=[{"role": "user", "content": "hello"}],
        max_tokens=12,
        temperature=0,
        extra_body={"ignore_eos": True},
    )
    assert completion.model == "tiny-chat"
    assert completion.choices[0].message.role == "assistant"
    assert completion.usage.completion_tokens == 12
    assert completion.usage.prompt_tokens > 0


def test_it_streams_a_chat_completion(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(
        model="tiny-chat:latest",
        messages=[{"role": "user", "content": "hello"}],
        max_tokens=10,
        stream=True,
        extra_body={"ignore_eos": True},
    )
    chunks = list(stream)
    assert chunks[-1].choices == [] or chunks[-1].choices[0].finish_reason == "length"
    assert sum(1 for c in chunks if c.choices and c.choices[0].delta.content) >= 1


def raw_exchange(port: int, request: bytes) -> tuple[bytes, bytes]:
    """One request over a plain socket; the response's head and its body as sent (until close)."""
    with socket.create_connection(("127.0.0.1", port), timeout=60) as sock:
        sock.sendall(request)
        received = b""
        while data := sock.recv(65536):
            received += data
    head, _, body = received.partition(b"\r\n\r\n")
    return head, body


def chunks_of(body: bytes) -> list[bytes]:
    """A chunked body's chunks, each checked against its size line."""
    chunks = []
    while True:
        size_line, _, rest = body.partition(b"\r\n")
        size = int(size_line, 16)
        if size == 0:
            assert rest == b"\r\n", rest[:80]
            return chunks
        assert rest[size : size + 2] == b"\r\n"
        chunks.append(rest[:size])
        body = rest[size + 2 :]


@pytest.mark.parametrize("version", ["HTTP/1.1", "HTTP/1.0"])
def test_a_stream_keeps_the_runners_events_whole_over_either_http_version(stack, version: str) -> None:
    """HTTP/1.1 clients get the runner's chunks as they were sent (one event each); HTTP/1.0
    clients, which have no chunked encoding, get the same events in a body that ends at close."""
    payload = json.dumps(
        {"model": "tiny-chat", "prompt": "Once", "max_tokens": 9, "stream": True, "ignore_eos": True}
    ).encode()
    request = (
        f"POST /v1/completions {version}\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n\r\n"
    ).encode() + payload
    head, body = raw_exchange(stack.ports["api"], request)
    assert head.startswith(version.encode() + b" 200"), head
    if version == "HTTP/1.1":
        assert b"transfer-encoding: chunked" in head.lower()
        events = chunks_of(body)
        assert all(event.startswith(b"data: ") and event.endswith(b"\n\n") for event in events), events
        body = b"".join(events)
    else:
        assert b"transfer-encoding" not in head.lower()
    frames = [frame for frame in body.split(b"\n\n") if frame]
    assert frames[-1] == b"data: [DONE]"
    texts = [json.loads(frame[len(b"data: ") :])["choices"][0] for frame in frames[:-1]]
    assert sum(1 for choice in texts if choice["text"]) >= 1
    assert texts[-1]["finish_reason"] == "length"


def test_it_answers_completions(client: openai.OpenAI) -> None:
    completion = client.completions.create(
        model="tiny-chat", prompt="Once upon a time", max_tokens=7, extra_body={"ignore_eos": True}
    )
    assert completion.usage.completion_tokens == 7
    assert isinstance(completion.choices[0].text, str)


def test_it_answers_embeddings_from_a_runner_started_with_embeddings(client: openai.OpenAI) -> None:
    result = client.embeddings.create(model="tiny-embed", input=["one", "two words"])
    assert len(result.data) == 2
    assert len(result.data[0].embedding) == 64


def test_it_reranks_documents_with_a_runner_started_for_reranking(stack) -> None:
    documents = ["a cat is an animal", "paris is a city", "hello there", "the weather today"]
    response = httpx.post(
        stack.url("api") + "/v1/rerank",
        json={"model": "tiny-rerank", "query": "what is a cat", "documents": documents, "top_n": 3},
        timeout=60,
    )
    assert response.status_code == 200, response.text
    answer = response.json()
    results = answer["results"]
    assert len(results) == 3
    assert len({r["index"] for r in results}) == 3 and all(0 <= r["index"] < 4 for r in results)
    scores = [r["relevance_score"] for r in results]
    assert scores == sorted(scores, reverse=True)
    assert answer["usage"]["prompt_tokens"] > 0
    command = next(line for line in stack.runner_log("tiny-rerank").read_text().splitlines() if "-m " in line)
    assert "--reranking" in command.split() and "--pooling" not in command.split()
    [row] = wait_for_rows(stack, 1, model="tiny-rerank", endpoint="rerank")
    assert row["status"] == 200 and row["prompt_tokens"] == answer["usage"]["prompt_tokens"]


def test_rerank_takes_teis_texts_on_every_port_and_refuses_a_request_without_documents(stack) -> None:
    for face in ("api", "ollama", "lmstudio"):
        response = httpx.post(
            stack.url(face) + "/v1/rerank",
            json={"model": "tiny-rerank", "query": "cats", "texts": ["a cat", "a dog"]},
            timeout=60,
        )
        assert response.status_code == 200, response.text
        assert sorted(item["index"] for item in response.json()) == [0, 1]  # TEI's shape: a list
    response = httpx.post(stack.url("api") + "/v1/rerank", json={"model": "tiny-rerank", "query": "cats"})
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "documents"


def test_a_reranker_is_listed_as_one_and_refuses_embeddings_on_every_face_in_its_shape(
    stack, client: openai.OpenAI
) -> None:
    models = {m.id: m for m in client.models.list()}
    assert "rerank" in models["tiny-rerank"].model_extra["capabilities"]
    assert "embedding" not in models["tiny-rerank"].model_extra["capabilities"]
    listed = httpx.get(
        stack.url("dashboard") + "/api/manage/models",
        params={"capability": "rerank"},
        headers=stack.admin_headers(),
    ).json()
    assert [m["name"] for m in listed] == ["tiny-rerank"]

    with pytest.raises(openai.BadRequestError) as refused:
        client.embeddings.create(model="tiny-rerank", input=["a cat"])
    assert refused.value.code == "model_not_supported" and refused.value.param == "model"
    assert "reranker" in refused.value.message and "/v1/rerank" in refused.value.message
    for url, body in (
        (stack.url("ollama") + "/api/embed", {"model": "tiny-rerank", "input": "a cat"}),
        (stack.url("ollama") + "/api/embeddings", {"model": "tiny-rerank", "prompt": "a cat"}),
        (stack.url("lmstudio") + "/api/v0/embeddings", {"model": "tiny-rerank", "input": "a cat"}),
    ):
        response = httpx.post(url, json=body, timeout=30)
        assert response.status_code == 400, (url, response.text)
        error = response.json()["error"]
        assert "reranker" in (error if isinstance(error, str) else error["message"]), url
    rows = wait_for_rows(stack, 4, model="tiny-rerank", status="400")
    assert {(row["face"], row["endpoint"]) for row in rows} == {
        ("api", "embeddings"),
        ("ollama", "embed"),
        ("ollama", "embeddings"),
        ("lmstudio", "embeddings"),
    }


def aliases_of(client: openai.OpenAI, model: str) -> list[str]:
    return next(m for m in client.models.list() if m.id == model).model_extra["aliases"]


def test_a_model_is_found_by_its_alias_and_answers_under_its_catalog_name(
    stack, client: openai.OpenAI
) -> None:
    models_url = stack.url("dashboard") + "/api/manage/models/tiny-chat/aliases"
    added = httpx.post(models_url, json={"alias": "house-chat"}, headers=stack.admin_headers())
    assert added.status_code == 201, added.text
    try:
        deadline = time.monotonic() + 10
        while "house-chat" not in aliases_of(client, "tiny-chat") and time.monotonic() < deadline:
            time.sleep(0.1)  # the catalog change is an event away
        assert "house-chat" in aliases_of(client, "tiny-chat")
        completion = client.chat.completions.create(
            model="house-chat", messages=[{"role": "user", "content": "hi"}], max_tokens=2
        )
        assert completion.model == "tiny-chat"  # the model that answered, as OpenAI names it
        assert client.models.retrieve("house-chat").id == "tiny-chat"
    finally:
        httpx.delete(models_url + "/house-chat", headers=stack.admin_headers())


def test_a_request_that_names_no_model_gets_the_configured_default(stack) -> None:
    settings_url = stack.url("dashboard") + "/api/manage/settings"
    body = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 3, "ignore_eos": True}
    refused = httpx.post(stack.url("api") + "/v1/chat/completions", json=body, timeout=30)
    assert refused.status_code == 400 and refused.json()["error"]["param"] == "model"
    response = httpx.patch(settings_url, json={"default_model": "tiny-chat"}, headers=stack.admin_headers())
    assert response.status_code == 200, response.text
    try:
        deadline = time.monotonic() + 10
        answer = httpx.post(stack.url("api") + "/v1/chat/completions", json=body, timeout=30)
        while answer.status_code == 400 and time.monotonic() < deadline:  # the change is an event away
            time.sleep(0.1)
            answer = httpx.post(stack.url("api") + "/v1/chat/completions", json=body, timeout=30)
        assert answer.status_code == 200, answer.text
        assert answer.json()["model"] == "tiny-chat"
        assert answer.json()["usage"]["completion_tokens"] == 3
    finally:
        response = httpx.patch(settings_url, json={"default_model": None}, headers=stack.admin_headers())
        assert response.status_code == 200, response.text


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"model": "tiny-chat", "messages": "hello"}, "messages"),
        (
            {"model": "tiny-chat", "messages": [{"role": "user", "content": "x"}], "max_tokens": "many"},
            "max_tokens",
        ),
        ({"model": "tiny-chat", "messages": [{"role": "user", "content": "x"}], "stream": "yes"}, "stream"),
        ({"model": 7, "messages": [{"role": "user", "content": "x"}]}, "model"),
        ({"model": "tiny-chat"}, "messages"),
    ],
)
def test_wrong_types_get_a_400_naming_the_field(stack, body: dict, field: str) -> None:
    response = httpx.post(stack.url("api") + "/v1/chat/completions", json=body, timeout=30)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert error["param"] == field
    assert field in error["message"]


def test_malformed_json_gets_a_400_in_openai_shape(stack) -> None:
    response = httpx.post(
        stack.url("api") + "/v1/chat/completions",
        content=b"{not json",
        headers={"content-type": "application/json"},
    )
    assert response.status_code == 400
    assert response.headers["content-type"].startswith("application/json")
    assert "not valid JSON" in response.json()["error"]["message"]


def test_an_unknown_model_is_a_404(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        client.chat.completions.create(model="no-such-model", messages=[{"role": "user", "content": "x"}])
    assert "no-such-model" in caught.value.message


def test_a_body_over_djangos_default_limit_is_taken_and_one_over_the_limit_is_a_413_in_each_faces_shape(
    stack,
) -> None:
    chat = {"model": "tiny-chat", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
    image = "data:image/png;base64," + "A" * (3 * 1024**2)  # as an image's bytes would fill it
    taken = httpx.post(stack.url("api") + "/v1/chat/completions", json={**chat, "padding": image}, timeout=60)
    assert taken.status_code == 200, taken.text
    too_big = {**chat, "padding": "A" * (BODY_LIMIT + 1)}
    for face, path in (("api", "/v1/chat/completions"), ("lmstudio", "/api/v0/chat/completions")):
        response = httpx.post(stack.url(face) + path, json=too_big, timeout=60)
        assert response.status_code == 413, response.text
        assert response.json()["error"]["code"] == "request_too_large"
        assert f"larger than {BODY_LIMIT} bytes" in response.json()["error"]["message"]
    response = httpx.post(stack.url("ollama") + "/api/chat", json=too_big, timeout=60)
    assert response.status_code == 413 and "larger than" in response.json()["error"]
    response = httpx.post(
        stack.url("dashboard") + "/api/manage/import", json=too_big, headers=stack.admin_headers()
    )
    assert response.status_code == 413 and "larger than" in response.json()["error"]["message"]


@pytest.mark.parametrize(
    ("face", "method", "path"),
    [
        ("api", "GET", "/v1/chat/completions"),
        ("api", "DELETE", "/v1/models"),
        ("lmstudio", "GET", "/api/v0/chat/completions"),
        ("ollama", "GET", "/api/chat"),
        ("ollama", "PUT", "/v1/completions"),
        ("dashboard", "DELETE", "/api/manage/models"),
    ],
)
def test_a_method_a_route_does_not_take_is_a_405_in_the_faces_shape_naming_the_allowed(
    stack, face: str, method: str, path: str
) -> None:
    response = httpx.request(method, stack.url(face) + path, headers=stack.admin_headers())
    assert response.status_code == 405
    assert response.headers["content-type"].startswith("application/json")
    allowed = response.headers["allow"]
    assert allowed in ("GET", "POST")
    error = response.json()["error"]
    message = error if face == "ollama" else error["message"]
    assert message == f"{method} is not allowed on {path}; use {allowed}"


def test_an_unknown_endpoint_is_a_json_404(stack) -> None:
    response = httpx.get(stack.url("api") + "/v1/nothing-here")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"
    response = httpx.get(stack.url("dashboard") + "/api/manage/nothing-here", headers=stack.admin_headers())
    assert response.status_code == 404
    assert response.json()["error"]["message"] == "unknown endpoint GET /api/manage/nothing-here"


def test_an_error_from_llama_server_is_passed_through_with_its_status(client: openai.OpenAI) -> None:
    # A prompt far longer than the runner's context: llama-server refuses it itself.
    with pytest.raises(openai.BadRequestError) as caught:
        client.completions.create(model="tiny-chat", prompt=[[5] * (CHAT_SLOT_CTX + 1000)], max_tokens=2)
    assert caught.value.status_code == 400
    assert caught.value.message


def test_the_same_routes_answer_on_the_ollama_and_lm_studio_ports(stack) -> None:
    for face in ("ollama", "lmstudio"):
        client = openai.OpenAI(base_url=stack.url(face) + "/v1", api_key="x", max_retries=0)
        completion = client.chat.completions.create(
            model="tiny-chat",
            messages=[{"role": "user", "content": "hi"}],
            max_tokens=3,
            extra_body={"ignore_eos": True},
        )
        assert completion.usage.completion_tokens == 3
    rows = wait_for_rows(stack, 1, face="lmstudio", endpoint="chat/completions")
    assert rows[0]["face"] == "lmstudio"


def test_a_client_that_disconnects_mid_stream_stops_the_generation(stack) -> None:
    body = {
        "model": "tiny-chat",
        "messages": [{"role": "user", "content": "go on forever"}],
        "max_tokens": 200_000,
        "stream": True,
        "ignore_eos": True,
    }
    offset = stack.runner_log_size("tiny-chat")
    with (
        httpx.Client(timeout=30) as http,
        http.stream("POST", stack.url("api") + "/v1/chat/completions", json=body) as response,
    ):
        assert response.status_code == 200
        for index, _ in enumerate(response.iter_raw()):
            if index > 5:
                break
    # llama-server's own view of its slots: nothing may still be processing.
    deadline = time.monotonic() + 5
    busy = True
    while busy and time.monotonic() < deadline:
        slots = httpx.get(stack.url("api") + "/upstream/tiny-chat/slots", timeout=10).json()
        busy = any(slot.get("is_processing") for slot in slots)
        if busy:
            time.sleep(0.1)
    assert not busy, "llama-server kept generating after the client went away"
    # Not busy is not enough: left alone, the tiny model fills its whole context in a few seconds.
    # llama-server logs how far the task got when it released the slot: far short of the context.
    released = stack.slot_releases("tiny-chat", offset)
    n_ctx = max(slot.get("n_ctx", 0) for slot in slots)
    assert n_ctx == CHAT_SLOT_CTX, "each slot's context is what the disconnect tests count on"
    assert released, "llama-server logged no slot release for the request"
    assert released[-1] < n_ctx // 2, (released[-1], n_ctx)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        rows = stack.usage_rows(endpoint="chat/completions", status="200")
        if any(row["error"] == "client disconnected" for row in rows):
            break
        time.sleep(0.2)
    assert any(row["error"] == "client disconnected" for row in rows)


def runner_status(stack, model: str) -> dict:
    response = httpx.get(
        stack.url("dashboard") + "/api/manage/runners", headers=stack.admin_headers(), timeout=30
    )
    assert response.status_code == 200, response.text
    return {row["model"]: row for row in response.json()}[model]


def gives_up_waiting(stack, face: str, path: str, body: dict) -> None:
    """Send a non-streamed request that would generate for long, and give up on its answer."""
    offset = stack.runner_log_size("tiny-chat")
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(stack.url(face) + path, json=body, timeout=httpx.Timeout(30, read=0.3))
    # llama-server checks its non-streamed clients once a second and says when it drops a task
    # (the answer would take several seconds: see the stack's ctx_size).
    # It logs the slot's release a moment after the cancellation: wait for both.
    deadline = time.monotonic() + 8
    log, released = b"", []
    while time.monotonic() < deadline and not (b"cancel task" in log and released):
        time.sleep(0.2)
        with stack.runner_log("tiny-chat").open("rb") as handle:
            handle.seek(offset)
            log = handle.read()
        released = stack.slot_releases("tiny-chat", offset)
    assert b"cancel task" in log, "llama-server finished a task whose client had gone away"
    assert released and released[-1] < CHAT_SLOT_CTX // 2, released


@pytest.mark.parametrize(
    ("face", "path", "body", "endpoint"),
    [
        (
            "api",
            "/v1/chat/completions",
            {"messages": [{"role": "user", "content": "go on"}], "max_tokens": 200_000, "ignore_eos": True},
            "chat/completions",
        ),
        (
            "lmstudio",
            "/api/v0/completions",
            {"prompt": "go on", "max_tokens": 200_000, "ignore_eos": True},
            "completions",
        ),
        (
            "ollama",
            "/api/generate",
            {"prompt": "go on", "stream": False, "options": {"num_predict": 200_000, "ignore_eos": True}},
            "generate",
        ),
    ],
)
def test_a_client_that_gives_up_on_a_whole_answer_stops_the_generation_and_frees_the_runner(
    stack, client, face: str, path: str, body: dict, endpoint: str
) -> None:
    # Loaded first, so that the wait given up on is the generation, not the model's start.
    client.completions.create(model="tiny-chat", prompt="hi", max_tokens=1)
    gives_up_waiting(stack, face, path, {"model": "tiny-chat", **body})
    rows = wait_for_rows(stack, 1, model="tiny-chat", status="499", endpoint=endpoint, face=face)
    assert rows[0]["error"] == "client disconnected"
    assert runner_status(stack, "tiny-chat")["in_flight"] == 0


def test_fifty_concurrent_streams_make_fifty_usage_rows_with_the_right_counts(stack) -> None:
    marker_model = "tiny-embed"  # a model the other tests do not stream from, so rows are ours alone
    before = len(stack.usage_rows(model=marker_model, endpoint="completions"))

    async def one(client: openai.AsyncOpenAI, index: int) -> int:
        stream = await client.completions.create(
            model=marker_model,
            prompt=f"request {index}",
            max_tokens=8,
            stream=True,
            extra_body={"ignore_eos": True},
        )
        return len([chunk async for chunk in stream])

    async def run_all() -> list[int]:
        client = openai.AsyncOpenAI(
            base_url=stack.url("api") + "/v1", api_key="x", max_retries=0, timeout=120
        )
        try:
            return await asyncio.gather(*(one(client, i) for i in range(50)))
        finally:
            await client.close()

    counts = asyncio.run(run_all())
    assert len(counts) == 50 and all(count >= 1 for count in counts)
    rows = wait_for_rows(stack, before + 50, model=marker_model, endpoint="completions")
    assert len(rows) == before + 50
    ours = rows[:50]
    assert all(row["completion_tokens"] == 8 for row in ours)
    assert all(row["prompt_tokens"] and row["prompt_tokens"] > 0 for row in ours)
    assert all(row["stream"] and row["status"] == 200 for row in ours)


def test_metrics_count_requests_and_tokens(stack) -> None:
    text = httpx.get(stack.url("api") + "/metrics").text
    assert (
        'llamaproxy_requests_total{endpoint="chat/completions",face="api",model="tiny-chat",status="200"}'
        in text
    )
    assert "llamaproxy_completion_tokens_total" in text
    assert "llamaproxy_time_to_first_token_seconds_bucket" in text
    assert 'llamaproxy_runner_state{model="tiny-chat",state="ready"} 1.0' in text


def test_usage_totals_per_day(stack) -> None:
    response = httpx.get(
        stack.url("dashboard") + "/api/manage/usage/totals",
        params={"by": "day"},
        headers=stack.admin_headers(),
    )
    assert response.status_code == 200
    totals = response.json()
    assert totals and totals[0]["requests"] > 0 and totals[0]["completion_tokens"] > 0


def test_usage_queries_reject_bad_filters(stack) -> None:
    response = httpx.get(
        stack.url("dashboard") + "/api/manage/usage",
        params={"since": "yesterday"},
        headers=stack.admin_headers(),
    )
    assert response.status_code == 400
    assert response.json()["error"]["field"] == "since"


def test_the_responses_api_goes_on_from_a_previous_response_streamed_or_not(client, stack) -> None:
    """llama-server keeps no responses: llamaproxy keeps each answer's conversation (unless
    `store` is false) so `previous_response_id` works, as with OpenAI's own API."""
    first = client.responses.create(model="tiny-chat", input="My name is Bob.", max_output_tokens=5)
    assert first.id and first.output
    turn = {"model": "tiny-chat", "input": "What is my name?", "max_output_tokens": 5}
    alone = client.responses.create(**turn, store=False)
    going_on = client.responses.create(**turn, previous_response_id=first.id)
    assert going_on.usage.input_tokens > alone.usage.input_tokens + first.usage.output_tokens

    # Streamed: the completed response is kept too, and a chain goes on from any point.
    with client.responses.create(**turn, previous_response_id=going_on.id, stream=True) as events:
        completed = [event.response for event in events if event.type == "response.completed"]
    assert len(completed) == 1 and completed[0].id
    third = client.responses.create(**turn, previous_response_id=completed[0].id)
    assert third.usage.input_tokens > going_on.usage.input_tokens

    with pytest.raises(openai.NotFoundError) as missing:
        client.responses.create(**turn, previous_response_id=alone.id)  # store: false kept nothing
    assert "previous_response_id" in str(missing.value.body) or missing.value.status_code == 404
    bad = httpx.post(
        stack.url("api") + "/v1/responses",
        json={**turn, "previous_response_id": 12},
        timeout=30,
    )
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "previous_response_id"


def test_a_stored_response_is_read_back_listed_by_its_input_and_deleted(client, stack) -> None:
    """GET /v1/responses/{id}, its input_items and DELETE, through the SDK (llama-server has none)."""
    first = client.responses.create(model="tiny-chat", input="My name is Bob.", max_output_tokens=5)
    second = client.responses.create(
        model="tiny-chat", input="What is my name?", max_output_tokens=5, previous_response_id=first.id
    )
    again = client.responses.retrieve(second.id)
    assert (again.id, again.output_text, again.usage) == (second.id, second.output_text, second.usage)

    # What the model read: the first turn, its answer, the question; a page of one at a time.
    read = list(client.responses.input_items.list(second.id, order="asc", limit=1))
    assert [item.role for item in read] == ["user", "assistant", "user"]
    assert read[0].content[0].text == "My name is Bob." and read[2].content[0].text == "What is my name?"
    assert read[1].id == first.output[0].id and read[1].content[0].text == first.output_text
    assert len({item.id for item in read}) == 3
    newest = client.responses.input_items.list(second.id, limit=2)  # newest first
    assert [item.id for item in newest.data] == [read[2].id, read[1].id] and newest.has_more

    # A streamed response is kept as its response.completed event gave it.
    with client.responses.create(model="tiny-chat", input="Hi", max_output_tokens=4, stream=True) as events:
        [completed] = [event.response for event in events if event.type == "response.completed"]
    assert client.responses.retrieve(completed.id).output_text == completed.output_text

    client.responses.delete(second.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(second.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.delete(second.id)
    assert client.responses.retrieve(first.id).id == first.id  # the earlier point stays
    alone = client.responses.create(model="tiny-chat", input="Hi", max_output_tokens=3, store=False)
    with pytest.raises(openai.NotFoundError):
        client.responses.input_items.list(alone.id)
    base = stack.url("api") + "/v1/responses/" + first.id
    for query in ({"limit": "0"}, {"order": "up"}, {"after": "item_nope"}):
        bad = httpx.get(base + "/input_items", params=query, timeout=30)
        assert bad.status_code == 400 and bad.json()["error"]["param"] == next(iter(query))
    assert httpx.get(base, params={"stream": "true"}, timeout=30).status_code == 400
