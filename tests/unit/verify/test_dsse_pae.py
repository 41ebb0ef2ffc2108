"""The DSSE pre-authentication encoding the legacy ``.att`` check signs over (ours, so a
key-based verification does not import sigstore-python for one byte string)."""

from __future__ import annotations

from sigstore import dsse

from gatekeeper.verify.in_toto import IN_TOTO_PAYLOAD_TYPE, dsse_pae


def test_the_dsse_specification_example() -> None:
    assert dsse_pae("http://example.com/HelloWorld", b"hello world") == (
        b"DSSEv1 29 http://example.com/HelloWorld 11 hello world"
    )


def test_same_bytes_as_sigstore_for_in_toto_payloads() -> None:
    payload = b'{"_type":"https://in-toto.io/Statement/v1","subject":[]} with spaces\n'
    assert dsse_pae(IN_TOTO_PAYLOAD_TYPE, payload) == dsse._pae(IN_TOTO_PAYLOAD_TYPE, payload)
    assert dsse_pae(IN_TOTO_PAYLOAD_TYPE, b"") == dsse._pae(IN_TOTO_PAYLOAD_TYPE, b"")


def test_lengths_count_bytes_not_characters() -> None:
    assert dsse_pae("tÿpe", "é".encode()) == "DSSEv1 5 tÿpe 2 é".encode()
