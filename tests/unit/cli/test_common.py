"""The CLI's shared pieces: one time parser, id prefixes, exit codes, the error tree as the
boundary renders it, and the progress line on a real terminal (a pty)."""

from __future__ import annotations

import io
import os
import time
from datetime import UTC, datetime

import pytest

from gatekeeper.audit.verify import ChainBrokenError
from gatekeeper.cli.common import (
    EXIT_ERROR,
    EXIT_FAILED,
    CommandError,
    error_from_answer,
    exit_code_for,
    parse_time,
    resolve_prefix,
    waiting,
)
from gatekeeper.errors import (
    AmbiguousIdError,
    ConfigurationError,
    ConflictError,
    GatekeeperError,
    IntegrityError,
    InvalidInputError,
    NotFoundError,
    UpstreamUnavailableError,
)
from gatekeeper.policy.store import PolicyConflictError

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("7d", datetime(2026, 11, 17, 12, 0, tzinfo=UTC)),
        ("12h", datetime(2026, 11, 24, 0, 0, tzinfo=UTC)),
        ("30m", datetime(2026, 11, 24, 11, 30, tzinfo=UTC)),
        ("45s", datetime(2026, 11, 24, 11, 59, 15, tzinfo=UTC)),
        ("2w", datetime(2026, 11, 10, 12, 0, tzinfo=UTC)),
        ("2026-11-20T08:00:00Z", datetime(2026, 11, 20, 8, 0, tzinfo=UTC)),
        ("2026-11-20T09:00:00+01:00", datetime(2026, 11, 20, 8, 0, tzinfo=UTC)),
        ("2026-11-20", datetime(2026, 11, 20, 0, 0, tzinfo=UTC)),
    ],
)
def test_parse_time_accepts_durations_dates_and_rfc3339(text: str, expected: datetime) -> None:
    assert parse_time(text, option="--since", now=NOW) == expected


def test_parse_time_ahead_counts_forward() -> None:
    assert parse_time("2d", option="--expires-at", now=NOW, ahead=True) == datetime(
        2026, 11, 26, 12, 0, tzinfo=UTC
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("last week", "--since: 'last week' is neither a duration (7d, 12h) nor an RFC 3339 instant"),
        ("7 days", "--since: '7 days' is neither a duration (7d, 12h) nor an RFC 3339 instant"),
        ("2026-11-20T08:00:00", "--since: '2026-11-20T08:00:00' has no time zone (add Z or an offset such as +01:00)"),
    ],
)
def test_parse_time_names_the_option_and_the_problem(text: str, message: str) -> None:
    with pytest.raises(InvalidInputError) as caught:
        parse_time(text, option="--since", now=NOW)
    assert caught.value.user_message() == message
    assert exit_code_for(caught.value) == EXIT_ERROR


REVISIONS = ["sha256:ab12" + "0" * 60, "sha256:ab34" + "0" * 60, "sha256:cd56" + "0" * 60]


def test_a_unique_prefix_resolves_with_or_without_the_algorithm() -> None:
    assert resolve_prefix("cd", REVISIONS, what="policy revision", option="REVISION") == REVISIONS[2]
    assert resolve_prefix("sha256:ab1", REVISIONS, what="policy revision", option="REVISION") == REVISIONS[0]
    assert resolve_prefix(REVISIONS[1], REVISIONS, what="policy revision", option="REVISION") == REVISIONS[1]


def test_an_ambiguous_prefix_lists_the_candidates_and_exits_2() -> None:
    with pytest.raises(AmbiguousIdError) as caught:
        resolve_prefix("ab", REVISIONS, what="policy revision", option="REVISION")
    assert caught.value.candidates == REVISIONS[:2]
    assert caught.value.user_message() == (
        f"REVISION: 'ab' matches more than one id ({REVISIONS[0]}, {REVISIONS[1]}); "
        "give more of the id"
    )
    assert exit_code_for(caught.value) == EXIT_ERROR


def test_an_unknown_prefix_is_not_found_and_exits_1() -> None:
    with pytest.raises(NotFoundError, match="^policy revision ef not found$") as caught:
        resolve_prefix("ef", REVISIONS, what="policy revision", option="REVISION")
    assert exit_code_for(caught.value) == EXIT_FAILED


def test_every_product_error_is_a_gatekeeper_error_and_integrity_failures_are_types() -> None:
    broken = ChainBrokenError(4, "record 4 changed: its content does not match its hash")
    assert isinstance(broken, IntegrityError) and isinstance(broken, GatekeeperError)
    assert broken.user_message() == (
        "audit verification FAILED: record 4 changed: its content does not match its hash"
    )
    assert ChainBrokenError(4, "x", subject="export").user_message() == "export verification FAILED: x"
    assert issubclass(PolicyConflictError, ConflictError)
    assert exit_code_for(broken) == EXIT_FAILED
    assert exit_code_for(PolicyConflictError("no earlier revision")) == EXIT_FAILED
    assert exit_code_for(NotFoundError("decision x not found")) == EXIT_FAILED
    assert exit_code_for(ConfigurationError("bad")) == EXIT_ERROR
    assert exit_code_for(UpstreamUnavailableError("down")) == EXIT_ERROR
    assert exit_code_for(CommandError("refused", EXIT_FAILED)) == EXIT_FAILED


def test_verbose_diagnostics_add_the_structured_context() -> None:
    error = InvalidInputError("is not a digest", field="--digest", context={"value": "sha1:x"})
    assert error.diagnostics() == "--digest: is not a digest"
    assert error.diagnostics(verbose=True) == (
        "--digest: is not a digest\n  field: --digest\n  value: sha1:x"
    )


@pytest.mark.parametrize(
    ("status", "body", "kind", "code"),
    [
        (404, {"error": "not_found", "message": "decision x not found"}, NotFoundError, EXIT_FAILED),
        (409, {"error": "conflict", "message": "no earlier revision"}, ConflictError, EXIT_FAILED),
        (422, {"error": "policy_refused", "message": "candidate refused"}, CommandError, EXIT_FAILED),
        (422, {"error": "invalid_input", "message": "images[0]: bad"}, InvalidInputError, EXIT_ERROR),
        (403, {"error": "forbidden", "message": "subject 'bob' lacks the role"}, GatekeeperError, EXIT_ERROR),
    ],
)
def test_remote_answers_end_like_the_in_process_errors(
    status: int, body: dict[str, str], kind: type[GatekeeperError], code: int
) -> None:
    error = error_from_answer(status, body)
    assert type(error) is kind
    assert error.user_message() == body["message"]
    assert exit_code_for(error) == code


def test_no_progress_line_when_stderr_is_not_a_terminal() -> None:
    stream = io.StringIO()
    with waiting("waiting for gatekeeper", after=0.05, stream=stream):
        time.sleep(0.3)
    assert stream.getvalue() == ""


def test_progress_line_on_a_terminal_for_waits_over_the_threshold() -> None:
    primary, secondary = os.openpty()
    with os.fdopen(secondary, "w") as terminal:
        with waiting("waiting for gatekeeper at http://127.0.0.1:1", after=1.0, stream=terminal):
            time.sleep(1.3)
        with waiting("a quick one", after=1.0, stream=terminal):
            time.sleep(0.1)
        terminal.flush()
        written = os.read(primary, 4096).decode()
    os.close(primary)
    assert written.startswith("\rwaiting for gatekeeper at http://127.0.0.1:1 ... 1s")
    assert written.endswith("\r\x1b[K")  # erased when the wait ends
    assert "a quick one" not in written
