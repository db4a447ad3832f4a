"""Models from Hugging Face through the real stack: `ollama pull hf.co/...`, LM Studio's download
API and the manage API's downloads, against a stand-in for the hub (tests/hub_stand_in.py)
serving tiny random-weight GGUF files, since tests may not reach the internet."""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import httpx
import ollama
import pytest

from models_catalog.testing import write_mmproj
from models_catalog.tiny_model import write_tiny_model
from tests.hub_stand_in import StandInHub

pytestmark = pytest.mark.django_db(transaction=True)

CHAT = "acme/Tiny-Chat-GGUF"
TOKEN = "hf_test_token"


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def hub(tmp_path_factory) -> StandInHub:
    root = tmp_path_factory.mktemp("hub")
    chat = root / CHAT
    write_tiny_model(chat / "tiny-chat-Q4_K_M.gguf", name="tiny-chat", seed=1, file_type="Q8_0")
    write_tiny_model(chat / "tiny-chat-Q8_0.gguf", name="tiny-chat", seed=2, file_type="Q8_0")
    (chat / "README.md").write_text("# Tiny chat\n")
    (chat / ".gitattributes").write_text("*.gguf filter=lfs\n")
    (chat / "config.json").write_text("{}")  # five files: the tree comes in two pages
    vision = root / "acme/Tiny-Vision-GGUF"
    write_tiny_model(vision / "Tiny-Vision-F16.gguf", name="tiny-vision", seed=3, file_type="F16")
    vision.mkdir(parents=True, exist_ok=True)
    write_mmproj(vision / "mmproj-Tiny-Vision-F16.gguf")
    write_mmproj(vision / "mmproj-Tiny-Vision-Q8_0.gguf")
    write_tiny_model(
        root / "acme/Tiny-Split-GGUF/Q8_0/tiny-split-Q8_0.gguf", name="tiny-split", seed=4, split=2
    )
    write_tiny_model(root / "acme/Gated-GGUF/gated-Q4_K_M.gguf", name="gated", seed=5, file_type="Q8_0")
    write_tiny_model(root / "acme/Secret-GGUF/secret-Q4_K_M.gguf", name="secret", seed=6, file_type="Q8_0")
    write_tiny_model(root / "acme/Slow-GGUF/slow-Q4_K_M.gguf", name="slow", seed=7)
    (root / "acme/Safetensors-Only").mkdir(parents=True)
    (root / "acme/Safetensors-Only/model.safetensors").write_bytes(b"\0" * 64)
    registry = tmp_path_factory.mktemp("registry")
    tiny = registry / "library/tinyllama/latest"
    write_tiny_model(tiny / "model.gguf", name="tinyllama", seed=8, file_type="Q8_0")
    (tiny / "params.json").write_text(
        json.dumps({"stop": ["<|im_end|>"], "temperature": 0.3, "num_ctx": 512, "use_mmap": True})
    )
    (tiny / "system.txt").write_text("You are tiny.")
    (tiny / "template.txt").write_text("{{ .Prompt }}")  # Ollama's Go template: not used
    (tiny / "license.txt").write_text("MIT")
    same = registry / "library/tinyllama/1b"  # another tag of the same weights
    same.mkdir(parents=True)
    (same / "model.gguf").write_bytes((tiny / "model.gguf").read_bytes())
    vision = registry / "someone/tinyvision/latest"
    write_tiny_model(vision / "model.gguf", name="tinyvision", seed=9, file_type="Q8_0")
    write_mmproj(vision / "projector.gguf")
    server = StandInHub(
        root, gated={"acme/Gated-GGUF": TOKEN, "acme/Secret-GGUF": "another-token"}, registry_root=registry
    )
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def stack(tmp_path_factory, llama_server_binary, hub):
    from tests.integration.conftest import Stack, stack_env

    root = tmp_path_factory.mktemp("downloads-stack")
    env, ports = stack_env(
        root,
        llama_server_binary,
        LLAMAPROXY_HF_ENDPOINT=hub.url,
        LLAMAPROXY_HF_TOKEN=TOKEN,
        LLAMAPROXY_OLLAMA_REGISTRY=hub.url,
    )
    stack = Stack(root=root, env=env, ports=ports)
    stack.prepare_catalog()
    stack.start()
    yield stack
    stack.stop()


@pytest.fixture
def client(stack) -> ollama.Client:
    return ollama.Client(host=stack.url("ollama"), timeout=60)


