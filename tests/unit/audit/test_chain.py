"""The hash chain, checkpoints and the verifier's diagnosis, on synthetic chains (no I/O)."""

from __future__ import annotations

import functools
import random
from collections.abc import Iterable
from typing import Any

import pytest
import rfc8785
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from gatekeeper.audit.chain import (
    GENESIS_HASH,
    Checkpoint,
    CheckpointSigner,
    entry_bytes,
    record_hash,
    sha256_hex,
    verify_checkpoint_signature,
)
from gatekeeper.audit.verify import ChainBrokenError, ChainVerifier, VerificationReport
from gatekeeper.domain import EnforcementMode, Verdict

Entry = tuple[int, str, str, str, str | None]


def test_composed_entry_is_rfc8785_canonical() -> None:
    for policy in ("aa" * 32, None):
        entry: dict[str, int | str | None] = {"seq": 12345678901, "prev_hash": "0f" * 32, "decision_sha256": "1e" * 32,
                 "policy_input_sha256": policy}
        assert entry_bytes(12345678901, "0f" * 32, "1e" * 32, policy) == rfc8785.dumps(entry)


def test_checkpoint_signature_round_trip_and_tampering() -> None:
    signer = CheckpointSigner(Ed25519PrivateKey.generate())
    checkpoint = signer.sign(10, "ab" * 32, pruned_through=4)
    assert verify_checkpoint_signature(checkpoint, signer.public_key) is None
    moved = Checkpoint(11, checkpoint.record_hash, checkpoint.created_at, checkpoint.key_id,
                       checkpoint.signature, checkpoint.pruned_through)
    assert verify_checkpoint_signature(moved, signer.public_key) == "its signature is not valid"
    other = CheckpointSigner(Ed25519PrivateKey.generate())
    assert verify_checkpoint_signature(checkpoint, other.public_key) == (
        f"signed by key {signer.key_id}, not by the configured key {other.key_id}"
    )


def build_chain(count: int) -> list[Entry]:
    """[(seq, prev, hash, decision_sha, policy_sha)] for records 1..count."""
    entries: list[Entry] = []
    prev = GENESIS_HASH
    for seq in range(1, count + 1):
        decision = sha256_hex(f"decision {seq}".encode())
        digest = record_hash(seq, prev, decision, None)
        entries.append((seq, prev, digest, decision, None))
        prev = digest
    return entries


def run(
    entries: Iterable[Entry],
    checkpoints: Iterable[Checkpoint] = (),
    public_key: Ed25519PublicKey | None = None,
    head: int | None = None,
    **kwargs: bool,
) -> VerificationReport:
    verifier = ChainVerifier(checkpoints, public_key, **kwargs)
    for entry in entries:
        verifier.add(*entry)
    return verifier.finish(head_seq=head)


def broken(*args: Any, **kwargs: Any) -> str:
    with pytest.raises(ChainBrokenError) as caught:
        run(*args, **kwargs)
    return caught.value.message


def test_intact_chain_verifies_with_checkpoints() -> None:
    signer = CheckpointSigner(Ed25519PrivateKey.generate())
    chain = build_chain(10)
    report = run(chain, [signer.sign(5, chain[4][2]), signer.sign(8, chain[7][2])], signer.public_key, head=10)
    assert (report.records, report.checkpoints, report.last_checkpoint_seq, report.uncovered) == (10, 2, 8, 2)
    assert report.summary() == (
        "audit trail verified: 10 records (1..10), 2 signed checkpoints, last at record 8; "
        "2 records after it are chained but not yet signed"
    )


def test_changed_content_names_the_record() -> None:
    chain = build_chain(6)
    seq, prev, digest, _decision, policy = chain[3]
    chain[3] = (seq, prev, digest, sha256_hex(b"edited"), policy)
    assert broken(chain) == "record 4 changed: its content does not match its hash"


def test_rehashed_change_is_caught_by_the_successor() -> None:
    chain = build_chain(6)
    seq, prev, _digest, _decision, policy = chain[3]
    forged = sha256_hex(b"edited")
    chain[3] = (seq, prev, record_hash(seq, prev, forged, policy), forged, policy)
    assert broken(chain) == "record 4 changed: record 5 no longer chains to it"


def test_rehashed_tail_is_caught_by_the_signed_checkpoint() -> None:
    signer = CheckpointSigner(Ed25519PrivateKey.generate())
    chain = build_chain(6)
    checkpoint = signer.sign(6, chain[5][2])
    prev = chain[2][2]
    for index in range(3, 6):
        seq, _p, _d, _decision, policy = chain[index]
        forged = sha256_hex(f"forged {seq}".encode())
        digest = record_hash(seq, prev, forged, policy)
        chain[index] = (seq, prev, digest, forged, policy)
        prev = digest
    assert broken(chain, [checkpoint], signer.public_key) == (
        "record 6 changed: it does not match the signed checkpoint at record 6 "
        "(the records before it were rewritten)"
    )


