package gatekeeper.rules.sbom_test

import data.gatekeeper.rules.sbom

ref := "registry.example.com/shop/api@sha256:aaaa"

component(purl, licences) := {
	"purl": purl, "name": "x", "version": "1.0", "type": "library",
	"licenses": licences, "license_ids": licences, "hashes": {},
}

bound(components) := {
	"present": true, "valid": true, "bound": true, "state": "bound", "reason": "bound by upload",
	"format": "cyclonedx", "spec_version": "1.6", "sha256": "00", "origin": "upload 1",
	"binding": {"method": "upload", "named_digests": ["sha256:aaaa"]},
	"component_count": count(components), "truncated": false, "components": components,
}

request(environment, sbom_section) := {
	"environment": environment,
	"evaluated_at": "2026-03-02T10:00:00Z",
	"images": [{
		"reference": ref, "registry": "registry.example.com", "repository": "shop/api",
		"tag": null, "digest": "sha256:aaaa", "evidence": {"sbom": sbom_section},
	}],
}

config := {"sbom": {
	"banned_components": [
		{"purl": "pkg:npm/event-stream@3.3.6", "reason": "malicious release (flatmap-stream)"},
		{"purl": "pkg:maven/org.apache.logging.log4j/log4j-core@2.1[0-4].*", "reason": "Log4Shell"},
		{"purl": "pkg:pypi/debug-only-*", "reason": "development tooling", "environments": ["production"]},
	],
	"banned_licenses": [{"id": "AGPL-*", "reason": "network copyleft"}, {"id": "SSPL-1.0", "reason": "not OSI approved"}],
}}

test_banned_component_is_named if {
	components := [component("pkg:npm/event-stream@3.3.6", ["MIT"]), component("pkg:npm/left-pad@1.3.0", ["MIT"])]
	denies := sbom.deny with input as request("production", bound(components)) with data.gatekeeper.config as config
	denies == {{"image": ref, "message": "banned component pkg:npm/event-stream@3.3.6: malicious release (flatmap-stream)"}}
}

test_banned_purl_pattern if {
	components := [component("pkg:maven/org.apache.logging.log4j/log4j-core@2.14.1", ["Apache-2.0"])]
	denies := sbom.deny with input as request("staging", bound(components)) with data.gatekeeper.config as config
	denies == {{"image": ref, "message": "banned component pkg:maven/org.apache.logging.log4j/log4j-core@2.14.1: Log4Shell"}}
}

test_pattern_does_not_match_fixed_version if {
	components := [component("pkg:maven/org.apache.logging.log4j/log4j-core@2.17.1", ["Apache-2.0"])]
	count(sbom.deny) == 0 with input as request("production", bound(components)) with data.gatekeeper.config as config
}

test_environment_scoped_ban if {
	components := [component("pkg:pypi/debug-only-toolbar@1.0", ["MIT"])]
	count(sbom.deny) == 1 with input as request("production", bound(components)) with data.gatekeeper.config as config
	count(sbom.deny) == 0 with input as request("development", bound(components)) with data.gatekeeper.config as config
}

test_banned_licence_inside_an_expression if {
	c := object.union(component("pkg:npm/mongo-thing@2.0", ["MIT", "SSPL-1.0"]), {"licenses": ["MIT OR SSPL-1.0"]})
	denies := sbom.deny with input as request("production", bound([c])) with data.gatekeeper.config as config
	denies == {{"image": ref, "message": "component pkg:npm/mongo-thing@2.0 is under banned licence SSPL-1.0: not OSI approved"}}
}

test_banned_licence_glob_and_component_without_purl if {
	c := {"purl": null, "name": "tool", "version": "3", "type": "application", "licenses": ["AGPL-3.0-only"], "license_ids": ["AGPL-3.0-only"], "hashes": {}}
	denies := sbom.deny with input as request("development", bound([c])) with data.gatekeeper.config as config
	denies == {{"image": ref, "message": "component tool 3 is under banned licence AGPL-3.0-only: network copyleft"}}
}

test_sbom_required_in_production if {
	missing := {"present": false, "state": "missing", "reason": "no SBOM found for the image", "components": []}
	denies := sbom.deny with input as request("production", missing) with data.gatekeeper.config as {}
	denies == {{"image": ref, "message": "an SBOM is required in production: no SBOM found for the image"}}
	count(sbom.deny) == 0 with input as request("development", missing) with data.gatekeeper.config as {}
}

test_no_sbom_evidence_at_all_denies_only_when_configured if {
	inp := json.remove(request("production", {}), ["images/0/evidence/sbom"])
	count(sbom.deny) == 0 with input as inp with data.gatekeeper.config as {}
	cfg := {"sbom": {"environments": {"production": {"deny_when_not_collected": true}}}}
	denies := sbom.deny with input as inp with data.gatekeeper.config as cfg
	denies == {{"image": ref, "message": "an SBOM is required in production: no SBOM evidence was collected"}}
}

test_sbom_for_another_artifact_is_denied_in_production if {
	other := {
		"present": true, "valid": true, "bound": false, "state": "another_artifact",
		"reason": "SBOM for another artifact: its upload names sha256:bbbbbbbbbbbb, not sha256:aaaaaaaaaaaa",
		"components": [],
	}
	denies := sbom.deny with input as request("production", other) with data.gatekeeper.config as {}
	denies == {{"image": ref, "message": "the SBOM must be bound to the image digest in production: SBOM for another artifact: its upload names sha256:bbbbbbbbbbbb, not sha256:aaaaaaaaaaaa"}}
	warns := sbom.warn with input as request("development", other) with data.gatekeeper.config as {}
	warns == {{"image": ref, "message": "SBOM for another artifact: its upload names sha256:bbbbbbbbbbbb, not sha256:aaaaaaaaaaaa"}}
}

test_unbound_sbom_components_still_checked_in_development if {
	unbound := object.union(bound([component("pkg:npm/event-stream@3.3.6", ["MIT"])]), {"state": "unbound", "bound": false, "reason": "not bound"})
	denies := sbom.deny with input as request("development", unbound) with data.gatekeeper.config as config
	denies == {{"image": ref, "message": "banned component pkg:npm/event-stream@3.3.6: malicious release (flatmap-stream)"}}
}

test_invalid_sbom_denied_in_production_and_warned_elsewhere if {
	invalid := {"present": true, "valid": false, "state": "invalid", "reason": "SBOM is invalid: CycloneDX 1.6 schema violation at $.components[0].type: \"weird\" is not one of ...", "components": []}
	denies := sbom.deny with input as request("production", invalid) with data.gatekeeper.config as {}
	count(denies) == 1
	warns := sbom.warn with input as request("staging", invalid) with data.gatekeeper.config as {}
	warns == {{"image": ref, "message": invalid.reason}}
}

test_truncated_sbom_denied_in_production if {
	big := object.union(bound([]), {"truncated": true, "component_count": 12000})
	denies := sbom.deny with input as request("production", big) with data.gatekeeper.config as {}
	denies == {{"image": ref, "message": "the SBOM lists 12000 components, more than the gatekeeper evaluates; production needs a complete list"}}
}

test_bound_clean_sbom_is_allowed if {
	components := [component("pkg:npm/left-pad@1.3.0", ["MIT"])]
	count(sbom.deny) == 0 with input as request("production", bound(components)) with data.gatekeeper.config as config
}
