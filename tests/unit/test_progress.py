"""llama-server's loading log → stages, percentages, ready hints and failure reasons."""

from __future__ import annotations

from runners.progress import failure_reason, first_error, is_port_in_use, is_ready_hint, parse_progress

LOADING_LOG = """\
0.00.000.889 I srv  llama_server: initializing ...
0.00.001.891 I cmn  common_param: common_params_print_info: verbosity = 3 (adjust with the `-lv N` CLI arg)
0.00.003.394 I srv    load_model: loading model '/tmp/rt/tiny.gguf'
0.00.013.368 I llama_context: constructing llama_context
0.00.014.491 I cmn  common_init_: warming up the model with an empty run - please wait ... (--no-warmup to disable)
0.00.008.830 I srv    load_model: initializing, n_slots = 4, n_ctx_slot = 4096, kv_unified = 'true'
0.00.010.046 I srv  llama_server: model loaded
0.00.010.067 I srv  llama_server: listening on http://127.0.0.1:18123
""".splitlines()

GARBAGE_LOG = """\
0.00.003.298 I srv    load_model: loading model 'garbage.gguf'
0.00.003.391 E gguf_init_from_reader: invalid magic characters: '?D?(', expected 'GGUF'
0.00.003.473 E llama_model_load: error loading model: llama_model_loader: failed to load model from garbage.gguf
0.00.003.836 E srv  llama_server: exiting due to model loading error
""".splitlines()


def test_loading_lines_become_stages_with_rising_percentages() -> None:
    found = [p for p in map(parse_progress, LOADING_LOG) if p is not None]
    assert [p.stage for p in found] == [
        "initializing",
        "loading model",
        "creating context",
        "warming up",
        "initializing slots",
        "model loaded",
        "listening",
    ]
    percents = [p.percent for p in found]
    assert percents == sorted(percents) and percents[-1] < 100


def test_lines_without_progress_are_ignored() -> None:
    assert parse_progress(LOADING_LOG[1]) is None
    assert parse_progress("") is None


def test_model_loaded_and_listening_are_hints_to_ask_health_at_once() -> None:
    assert [line for line in LOADING_LOG if is_ready_hint(line)] == LOADING_LOG[-2:]


def test_the_reason_carries_llama_servers_first_error_line() -> None:
    assert (
        first_error(GARBAGE_LOG) == "gguf_init_from_reader: invalid magic characters: '?D?(', expected 'GGUF'"
    )
    reason = failure_reason(GARBAGE_LOG, 1)
    assert reason.startswith("llama-server exited with status 1: gguf_init_from_reader: invalid magic")


def test_a_killed_process_and_a_silent_one_are_described() -> None:
    assert failure_reason([], -9) == "llama-server was killed by signal 9"
    assert failure_reason(["plain text: failed to open file"], 2).endswith("plain text: failed to open file")
    assert failure_reason([], None) == "llama-server did not become ready"


def test_a_port_taken_before_binding_is_recognised() -> None:
    assert is_port_in_use(["0.00.1 E srv  start: couldn't bind HTTP server socket, hostname: 127.0.0.1"])
    assert not is_port_in_use(GARBAGE_LOG)