def test_removed_record_gap_and_tail() -> None:
    chain = build_chain(6)
    assert broken(chain[:2] + chain[3:]) == "record 3 removed: the trail goes from record 2 to record 4"
    assert broken(chain[:5], head=6) == "record 6 removed: the chain head is at record 6"
    assert broken(chain[1:]) == (
        "record 1 removed: the trail starts at record 2 and no signed retention checkpoint covers the records before it"
    )
    signer = CheckpointSigner(Ed25519PrivateKey.generate())
    assert broken(chain[:4], [signer.sign(6, chain[5][2])], signer.public_key) == (
        "record 5 removed: the signed checkpoint at record 6 covers it"
    )


def test_removed_record_with_renumbering() -> None:
    chain = build_chain(6)
    shifted = chain[:2] + [(s - 1, p, h, d, q) for s, p, h, d, q in chain[3:]]
    assert broken(shifted) == (
        "record 3 removed: the records after it were renumbered (record 3 was recorded as 4)"
    )


def test_inserted_record_with_renumbering_and_in_place() -> None:
    chain = build_chain(6)
    prev = chain[2][2]
    fake_decision = sha256_hex(b"fake")
    fake = (4, prev, record_hash(4, prev, fake_decision, None), fake_decision, None)
    shifted = chain[:3] + [fake] + [(s + 1, p, h, d, q) for s, p, h, d, q in chain[3:]]
    assert broken(shifted) == (
        "record 4 inserted: the records after it were renumbered (record 5 was recorded as 4)"
    )


def test_bad_checkpoint_signature_is_named() -> None:
    signer = CheckpointSigner(Ed25519PrivateKey.generate())
    chain = build_chain(3)
    good = signer.sign(3, chain[2][2])
    forged = Checkpoint(3, good.record_hash, good.created_at, good.key_id, "AAAA" + good.signature[4:])
    assert broken(chain, [forged], signer.public_key) == (
        "checkpoint at record 3 is not valid: its signature is not valid"
    )


def test_pruned_prefix_is_anchored_by_a_checkpoint() -> None:
    signer = CheckpointSigner(Ed25519PrivateKey.generate())
    chain = build_chain(10)
    checkpoints = [signer.sign(4, chain[3][2]), signer.sign(10, chain[9][2], pruned_through=4)]
    report = run(chain[4:], checkpoints, signer.public_key, head=10)
    assert report.records == 6 and report.pruned_through == 4
    assert report.summary().endswith("; records 1..4 pruned by retention")


def test_unanchored_export_must_end_with_a_checkpoint() -> None:
    signer = CheckpointSigner(Ed25519PrivateKey.generate())
    chain = build_chain(6)
    report = run(chain[3:], [signer.sign(6, chain[5][2])], signer.public_key,
                 anchored_start=False, require_final_checkpoint=True)
    assert report.records == 3
    assert broken(chain[3:5], [signer.sign(4, chain[3][2])], signer.public_key,
                  anchored_start=False, require_final_checkpoint=True) == (
        "record 5 is not covered by a signed checkpoint: the export must end with the checkpoint at its last record"
    )


CANONICAL_CASES = [
    {"b": 1, "a": [1, 2.5, None, True, False], "c": {"z": "x", "y": "é\u2028\x1f\"\\/"}},
    {"latency_ms": 12.345, "small": 0.0001, "big": 123456789012345.6, "neg": -7.25},
    {"integral": 12.0},            # ECMAScript prints 12
    {"tiny": 1e-05},               # ECMAScript prints 0.00001
    {"huge": 1e16},                # ECMAScript prints 10000000000000000
    {"\u00e9": 1, "z": 2, "\U0001f600": 3, "\uffff": 4},  # UTF-16 key order
    {"emoji": "\U0001f600", "zero": 0, "minus_zero": -0.0},
    {"nested": [[[{"k": [1e-7, 5e-324, 1.7976931348623157e308]}]]]},
    {"controls": "".join(chr(i) for i in range(0x250)) + "\x7f\u2029\ufeff"},
    {"deep": functools.reduce(lambda inner, _: [inner], range(300), [1.5])},  # type: ignore[list-item]  # orjson: 255
    {"enums": [Verdict.ALLOW, EnforcementMode.WARN], "tuple": (1, "a"), "max": 2**53 - 1},
]


@pytest.mark.parametrize("value", CANONICAL_CASES)
def test_canonical_json_matches_the_reference_implementation(value: Any) -> None:
    from gatekeeper.audit.chain import canonical_json

    assert canonical_json(value) == rfc8785.dumps(value)


def test_canonical_json_writes_floats_as_the_reference_implementation() -> None:
    """The fast path (orjson) against RFC 8785 on floats of every magnitude it accepts."""
    from gatekeeper.audit.chain import canonical_json

    generator = random.Random(8785)
    values = [generator.uniform(-1, 1) * 10 ** generator.uniform(-4, 16) for _ in range(3000)]
    values += [round(generator.uniform(0, 10_000), generator.randint(1, 6)) for _ in range(3000)]
    document = {"values": values, "latency_ms": [round(v, 3) for v in values[:500]]}
    assert canonical_json(document) == rfc8785.dumps(document)


def test_canonical_json_refuses_what_json_cannot_carry() -> None:
    from gatekeeper.audit.chain import canonical_json
    from gatekeeper.errors import InvalidInputError

    for bad in ({"n": float("nan")}, {"i": 2**60}, {"s": "\ud800"}):
        with pytest.raises(InvalidInputError):
            canonical_json(bad)
