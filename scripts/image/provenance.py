"""Write the SLSA v1 provenance predicate of a built image (https://slsa.dev/provenance/v1).

scripts/build-image attests it to the image digest with cosign (`--type slsaprovenance1`); the
builder id is what `policies/data.json` lists under `allowed_builders`.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

BUILD_TYPE = "https://github.com/forge/gatekeeper/scripts/build-image/v1"


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--image-name", required=True)
    parser.add_argument("--image-digest", required=True)
    parser.add_argument("--builder-id", required=True)
    parser.add_argument("--revision", required=True)
    parser.add_argument("--containerfile", type=Path, required=True)
    parser.add_argument("--material", action="append", default=[], metavar="NAME=PATH")
    args = parser.parse_args(argv)

    dependencies = [{
        "uri": "git+https://github.com/forge/gatekeeper",
        "digest": {"gitCommit": args.revision},
    }]
    for material in args.material:
        name, _, path = material.partition("=")
        if not path:
            raise SystemExit(f"--material {material!r}: expected NAME=PATH")
        dependencies.append({"name": name, "digest": {"sha256": sha256_file(Path(path))}})
    predicate = {
        "buildDefinition": {
            "buildType": BUILD_TYPE,
            "externalParameters": {
                "image": args.image_name,
                "containerfile": {"sha256": sha256_file(args.containerfile)},
            },
            "internalParameters": {"isolation": "buildah chroot, vfs storage"},
            "resolvedDependencies": dependencies,
        },
        "runDetails": {
            "builder": {"id": args.builder_id},
            "metadata": {"invocationId": f"{args.image_digest}"},
        },
    }
    json.dump(predicate, sys.stdout, indent=2, sort_keys=True)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main(sys.argv[1:])
