"""The per-decision revision stamp lists exactly the files the revision hash covers."""

from __future__ import annotations

import os
from pathlib import Path

from gatekeeper.policy.revision import DirectoryRevision, _policy_files, hash_policy_files


def test_directory_revision_hashes_what_policy_files_lists(tmp_path: Path) -> None:
    policies = tmp_path / "policies"
    (policies / "rules" / "nested").mkdir(parents=True)
    (policies / ".hidden").mkdir()
    (policies / "main.rego").write_text("package gatekeeper.main\n")
    (policies / "data.json").write_text("{}")
    (policies / "rules" / "a.rego").write_text("package gatekeeper.rules.a\n")
    (policies / "rules" / "nested" / "b.yaml").write_text("x: 1\n")
    (policies / "rules" / "notes.txt").write_text("not policy")
    (policies / ".hidden" / "c.rego").write_text("package hidden\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "d.rego").write_text("package linked\n")
    os.symlink(elsewhere, policies / "linked")
    expected = hash_policy_files(
        {str(p.relative_to(policies)): p.read_bytes() for p in _policy_files(policies)})
    revision = DirectoryRevision(policies)
    assert revision.current() == expected
    (policies / "rules" / "a.rego").write_text("package gatekeeper.rules.a\n\n")
    changed = revision.current()
    assert changed != expected and changed == hash_policy_files(
        {str(p.relative_to(policies)): p.read_bytes() for p in _policy_files(policies)})
