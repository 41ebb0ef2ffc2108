"""The response framing both OPA clients share: what arrives in pieces, what is refused."""

from __future__ import annotations

import pytest

from gatekeeper.policy.http_framing import (
    ConnectionClosed,
    OpaHttpError,
    OpaResponse,
    ResponseParser,
    request_bytes,
)

LENGTH = b'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 12\r\n\r\n{"result":1}'
CHUNKED = (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
           b"5;name=value\r\n{\"res\r\n6\r\nult\":1\r\n1\r\n}\r\n0\r\nX-Trailer: ignored\r\n\r\n")


def _feed(parser: ResponseParser, data: bytes, step: int) -> OpaResponse | None:
    answer = None
    for start in range(0, len(data), step):
        assert answer is None, "an answer before its last byte"
        answer = parser.feed(data[start:start + step])
    return answer


@pytest.mark.parametrize("step", [1, 3, 7, 4096])
@pytest.mark.parametrize("raw", [LENGTH, CHUNKED], ids=["content-length", "chunked"])
def test_an_answer_is_the_same_however_it_is_split(raw: bytes, step: int) -> None:
    parser = ResponseParser()
    assert _feed(parser, raw, step) == OpaResponse(200, b'{"result":1}')
    assert parser.keep_alive


def test_the_request_is_one_buffer_with_its_length() -> None:
    assert request_bytes("/v1/data/x", b"opa", b"{}") == (
        b"POST /v1/data/x HTTP/1.1\r\nHost: opa\r\nContent-Type: application/json\r\n"
        b"Accept: application/json\r\nContent-Length: 2\r\n\r\n{}")


@pytest.mark.parametrize(("raw", "keep"), [
    (b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n", False),
    (b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n", False),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\nextra", False),  # more than announced
    (b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\n\r\n", True),
])
def test_a_connection_is_kept_only_when_the_answer_says_so(raw: bytes, keep: bool) -> None:
    parser = ResponseParser()
    assert parser.feed(raw) is not None
    assert parser.keep_alive is keep


@pytest.mark.parametrize(("raw", "message"), [
    (b"SMTP ready\r\n\r\n", "malformed status line b'SMTP ready'"),
    (b"HTTP/1.1 200 OK\r\nno colon\r\n\r\n", "malformed header line b'no colon'"),
    (b"HTTP/1.1 200 OK\r\n\r\n", "answer has neither Content-Length nor chunked framing"),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n",
     "answer has both Content-Length and chunked framing"),
    (b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n", "invalid Content-Length"),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
     "invalid Content-Length"),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n", "unsupported Transfer-Encoding b'gzip'"),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 101\r\n\r\n", "answer of 101 bytes is over the limit"),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0x5\r\n",
     "malformed chunk size b'0x5'"),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n+5\r\n", "malformed chunk size b'+5'"),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}XX",
     "malformed chunk end"),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n40\r\n" + b"x" * 64 + b"\r\n41\r\n",
     "answer is over the limit of 100 bytes"),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + b"0" * 4096,
     "chunk-size or trailer line is over 4 KiB"),
    (b"HTTP/1.1 200 OK\r\nX-Big: " + b"a" * 65536, "answer headers are over 64 KiB"),
])
def test_a_malformed_or_oversized_answer_is_refused_naming_why(raw: bytes, message: str) -> None:
    with pytest.raises(OpaHttpError) as caught:
        ResponseParser(max_body=100).feed(raw)
    assert str(caught.value) == message


def test_a_close_before_the_answer_is_told_apart_from_one_in_its_middle() -> None:
    with pytest.raises(ConnectionClosed) as idle:
        ResponseParser().feed(b"")
    assert not idle.value.answered
    assert str(idle.value) == "Server disconnected without sending a response."
    parser = ResponseParser()
    assert parser.feed(LENGTH[:-3]) is None
    with pytest.raises(ConnectionClosed) as cut:
        parser.feed(b"")
    assert cut.value.answered
    assert str(cut.value) == "the server closed the connection in the middle of its answer"
