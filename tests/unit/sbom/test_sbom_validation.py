"""Limits, malformed input and the JSON path of the first problem."""

from __future__ import annotations

import json

import pytest

from gatekeeper.sbom import CycloneDxValidator, JsonLimits, SbomDocumentError, parse_sbom_document
from gatekeeper.sbom.parsing import load_bounded_json
from tests.unit.sbom.factory import cyclonedx, cyclonedx_component, encode


@pytest.fixture(scope="module")
def validator() -> CycloneDxValidator:
    validator = CycloneDxValidator()
    validator.warm_up()
    return validator


def _error(data: bytes, validator: CycloneDxValidator, **limits: int) -> SbomDocumentError:
    with pytest.raises(SbomDocumentError) as caught:
        parse_sbom_document(data, validator=validator, limits=JsonLimits(**limits))
    return caught.value


@pytest.mark.parametrize("version", ["1.2", "1.3", "1.4", "1.5", "1.6", "1.7"])
def test_generated_document_is_valid_for_every_version(
    version: str, validator: CycloneDxValidator
) -> None:
    parsed = parse_sbom_document(encode(cyclonedx(5, version=version)), validator=validator)
    assert (parsed.format, parsed.spec_version) == ("cyclonedx", version)
    assert len(parsed.sha256) == 64


@pytest.mark.parametrize("size", [2_000, 10_000])
def test_large_generated_documents_are_valid(size: int, validator: CycloneDxValidator) -> None:
    parsed = parse_sbom_document(encode(cyclonedx(size)), validator=validator)
    assert len(parsed.document["components"]) == size


def test_error_names_the_json_path_of_the_first_problem(validator: CycloneDxValidator) -> None:
    components = [cyclonedx_component(i) for i in range(5)]
    components[3]["hashes"] = [{"alg": "SHA-256", "content": "not-hex"}]
    error = _error(encode(cyclonedx(components)), validator)
    assert error.path == "$.components[3].hashes[0].content"
    assert error.message.startswith(
        "CycloneDX 1.6 schema violation at $.components[3].hashes[0].content: "
    )
    assert error.field == "$.components[3].hashes[0].content"


def test_error_in_a_nested_component(validator: CycloneDxValidator) -> None:
    inner = cyclonedx_component(1, type="not-a-type")
    outer = cyclonedx_component(0, components=[inner])
    error = _error(encode(cyclonedx([outer])), validator)
    assert error.path == "$.components[0].components[0].type"


def test_unknown_property_is_refused_strictly(validator: CycloneDxValidator) -> None:
    for version in ("1.2", "1.3", "1.6"):
        document = cyclonedx(1, version=version)
        document["components"][0]["surprise"] = True
        error = _error(encode(document), validator)
        assert error.path == "$.components[0]", version
        assert "surprise" in error.message


def test_unsupported_spec_version(validator: CycloneDxValidator) -> None:
    error = _error(encode(cyclonedx(1, version="1.1")), validator)
    assert error.path == "$.specVersion"
    assert error.message == (
        "unsupported CycloneDX specVersion '1.1' (supported: 1.2, 1.3, 1.4, 1.5, 1.6, 1.7)"
    )


@pytest.mark.parametrize("document", [[], "text", 3, {"bomFormat": "SPDX"}])
def test_not_a_cyclonedx_object(document: object, validator: CycloneDxValidator) -> None:
    assert _error(json.dumps(document).encode(), validator).message in {
        "a CycloneDX document must be a JSON object",
        'bomFormat must be "CycloneDX"',
    }


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "document is empty"),
        (b"   \n", "document is empty"),
        (b'{"bomFormat": "CycloneDX",', "malformed JSON: Expecting property name enclosed in "
         "double quotes at line 1 column 27"),
        (b"\xff\xfe{}", "document is not UTF-8 (byte 0)"),
        (b'{"a": NaN}', "malformed JSON: NaN is not valid JSON"),
    ],
)
def test_malformed_json(data: bytes, message: str, validator: CycloneDxValidator) -> None:
    error = _error(data, validator)
    assert error.message == message
    assert error.path == "$"


def test_huge_integer_is_malformed_not_a_crash(validator: CycloneDxValidator) -> None:
    error = _error(b'{"version": ' + b"9" * 10_000 + b"}", validator)
    assert error.message.startswith("malformed JSON: ")


def test_oversized_document_is_refused_before_parsing(validator: CycloneDxValidator) -> None:
    data = encode(cyclonedx(200))
    error = _error(data, validator, max_bytes=1024)
    assert error.message == (
        f"document is {len(data)} bytes, larger than the limit of 1024 bytes"
    )


def test_deeply_nested_json_is_refused_before_parsing(validator: CycloneDxValidator) -> None:
    data = b"[" * 100_000 + b"]" * 100_000  # would raise RecursionError inside json
    error = _error(data, validator)
    assert error.message == "JSON nesting is deeper than 64 levels (at byte 64)"


def test_deep_component_nesting_within_the_limit_is_accepted(
    validator: CycloneDxValidator,
) -> None:
    component = cyclonedx_component(0)
    for index in range(1, 20):
        component = cyclonedx_component(index, components=[component])
    parsed = parse_sbom_document(encode(cyclonedx([component])), validator=validator)
    assert parsed.spec_version == "1.6"


@pytest.mark.parametrize(
    ("text", "too_deep"),
    [
        ('{"a": "[[[[[[[[[[[[[[[[[["}', False),  # brackets inside strings do not count
        ('{"a": "\\\\", "b": [[[]]]}', True),  # escaped backslash before a closing quote
        ('{"a": "\\"[[[[[[[[[["}', False),  # escaped quote inside a string
        ("[[[]]]", False),
        ("[[[[]]]]", True),
    ],
)
def test_depth_check_reads_strings_correctly(text: str, too_deep: bool) -> None:
    limits = JsonLimits(max_depth=3)
    if too_deep:
        with pytest.raises(SbomDocumentError, match="nesting is deeper than 3"):
            load_bounded_json(text.encode(), limits)
    else:
        load_bounded_json(text.encode(), limits)


def test_schemas_are_never_fetched_from_the_network(monkeypatch: pytest.MonkeyPatch) -> None:
    import socket

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("network access while compiling CycloneDX schemas")

    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)
    fresh = CycloneDxValidator()
    fresh.warm_up()
    document = cyclonedx(1, version="1.7")
    document["components"][0]["licenses"] = [{"license": {"id": "NOT-A-LICENCE"}}]
    with pytest.raises(SbomDocumentError) as caught:
        fresh.validate(document)
    assert caught.value.path.startswith("$.components[0].licenses[0]")
