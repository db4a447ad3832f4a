"""The dashboard end to end: Chromium against the real stack (daphne, Celery, Redis, llama-server).

A user logs in, loads a model and watches its state change live, chats in the Playground and sees
the request in Activity with token counts, changes a runner parameter and sees the runner restart
with it, gets a field error for a bad value, quantizes a model, downloads one from (a stand-in
for) Hugging Face and removes models (and a file). Each page is saved under screenshots/.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Page, expect

from models_catalog.tiny_model import write_tiny_model
from tests.e2e.conftest import SCREENSHOTS
from tests.hub_stand_in import StandInHub

pytestmark = [pytest.mark.e2e, pytest.mark.integration]

USER, PASSWORD = "admin", "pw-123456"
MODEL = "tiny-chat"
HUB_REPO = "acme/Tiny-Hub-GGUF"


@pytest.fixture
def hub(tmp_path) -> Iterator[StandInHub]:
    """A stand-in for Hugging Face serving a repository with two quantizations of a tiny model."""
    repo = tmp_path / "hub" / HUB_REPO
    write_tiny_model(repo / "tiny-hub-Q4_K_M.gguf", name="tiny-hub", seed=3, file_type="Q8_0")
    write_tiny_model(repo / "tiny-hub-Q8_0.gguf", name="tiny-hub", seed=4, file_type="Q8_0")
    server = StandInHub(tmp_path / "hub").start()
    try:
        yield server
    finally:
        server.stop()


def prepare(stack) -> None:
    write_tiny_model(stack.models_dir / f"{MODEL}.gguf", name=MODEL, seed=1)
    write_tiny_model(stack.models_dir / "tiny-other.gguf", name="tiny-other", seed=2)
    stack.manage("migrate", "--noinput")
    stack.manage("scan_models")
    stack.manage(
        "shell",
        "-c",
        f"from django.contrib.auth.models import User; User.objects.create_superuser('{USER}','a@b.c','{PASSWORD}')",
    )


def shot(page: Page, name: str) -> None:
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)


def runner(stack, model: str) -> dict:
    rows = httpx.get(
        stack.url("dashboard") + "/api/manage/runners", headers=stack.admin_headers(), timeout=30
    ).json()
    return next((r for r in rows if r["model"] == model), {"state": "stopped"})


def test_a_user_runs_llamaproxy_from_the_dashboard(make_stack, browser_page: Page, hub: StandInHub) -> None:
    stack = make_stack(setup=prepare, LLAMAPROXY_HF_ENDPOINT=hub.url)
    page = browser_page
    base = stack.url("dashboard")

    # Log in (a client-side route: Django serves the app for it).
    page.goto(base + "/models")
    expect(page.get_by_role("button", name="Log in")).to_be_visible()
    shot(page, "01-login")
    page.fill("input[name=username]", USER)
    page.fill("input[name=password]", "wrong-password")
    page.click("button[type=submit]")
    expect(page.locator("[data-test=login-error]")).to_contain_text("wrong username or password")
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    expect(page.locator("[data-test=live]")).to_have_text("live")

    # Models: load one and watch its state change without reloading the page.
    row = page.locator(f"tr[data-model='{MODEL}']")
    expect(row.locator("[data-test=state]")).to_have_text("stopped")
    page.evaluate("window.__sameDocument = true")
    shot(page, "02-models")
    row.locator("[data-test=load]").click()
    expect(row.locator("[data-test=state]")).to_have_text("ready", timeout=60000)
    expect(row.locator("td").nth(8)).to_have_text(re.compile(r"^\d+$"))  # its port
    assert page.evaluate("window.__sameDocument") is True
    shot(page, "03-models-ready")

    # Playground: a streamed chat; its token counts come back.
    page.click("nav >> text=Playground")
    page.select_option("[data-test=pg-model]", MODEL)
    page.fill("[data-test=pg-max-tokens]", "12")
    page.get_by_label("seed").fill("7")
    page.fill("[data-test=pg-input]", "Hello there")
    page.click("[data-test=pg-send]")
    stats = page.locator("[data-test=msg-stats]").last
    # (a random-weight model may sample its end-of-text token before the 12th)
    expect(stats).to_contain_text(re.compile(r"\b([1-9]|1[0-2]) completion tokens"), timeout=60000)
    completion = re.search(r"(\d+) completion tokens", stats.inner_text())[1]  # type: ignore[index]
    assert page.locator("[data-test=msg-assistant] .content").last.inner_text().strip()
    shot(page, "04-playground")

    # Activity: the request is there, from the playground, with its token counts.
    page.click("nav >> text=Activity")
    activity = page.locator(f"[data-test=activity] tr[data-model='{MODEL}']").first
    expect(activity).to_be_visible()
    expect(activity.locator("td").nth(1)).to_have_text("playground")
    expect(activity.locator("[data-test=completion-tokens]")).to_have_text(completion)
    assert int(activity.locator("[data-test=prompt-tokens]").inner_text().replace(",", "")) > 0
    shot(page, "05-activity")
    # A request made elsewhere (the OpenAI port) appears live, without reloading.
    httpx.post(
        stack.url("api") + "/v1/chat/completions",
        json={"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 7},
        timeout=60,
    ).raise_for_status()
    expect(
        page.locator(f"[data-test=activity] tr[data-model='{MODEL}'] td:nth-child(2)", has_text="api")
    ).to_have_count(1)
    assert page.evaluate("window.__sameDocument") is True

    # Model detail: change a runner parameter; the runner restarts with it.
    page.click("nav >> text=Models")
    page.click(f"tr[data-model='{MODEL}'] a.modelname")
    form = page.locator("[data-test=settings-form]")
    expect(form).to_be_visible()
    expect(page.locator("[data-test=log]")).to_contain_text("listening", timeout=20000)
    pid_before = runner(stack, MODEL)["pid"]
    ctx = form.locator("[data-field=ctx_size] input")
    ctx.fill("768")
    form.locator("[data-test=save]").click()
    expect(form.locator("[data-test=form-message]")).to_contain_text("restarted", timeout=60000)
    after = runner(stack, MODEL)
    assert after["state"] == "ready"
    assert after["pid"] != pid_before
    # The live log tail shows the new process's command line and its context size.
    expect(page.locator("[data-test=log]")).to_contain_text("--ctx-size 768", timeout=20000)
    expect(page.locator("[data-test=log]")).to_contain_text(re.compile(r"n_ctx\w*\s*=\s*768"))
    shot(page, "06-model-detail")

    # A bad value: the server's error is shown on the field, nothing is saved.
    ctx.fill("-5")
    form.locator("[data-test=save]").click()
    error = form.locator("[data-field=ctx_size] [data-test=field-error]")
    expect(error).to_contain_text("at least 0")
    saved = httpx.get(base + f"/api/manage/models/{MODEL}", headers=stack.admin_headers(), timeout=30).json()
    assert saved["settings"]["parameters"]["ctx_size"] == 768
    shot(page, "07-field-error")

    # A default system prompt is edited in a text area and stored as typed, line breaks and all.
    ctx.fill("768")
    # Stop sequences are a list, one per line (a line break inside one written \\n).
    form.locator("[data-field=system] textarea").fill("Be brief.\nAnswer in French.")
    form.locator("[data-field=stop] textarea").fill("<|im_end|>\n\\n\\nUser:")
    form.locator("[data-test=save]").click()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        saved = httpx.get(
            base + f"/api/manage/models/{MODEL}", headers=stack.admin_headers(), timeout=30
        ).json()
        if saved["settings"]["sampling"].get("system"):
            break
        time.sleep(0.2)
    assert saved["settings"]["sampling"]["system"] == "Be brief.\nAnswer in French."
    assert saved["settings"]["sampling"]["stop"] == ["<|im_end|>", "\n\nUser:"]
    assert saved["settings"]["parameters"]["ctx_size"] == 768

    # Quantize the (F32) model into a new one; it takes this one's settings and is listed.
    quantizing = page.locator("[data-test=quantize]")
    quantizing.locator("[data-test=quant-type]").select_option("Q8_0")
    expect(quantizing.locator("[data-test=quant-name]")).to_have_value(f"{MODEL}-q8_0")
    quantizing.locator("[data-test=quant-start]").click()
    expect(quantizing.locator("[data-test=quant-message]")).to_contain_text(
        f"Made {MODEL}-q8_0", timeout=60000
    )
    made = httpx.get(
        base + f"/api/manage/models/{MODEL}-q8_0", headers=stack.admin_headers(), timeout=30
    ).json()
    assert made["quantization"] == "Q8_0" and made["settings"]["parameters"]["ctx_size"] == 768
    quantizing.locator("[data-test=quant-name]").fill("tiny-other")  # another model's: said, nothing made
    quantizing.locator("[data-test=quant-start]").click()
    expect(quantizing.locator("[data-test=quant-error]")).to_contain_text("already the name")
    shot(page, "08-quantized")

    # Download from Hugging Face: a repository's quantizations, one of them under a chosen name; the
    # job follows to completion and the model appears in the table, without reloading the page.
    page.click("nav >> text=Models")
    page.click("[data-test=hub-toggle]")
    panel = page.locator("[data-test=hub]")
    panel.locator("[data-test=hub-repo]").fill("acme/No-Such-GGUF")
    panel.locator("[data-test=hub-find]").click()
    expect(panel.locator("[data-test=hub-error]")).to_contain_text(
        "no model repository acme/No-Such-GGUF on Hugging Face"
    )
    panel.locator("[data-test=hub-repo]").fill(HUB_REPO)
    panel.locator("[data-test=hub-find]").click()
    choices = panel.locator("[data-test=hub-choices] [data-test=hub-choice]")
    expect(choices).to_have_count(2)
    expect(panel.locator("[data-test=hub-error]")).to_have_count(0)
    expect(choices.filter(has_text="Q4_K_M")).to_contain_text("default")
    q8 = choices.filter(has_text="Q8_0")
    expect(q8).not_to_contain_text("default")
    panel.locator("[data-test=hub-name]").fill("tiny-hub")
    q8.locator("[data-test=hub-download]").click()
    job = panel.locator("[data-test=download-job]").first
    expect(job).to_contain_text(f"{HUB_REPO}:Q8_0")
    expect(job.locator("[data-test=download-status]")).to_have_text("completed", timeout=60000)
    expect(job.locator("[data-test=download-model]")).to_have_text("tiny-hub")
    expect(page.locator("tr[data-model='tiny-hub']")).to_be_visible(timeout=20000)
    expect(q8).to_contain_text("downloaded as tiny-hub")  # the listing knows it now
    downloaded = httpx.get(
        base + "/api/manage/models/tiny-hub", headers=stack.admin_headers(), timeout=30
    ).json()
    assert downloaded["source"] == "download" and downloaded["aliases"] == [f"hf.co/{HUB_REPO}:Q8_0"]
    assert page.evaluate("window.__sameDocument") is True
    shot(page, "09-hugging-face")

    # Removing models from their pages: the download's file goes with it; a model folder's file
    # stays unless asked for (then the next scan does not bring the model back).
    page.locator("tr[data-model='tiny-hub'] a").first.click()
    removing = page.locator("[data-test=remove]")
    removing.locator("[data-test=remove-ask]").click()
    expect(removing).to_contain_text("goes with its last model")
    hub_file = Path(downloaded["path"])
    assert hub_file.exists()
    removing.locator("[data-test=remove-confirm]").click()
    expect(page).to_have_url(re.compile(r"/models$"))
    expect(page.locator("tr[data-model='tiny-chat']")).to_be_visible()
    expect(page.locator("tr[data-model='tiny-hub']")).to_have_count(0)
    assert not hub_file.exists()
    page.locator("tr[data-model='tiny-other'] a").first.click()
    removing.locator("[data-test=remove-ask]").click()
    removing.locator("[data-test=remove-files]").check()
    removing.locator("[data-test=remove-confirm]").click()
    expect(page).to_have_url(re.compile(r"/models$"))
    expect(page.locator("tr[data-model='tiny-chat']")).to_be_visible()
    expect(page.locator("tr[data-model='tiny-other']")).to_have_count(0)
    assert not (stack.models_dir / "tiny-other.gguf").exists()
    page.click("text=Scan now")
    expect(page.locator(".notice")).to_contain_text("Scan:")
    expect(page.locator("tr[data-model='tiny-other']")).to_have_count(0)

    # The other pages render from the real API.
    page.click("nav >> text=System")
    expect(page.locator("[data-test=components]")).to_contain_text("llama-server")
    expect(page.locator("[data-test=runners]")).to_contain_text(MODEL)
    shot(page, "10-system")
    page.click("nav >> text=Settings")
    expect(page.locator("[data-test=limits]")).to_be_visible()
    expect(page.locator("[data-test=folder-list]")).to_contain_text(str(stack.models_dir))
    shot(page, "11-settings")


def test_the_playground_transcribes_an_uploaded_wav_with_a_whisper_model(
    make_stack, browser_page: Page, tmp_path
) -> None:
    """The audio box: a real whisper-server (random weights, so no words are asserted), the text and
    segments of verbose_json, a bad language shown inline, usage rows with face playground."""
    from models_catalog.tiny_whisper import write_tiny_whisper_model
    from runners.provisioning import installed_binary
    from tests.integration.test_audio import WHISPER, tone_wav, wait_for_rows

    whisper_server = installed_binary("whisper-server")
    if whisper_server is None:
        pytest.fail("whisper-server is not installed: run `python manage.py install_llama_server --whisper`")

    def setup(stack) -> None:
        write_tiny_whisper_model(stack.models_dir / f"{WHISPER}.bin", seed=3)
        stack.manage("migrate", "--noinput")
        stack.manage("scan_models")
        stack.manage(
            "shell",
            "-c",
            f"from django.contrib.auth.models import User; User.objects.create_superuser('{USER}','a@b.c','{PASSWORD}')",
        )

    stack = make_stack(setup=setup, LLAMAPROXY_WHISPER_SERVER=str(whisper_server))
    page = browser_page
    page.goto(stack.url("dashboard") + "/playground")
    page.fill("input[name=username]", USER)
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    expect(page.locator("[data-test=audio-model]")).to_have_value(WHISPER)
    wav = tmp_path / "tone.wav"
    wav.write_bytes(tone_wav(1.5))
    page.set_input_files("[data-test=audio-file]", str(wav))
    page.select_option("[data-test=audio-format]", "verbose_json")
    page.click("[data-test=audio-transcribe]")
    result = page.locator("[data-test=audio-result]")
    expect(result).to_contain_text("1.50 s of audio", timeout=60000)
    expect(page.locator("[data-test=audio-error]")).to_have_count(0)
    shot(page, "10-playground-audio")

    page.fill("[data-test=audio-language]", "klingon")
    page.click("[data-test=audio-translate]")
    expect(page.locator("[data-test=audio-error]")).to_contain_text(
        "language 'klingon' is not one whisper knows"
    )
    expect(result).to_have_count(0)

    # Usage rows are written after the answer: wait for the one of the transcription.
    rows = wait_for_rows(stack, lambda r: r["status"] == 200, endpoint="audio/transcriptions")
    assert [(r["face"], r["model"]) for r in rows] == [("playground", WHISPER)]
