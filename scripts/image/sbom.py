"""Write a CycloneDX 1.6 SBOM of a built image: its Debian packages, Python packages and OPA.

The document is a pure function of its inputs (no clock, no random serial number), so two builds
of the same inputs give the same SBOM. It is attested to the image digest by scripts/build-image.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import sys
import tarfile
import uuid
from pathlib import Path
from urllib.parse import quote

DEBIAN_NAMESPACE = "debian"
DISTRO = "debian-12"


def parse_dpkg_status(text: str) -> list[dict[str, str]]:
    """Installed packages from a dpkg status file (RFC 822-style stanzas)."""
    packages = []
    for stanza in text.split("\n\n"):
        fields: dict[str, str] = {}
        key = ""
        for line in stanza.splitlines():
            if line[:1] in (" ", "\t") and key:
                continue  # continuation lines (descriptions) are not needed
            key, _, value = line.partition(":")
            fields[key] = value.strip()
        if fields.get("Package") and "install ok installed" in fields.get("Status", ""):
            packages.append(fields)
    return packages


def debian_components(rootfs: Path) -> list[dict[str, object]]:
    with tarfile.open(rootfs) as archive:
        member = archive.extractfile("./var/lib/dpkg/status")
        if member is None:
            raise SystemExit(f"{rootfs}: no ./var/lib/dpkg/status")
        status = member.read().decode()
    components = []
    for package in parse_dpkg_status(status):
        name, version = package["Package"], package["Version"]
        arch = package.get("Architecture", "")
        purl = (f"pkg:deb/{DEBIAN_NAMESPACE}/{name}@{quote(version, safe='')}"
                f"?arch={arch}&distro={DISTRO}")
        component: dict[str, object] = {
            "type": "library", "bom-ref": purl, "name": name, "version": version, "purl": purl,
        }
        if package.get("Source"):
            component["properties"] = [{"name": "debian:source", "value": package["Source"]}]
        components.append(component)
    return components


def python_components(site: Path) -> list[dict[str, object]]:
    components = []
    for info in sorted(site.glob("*.dist-info")):
        meta = (info / "METADATA").read_text(encoding="utf-8", errors="replace")
        header = meta.split("\n\n", 1)[0]
        name = re.search(r"^Name: (.+)$", header, re.M)
        version = re.search(r"^Version: (.+)$", header, re.M)
        if not (name and version):
            continue
        canonical = re.sub(r"[-_.]+", "-", name.group(1).strip()).lower()
        purl = f"pkg:pypi/{canonical}@{version.group(1).strip()}"
        component: dict[str, object] = {
            "type": "library", "bom-ref": purl, "name": canonical,
            "version": version.group(1).strip(), "purl": purl,
        }
        expression = re.search(r"^License-Expression: (.+)$", header, re.M)
        if expression:
            component["licenses"] = [{"expression": expression.group(1).strip()}]
        components.append(component)
    return components


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--image-name", required=True)
    parser.add_argument("--image-digest", required=True)
    parser.add_argument("--version", required=True)
    parser.add_argument("--rootfs", type=Path)
    parser.add_argument("--site-packages", type=Path)
    parser.add_argument("--opa", type=Path, required=True)
    parser.add_argument("--opa-version", required=True)
    args = parser.parse_args(argv)
    if not re.fullmatch(r"sha256:[0-9a-f]{64}", args.image_digest):
        raise SystemExit(f"--image-digest {args.image_digest!r} is not a sha256 digest")

    components: list[dict[str, object]] = []
    if args.rootfs:
        components += debian_components(args.rootfs)
    if args.site_packages:
        components += python_components(args.site_packages)
    opa_purl = f"pkg:golang/github.com/open-policy-agent/opa@v{args.opa_version}"
    components.append({
        "type": "application", "bom-ref": opa_purl, "name": "opa",
        "version": args.opa_version, "purl": opa_purl,
        "hashes": [{"alg": "SHA-256",
                    "content": hashlib.sha256(args.opa.read_bytes()).hexdigest()}],
        "licenses": [{"license": {"id": "Apache-2.0"}}],
    })
    components.sort(key=lambda c: str(c["bom-ref"]))
    image_purl = f"pkg:oci/{args.image_name.rsplit('/', 1)[-1]}@{quote(args.image_digest, safe='')}"
    bom = {
        "bomFormat": "CycloneDX",
        "specVersion": "1.6",
        "serialNumber": f"urn:uuid:{uuid.uuid5(uuid.NAMESPACE_URL, image_purl)}",
        "version": 1,
        "metadata": {
            "tools": {"components": [
                {"type": "application", "name": "forge-gatekeeper build-image"}]},
            "component": {
                "type": "container", "bom-ref": image_purl, "name": args.image_name,
                "version": args.version, "purl": image_purl,
                "hashes": [{"alg": "SHA-256", "content": args.image_digest.split(":", 1)[1]}],
            },
        },
        "components": components,
    }
    json.dump(bom, sys.stdout, indent=2, sort_keys=True)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main(sys.argv[1:])
