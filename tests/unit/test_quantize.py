"""What `ollama create --quantize` may ask for (the quantizing itself runs in tests/integration)."""

from __future__ import annotations

import pytest

from models_catalog.quantize import QuantizeError, check_source, quantize_type


@pytest.mark.parametrize(("asked", "type_"), [("q4_K_M", "Q4_K_M"), (" q8_0 ", "Q8_0"), ("bf16", "BF16")])
def test_types_are_llama_quantizes_names_in_any_case(asked: str, type_: str) -> None:
    assert quantize_type(asked) == type_


@pytest.mark.parametrize("asked", ["q4", "IQ2_XS", "", "Q4_K_M; rm -rf /"])
def test_other_types_are_a_400_listing_the_ones_there_are(asked: str) -> None:
    with pytest.raises(QuantizeError, match="Q4_K_M") as refused:
        quantize_type(asked)
    assert refused.value.status == 400


def test_only_unquantized_files_are_quantized() -> None:
    assert [check_source("m", file_type) for file_type in (0, 1, 32)] == ["F32", "F16", "BF16"]
    with pytest.raises(QuantizeError, match="'m' is Q4_K_M"):
        check_source("m", 15)
    with pytest.raises(QuantizeError, match="unknown type"):
        check_source("m", None)
