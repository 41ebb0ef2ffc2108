import json
import os

import pytest

from tests.golden_cases import GOLDEN_DIR, golden_inputs


@pytest.mark.parametrize("name", sorted(golden_inputs()))
def test_golden_input_is_what_the_builder_produces(name: str) -> None:
    produced = golden_inputs()[name]
    path = GOLDEN_DIR / name / "data.json"
    if os.environ.get("UPDATE_GOLDEN") == "1":
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(produced, indent=2, sort_keys=True) + "\n")
    assert path.exists(), f"missing golden {path}; run with UPDATE_GOLDEN=1"
    assert json.loads(path.read_text()) == produced, (
        f"{path} is stale: the input builder changed; review, then UPDATE_GOLDEN=1"
    )


def test_every_golden_on_disk_has_a_case() -> None:
    on_disk = {p.parent.name for p in GOLDEN_DIR.glob("*/data.json")}
    assert on_disk == set(golden_inputs())