def manage(stack, method: str, path: str, **kwargs) -> httpx.Response:
    return httpx.request(
        method, f"{stack.url('api')}/api/manage/{path}", headers=stack.admin_headers(), timeout=30, **kwargs
    )


def entry(stack, name: str) -> dict:
    """The catalog entry with this name or alias (`hf.co/...` aliases have slashes, which the
    manage API's paths do not take: found through the list's search)."""
    wanted = name.lower().removesuffix(":latest")
    listed = manage(stack, "GET", "models", params={"q": wanted.split(":")[0]}).json()
    found = [m for m in listed if wanted == m["name"] or wanted in (a.lower() for a in m["aliases"])]
    assert len(found) == 1, (name, listed)
    return manage(stack, "GET", f"models/{found[0]['name']}").json()


def downloaded(stack, *parts: str) -> Path:
    return stack.home.joinpath("downloads", "huggingface", *parts)


def wait_for(predicate, timeout: float = 30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := predicate():
            return value
        time.sleep(0.1)
    raise AssertionError("timed out")


def test_pull_fetches_the_quantization_asked_for_resuming_a_broken_transfer_and_the_model_answers(
    client: ollama.Client, stack, hub: StandInHub
) -> None:
    source = hub.root / CHAT / "tiny-chat-Q8_0.gguf"
    hub.break_once.add(f"{CHAT}/tiny-chat-Q8_0.gguf")

    events = [dict(e) for e in client.pull(f"hf.co/{CHAT}:Q8_0", stream=True)]

    statuses = [e["status"] for e in events]
    assert statuses[0] == "pulling manifest"
    assert statuses[-3:] == ["verifying sha256 digest", "writing manifest", "success"]
    digest = sha256(source)
    progress = [e for e in events if e.get("digest") == f"sha256:{digest}"]
    assert progress and progress[0]["status"] == f"pulling {digest[:12]}"
    assert progress[-1]["total"] == progress[-1]["completed"] == source.stat().st_size
    # The transfer broke halfway; the second request asked for the rest only.
    ranges = hub.downloads_of(CHAT, "tiny-chat-Q8_0.gguf")
    assert ranges[0] == "" and ranges[1].startswith("bytes=") and ranges[1] != "bytes=0-"

    file = downloaded(stack, "acme", "Tiny-Chat-GGUF", "tiny-chat-Q8_0.gguf")
    assert sha256(file) == digest
    assert not file.with_name(file.name + ".part").exists()
    model = entry(stack, f"hf.co/{CHAT}:Q8_0")
    assert model["source"] == "download" and model["path"] == str(file)
    assert f"hf.co/{CHAT}:Q8_0" in model["aliases"]
    assert model["digest"] == f"sha256:{digest}"

    listed = {m.model for m in client.list().models}
    assert f"hf.co/{CHAT}:Q8_0" in listed and f"{model['name']}:latest" in listed
    answer = client.chat(
        model=f"hf.co/{CHAT}:q8_0",  # any case, as Ollama takes it
        messages=[{"role": "user", "content": "hello"}],
        options={"num_predict": 4},
    )
    assert answer.message.content and answer.done


def test_pull_without_a_tag_takes_q4_k_m_and_pulling_it_again_asks_the_hub_nothing(
    client: ollama.Client, stack, hub: StandInHub
) -> None:
    assert client.pull(f"huggingface.co/{CHAT}", stream=False).status == "success"
    model = entry(stack, f"hf.co/{CHAT}:latest")
    assert Path(model["path"]).name == "tiny-chat-Q4_K_M.gguf"

    asked = len(hub.requests)
    assert client.pull(f"hf.co/{CHAT}:latest", stream=False).status == "success"
    assert client.pull(f"https://huggingface.co/{CHAT}", stream=False).status == "success"
    assert len(hub.requests) == asked
    shown = client.show(f"huggingface.co/{CHAT}")
    assert shown.details.family == "llama"


def test_a_split_model_comes_whole_and_rm_deletes_its_files(client: ollama.Client, stack) -> None:
    assert client.pull("hf.co/acme/Tiny-Split-GGUF", stream=False).status == "success"
    folder = downloaded(stack, "acme", "Tiny-Split-GGUF", "Q8_0")
    assert sorted(p.name for p in folder.iterdir()) == [
        "tiny-split-Q8_0-00001-of-00002.gguf",
        "tiny-split-Q8_0-00002-of-00002.gguf",
    ]
    model = entry(stack, "hf.co/acme/Tiny-Split-GGUF")
    assert model["split_count"] == 2 and model["quantization"]
    answer = client.generate(model="hf.co/acme/Tiny-Split-GGUF", prompt="hi", options={"num_predict": 3})
    assert answer.done

    client.delete("hf.co/acme/Tiny-Split-GGUF")

    assert manage(stack, "GET", f"models/{model['name']}").status_code == 404
    assert not downloaded(stack, "acme", "Tiny-Split-GGUF").exists()
    with pytest.raises(ollama.ResponseError) as missing:
        client.show("hf.co/acme/Tiny-Split-GGUF")
    assert missing.value.status_code == 404


def test_lm_studios_download_api_runs_a_job_that_brings_the_projector_too(stack) -> None:
    url = stack.url("lmstudio")
    started = httpx.post(
        f"{url}/api/v1/models/download", json={"model": "https://huggingface.co/acme/Tiny-Vision-GGUF"}
    )
    assert started.status_code == 200, started.text
    job = started.json()
    assert job["job_id"].startswith("job_") and job["status"] in ("downloading", "completed")
    assert job["total_size_bytes"] > 0 and "started_at" in job

    def finished() -> dict | None:
        status = httpx.get(f"{url}/api/v1/models/download/status/{job['job_id']}").json()
        return status if status["status"] != "downloading" else None

    done = wait_for(finished)
    assert done["status"] == "completed", done
    assert done["downloaded_bytes"] == done["total_size_bytes"] and done["completed_at"]

    folder = downloaded(stack, "acme", "Tiny-Vision-GGUF")
    assert sorted(p.name for p in folder.iterdir()) == ["Tiny-Vision-F16.gguf", "mmproj-Tiny-Vision-F16.gguf"]
    model = entry(stack, "hf.co/acme/Tiny-Vision-GGUF")
    assert model["mmproj_path"] == str(folder / "mmproj-Tiny-Vision-F16.gguf")
    assert "vision" in model["capabilities"]
    listed = httpx.get(f"{url}/api/v0/models/{model['name']}").json()
    assert listed["type"] == "vlm"

    again = httpx.post(
        f"{url}/api/v1/models/download", json={"model": "acme/Tiny-Vision-GGUF", "quantization": "F16"}
    )
    assert again.json() == {"status": "already_downloaded"}
    unknown_job = httpx.get(f"{url}/api/v1/models/download/status/job_nothing")
    assert unknown_job.status_code == 404 and unknown_job.json()["error"]["param"] == "job_id"


def test_what_cannot_be_pulled_gets_a_clear_error_in_each_faces_shape(client: ollama.Client, stack) -> None:
    ollama_url = stack.url("ollama")

    def pull(body) -> httpx.Response:
        return httpx.post(
            f"{ollama_url}/api/pull", content=body if isinstance(body, bytes) else json.dumps(body)
        )

    cases = [
        ({"model": "hf.co/acme/No-Such-GGUF"}, 404, "no model repository acme/No-Such-GGUF"),
        ({"model": f"hf.co/{CHAT}:Q2_K"}, 404, "has no Q2_K file; it has Q4_K_M, Q8_0"),
        ({"model": "hf.co/acme/Safetensors-Only"}, 404, "has no GGUF model files"),
        ({"model": "hf.co/acme/Secret-GGUF"}, 403, "LLAMAPROXY_HF_TOKEN"),
        ({"model": "no-such-model:7b"}, 404, "pull model manifest: file does not exist"),
        ({"model": "Not a name!"}, 400, "invalid model name"),
        ({"model": ""}, 400, "model is required"),
        (b'{"model": ', 400, ""),
    ]
    for body, status, message in cases:
        response = pull(body)
        assert response.status_code == status, (body, response.text)
        assert message in response.json()["error"], (body, response.text)
    # A streamed pull that fails says so in its last line.
    lines = [
        json.loads(line)
        for line in pull({"model": "hf.co/acme/No-Such-GGUF", "stream": True}).text.splitlines()
    ]
    assert "no model repository" in lines[-1]["error"]

    # A key limited to some models may not bring others.
    limited = manage(stack, "POST", "keys", json={"name": "limited", "allowed_models": ["x"]}).json()["key"]
    refused = httpx.post(
        f"{ollama_url}/api/pull",
        json={"model": "hf.co/acme/Gated-GGUF"},
        headers={"Authorization": f"Bearer {limited}"},
    )
    assert refused.status_code == 403 and "limited" in refused.json()["error"]
    refused = httpx.post(
        f"{stack.url('lmstudio')}/api/v1/models/download",
        json={"model": "acme/Gated-GGUF"},
        headers={"Authorization": f"Bearer {limited}"},
    )
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "permission_denied"

    # The token is sent: a gated repository the token may read is pulled.
    assert client.pull("hf.co/acme/Gated-GGUF", stream=False).status == "success"

    lmstudio = httpx.post(
        f"{stack.url('lmstudio')}/api/v1/models/download", json={"model": "acme/No-Such-GGUF"}
    )
    assert lmstudio.status_code == 404 and lmstudio.json()["error"]["code"] == "model_not_found"
    not_hub = httpx.post(f"{stack.url('lmstudio')}/api/v1/models/download", json={"model": "no-such-model"})
    assert not_hub.status_code == 404 and "Hugging Face" in not_hub.json()["error"]["message"]
    assert httpx.post(f"{stack.url('lmstudio')}/api/v1/models/download", json={"model": 3}).status_code == 400


def test_a_pull_its_client_leaves_stops_and_the_next_pull_goes_on_from_where_it_stopped(
    stack, hub: StandInHub
) -> None:
    hub.slow.add("acme/Slow-GGUF")
    part = downloaded(stack, "acme", "Slow-GGUF", "slow-Q4_K_M.gguf.part")
    with httpx.stream(
        "POST", f"{stack.url('ollama')}/api/pull", json={"model": "hf.co/acme/Slow-GGUF"}, timeout=30
    ) as response:
        for line in response.iter_lines():
            if json.loads(line).get("completed"):
                break  # the client goes away mid-download

    def cancelled() -> dict | None:
        jobs = manage(stack, "GET", "downloads").json()
        job = next(j for j in jobs if j["repo"] == "acme/Slow-GGUF")
        return job if job["status"] == "cancelled" else None

    wait_for(cancelled, timeout=15)
    kept = part.stat().st_size
    assert 0 < kept < (hub.root / "acme/Slow-GGUF/slow-Q4_K_M.gguf").stat().st_size

    hub.slow.discard("acme/Slow-GGUF")
    assert (
        ollama.Client(host=stack.url("ollama")).pull("hf.co/acme/Slow-GGUF", stream=False).status == "success"
    )
    assert hub.downloads_of("acme/Slow-GGUF", "slow-Q4_K_M.gguf")[-1] == f"bytes={kept}-"
    assert not part.exists()
    # The manage API's delete removes a downloaded model's file with it.
    name = entry(stack, "hf.co/acme/Slow-GGUF")["name"]
    assert manage(stack, "DELETE", f"models/{name}").status_code == 200
    assert not downloaded(stack, "acme", "Slow-GGUF").exists()


def test_the_manage_api_lists_a_repositorys_choices_downloads_under_a_name_and_cancels(
    stack, hub: StandInHub
) -> None:
    files = manage(stack, "GET", "hub/files", params={"repo": CHAT})
    assert files.status_code == 200, files.text
    listing = files.json()
    assert listing["repo"] == CHAT and listing["default"] == "Q4_K_M"
    labels = {c["label"]: c for c in listing["choices"]}
    assert set(labels) == {"Q4_K_M", "Q8_0"}
    assert labels["Q8_0"]["files"] == [
        {"path": "tiny-chat-Q8_0.gguf", "size": (hub.root / CHAT / "tiny-chat-Q8_0.gguf").stat().st_size}
    ]
    vision = manage(stack, "GET", "hub/files", params={"repo": "hf.co/acme/Tiny-Vision-GGUF"}).json()
    assert vision["choices"][0]["projector"]["path"] == "mmproj-Tiny-Vision-F16.gguf"

    hub.slow.add("acme/Slow-GGUF")
    started = manage(stack, "POST", "downloads", json={"model": "acme/Slow-GGUF", "name": "my-slow"})
    assert started.status_code == 202, started.text
    job = started.json()
    assert job["status"] == "downloading" and job["alias"] == "hf.co/acme/Slow-GGUF"
    part = downloaded(stack, "acme", "Slow-GGUF", "slow-Q4_K_M.gguf.part")
    wait_for(lambda: manage(stack, "GET", f"downloads/{job['job_id']}").json()["downloaded_bytes"] > 0)
    cancelled = manage(stack, "DELETE", f"downloads/{job['job_id']}")
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    wait_for(lambda: not part.exists(), timeout=5)
    assert manage(stack, "GET", "models/my-slow").status_code == 404

    hub.slow.discard("acme/Slow-GGUF")
    named = manage(stack, "POST", "downloads", json={"model": "hf.co/acme/Slow-GGUF", "name": "my-slow"})
    assert named.status_code == 202, named.text
    job_id = named.json()["job_id"]
    done = wait_for(
        lambda: (j := manage(stack, "GET", f"downloads/{job_id}").json())["status"] != "downloading" and j
    )
    assert done["status"] == "completed" and done["model"] == "my-slow", done
    model = entry(stack, "my-slow")
    assert model["aliases"] == ["hf.co/acme/Slow-GGUF"] and model["source"] == "download"
    again = manage(stack, "POST", "downloads", json={"model": "acme/Slow-GGUF"})
    assert again.status_code == 200 and again.json() == {"status": "already_downloaded", "model": "my-slow"}

    bad = [
        ({"model": "not a repository"}, 400, "model"),
        ({"model": "acme/No-Such-GGUF"}, 404, "model"),
        ({"model": f"{CHAT}:Q2_K"}, 404, "model"),
        ({"model": "acme/Secret-GGUF", "name": "my-slow"}, 409, "name"),
        ({"quantization": "Q8_0"}, 400, "model"),
    ]
    for body, status, field in bad:
        response = manage(stack, "POST", "downloads", json=body)
        assert response.status_code == status, (body, response.text)
        assert response.json()["error"]["field"].endswith(field), (body, response.text)
    assert manage(stack, "GET", "downloads/job_nothing").status_code == 404
    assert manage(stack, "GET", "hub/files", params={"repo": "acme/Safetensors-Only"}).status_code == 404


def test_pull_of_a_registry_model_fetches_its_gguf_with_its_parameters_and_system_prompt(
    client: ollama.Client, stack, hub: StandInHub
) -> None:
    events = [dict(e) for e in client.pull("tinyllama", stream=True)]
    assert events[0]["status"] == "pulling manifest" and events[-1]["status"] == "success"
    layer = hub.registry_root / "library/tinyllama/latest/model.gguf"
    assert any(e.get("digest") == f"sha256:{sha256(layer)}" and e["completed"] == e["total"] for e in events)

    model = entry(stack, "tinyllama")
    assert model["name"] == "tinyllama" and model["source"] == "download" and model["aliases"] == []
    file = Path(model["path"])
    assert file.name == "tinyllama-latest.gguf" and file.parent.parts[-3:] == (
        "library",
        "tinyllama",
        "latest",
    )
    assert model["digest"] == f"sha256:{sha256(layer)}"
    settings = model["settings"]
    assert settings["parameters"]["ctx_size"] == 512
    assert settings["sampling"]["stop"] == ["<|im_end|>"] and settings["sampling"]["temperature"] == 0.3
    assert settings["sampling"]["system"] == "You are tiny."
    shown = httpx.post(f"{stack.url('ollama')}/api/show", json={"model": "tinyllama:latest"}).json()
    assert shown["system"] == "You are tiny." and "{{ .Prompt }}" not in shown.get("template", "")
    answer = client.chat(
        model="tinyllama", messages=[{"role": "user", "content": "hi"}], options={"num_predict": 3}
    )
    assert answer.done

    # Another tag of the same weights: linked to the file that is here, not fetched again.
    fetched = [p for p, _ in hub.requests if p.startswith("/registry-cdn/")]
    assert client.pull("tinyllama:1b", stream=False).status == "success"
    assert [p for p, _ in hub.requests if p.startswith("/registry-cdn/")] == fetched
    other = Path(entry(stack, "tinyllama:1b")["path"])
    assert other.stat().st_ino == file.stat().st_ino
    assert client.pull("tinyllama:latest", stream=False).status == "success"  # here already
    # The System page's folders show the downloads folder with what is in it.
    folders = manage(stack, "GET", "system").json()["model_folders"]
    downloads = next(f for f in folders if f["kind"] == "downloads")
    assert downloads["path"] == str(stack.home / "downloads") and downloads["models"] >= 2
    assert downloads["model_bytes"] >= 2 * layer.stat().st_size and downloads["disk_free"] > 0
    assert folders[0]["kind"] == "models"

    # A namespace's model, with its projector paired; rm by the name it was pulled as removes it.
    assert client.pull("someone/tinyvision", stream=False).status == "success"
    vision = entry(stack, "someone/tinyvision")
    assert vision["name"] == "someone-tinyvision" and vision["aliases"] == ["someone/tinyvision"]
    assert (
        Path(vision["mmproj_path"]).name == "mmproj-tinyvision-latest.gguf"
        and "vision" in vision["capabilities"]
    )
    client.delete("someone/tinyvision")
    assert manage(stack, "GET", "models/someone-tinyvision").status_code == 404
    assert not Path(vision["path"]).parent.exists()
