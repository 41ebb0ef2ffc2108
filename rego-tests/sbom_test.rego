package gatekeeper.rules.sbom_test

import data.gatekeeper.rules.sbom

ref := "registry.example.com/shop/api@sha256:aaaa"

component(purl, licences) := {
	"purl": purl, "name": "x", "version": "1.0", "type": "library",
	"licenses": licences, "license_ids": licences, "hashes": {},
}

# One entry of evidence.sbom.documents, as gatekeeper/sbom/collector.py builds it.
document(source, who, components) := {
	"source": source,
	"authority": authority_of(source, who),
	"supplied_by": supplier_of(source, who),
	"present": true, "valid": true, "bound": true, "state": "bound", "reason": sprintf("bound by %s", [source]),
	"format": "cyclonedx", "spec_version": "1.6", "sha256": "00", "origin": sprintf("%s 1", [source]),
	"binding": {"method": source, "named_digests": ["sha256:aaaa"]},
	"component_count": count(components), "truncated": false, "components": components,
}

authority_of("attestation", who) := who

authority_of(source, _) := null if source != "attestation"

supplier_of(source, who) := who if source in {"upload", "inline"}

supplier_of(source, _) := null if not source in {"upload", "inline"}

section(docs) := {
	"present": true, "state": "bound", "reason": "bound", "document_count": count(docs),
	"documents_truncated": false, "documents": docs,
}

attested(components) := section([document("attestation", "release", components)])

uploaded(components) := section([document("upload", "ci-bot", components)])

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
	denies := sbom.deny with input as request("production", attested(components)) with data.gatekeeper.config as config
	denies == {{"image": ref, "message": "banned component pkg:npm/event-stream@3.3.6: malicious release (flatmap-stream) (listed by attestation by release)"}}
}

test_banned_purl_pattern if {
	components := [component("pkg:maven/org.apache.logging.log4j/log4j-core@2.14.1", ["Apache-2.0"])]
	denies := sbom.deny with input as request("staging", uploaded(components)) with data.gatekeeper.config as config
	denies == {{"image": ref, "message": "banned component pkg:maven/org.apache.logging.log4j/log4j-core@2.14.1: Log4Shell (listed by upload by ci-bot)"}}
}

test_pattern_does_not_match_fixed_version if {
	components := [component("pkg:maven/org.apache.logging.log4j/log4j-core@2.17.1", ["Apache-2.0"])]
	count(sbom.deny) == 0 with input as request("production", attested(components)) with data.gatekeeper.config as config
}

test_environment_scoped_ban if {
	components := [component("pkg:pypi/debug-only-toolbar@1.0", ["MIT"])]
	count(sbom.deny) == 1 with input as request("production", attested(components)) with data.gatekeeper.config as config
	count(sbom.deny) == 0 with input as request("development", attested(components)) with data.gatekeeper.config as config
}

test_banned_licence_inside_an_expression if {
	c := object.union(component("pkg:npm/mongo-thing@2.0", ["MIT", "SSPL-1.0"]), {"licenses": ["MIT OR SSPL-1.0"]})
	denies := sbom.deny with input as request("production", attested([c])) with data.gatekeeper.config as config
	denies == {{"image": ref, "message": "component pkg:npm/mongo-thing@2.0 is under banned licence SSPL-1.0: not OSI approved (listed by attestation by release)"}}
}

test_banned_licence_glob_and_component_without_purl if {
	c := {"purl": null, "name": "tool", "version": "3", "type": "application", "licenses": ["AGPL-3.0-only"], "license_ids": ["AGPL-3.0-only"], "hashes": {}}
	denies := sbom.deny with input as request("development", uploaded([c])) with data.gatekeeper.config as config
	denies == {{"image": ref, "message": "component tool 3 is under banned licence AGPL-3.0-only: network copyleft (listed by upload by ci-bot)"}}
}

test_a_component_matched_by_two_bans_is_one_message_per_reason if {
	two := object.union(config, {"sbom": {"banned_components": [
		{"purl": "pkg:npm/event-stream@*", "reason": "all of it"},
		{"purl": "pkg:npm/event-stream@3.3.6", "reason": "malicious release"},
	]}})
	denies := sbom.deny with input as request("production", attested([component("pkg:npm/event-stream@3.3.6", ["MIT"])])) with data.gatekeeper.config as two
	denies == {
		{"image": ref, "message": "banned component pkg:npm/event-stream@3.3.6: all of it (listed by attestation by release)"},
		{"image": ref, "message": "banned component pkg:npm/event-stream@3.3.6: malicious release (listed by attestation by release)"},
	}
}

# --- issue 10.1: a caller-supplied SBOM can never hide one an authority signed ------------------

test_clean_upload_never_hides_a_banned_component_of_the_attested_sbom if {
	banned := document("attestation", "release", [component("pkg:npm/event-stream@3.3.6", ["MIT"])])
	clean_upload := document("upload", "ci-bot", [component("pkg:npm/left-pad@1.3.0", ["MIT"])])
	clean_inline := document("inline", "ci-bot", [component("pkg:npm/left-pad@1.3.0", ["MIT"])])
	every docs in [[clean_upload, banned], [banned, clean_inline], [clean_inline, clean_upload, banned]] {
		denies := sbom.deny with input as request("production", section(docs)) with data.gatekeeper.config as config
		denies == {{"image": ref, "message": "banned component pkg:npm/event-stream@3.3.6: malicious release (flatmap-stream) (listed by attestation by release)"}}
	}
}

test_every_document_listing_the_component_is_named if {
	listed := [component("pkg:npm/event-stream@3.3.6", ["MIT"])]
	docs := [document("attestation", "release", listed), document("inline", "ci-bot", listed), document("referrer", null, listed)]
	denies := sbom.deny with input as request("development", section(docs)) with data.gatekeeper.config as config
	denies == {{"image": ref, "message": "banned component pkg:npm/event-stream@3.3.6: malicious release (flatmap-stream) (listed by attestation by release, inline by ci-bot, referrer)"}}
}

test_production_accepts_an_upload_alone_with_a_warning if {
	inp := request("production", uploaded([component("pkg:npm/left-pad@1.3.0", ["MIT"])]))
	count(sbom.deny) == 0 with input as inp with data.gatekeeper.config as {}
	warns := sbom.warn with input as inp with data.gatekeeper.config as {}
	warns == {{"image": ref, "message": "no SBOM from attestation in production: accepted with a warning on the SBOM from upload by ci-bot"}}
}

test_production_with_an_attested_sbom_does_not_warn_about_uploads if {
	docs := [document("upload", "ci-bot", []), document("attestation", "release", [])]
	count(sbom.deny) == 0 with input as request("production", section(docs)) with data.gatekeeper.config as {}
	count(sbom.warn) == 0 with input as request("production", section(docs)) with data.gatekeeper.config as {}
}

test_a_source_that_is_not_proof_nor_tolerated_denies if {
	strict := {"sbom": {"environments": {"production": {"proof_sources": ["attestation"], "warn_sources": []}}}}
	denies := sbom.deny with input as request("production", uploaded([])) with data.gatekeeper.config as strict
	denies == {{"image": ref, "message": "an SBOM is required in production: only SBOMs from upload by ci-bot were found, which do not count as proof there (accepted: attestation)"}}
}

test_uploads_are_proof_outside_production if {
	count(sbom.warn) == 0 with input as request("staging", uploaded([])) with data.gatekeeper.config as {}
	count(sbom.deny) == 0 with input as request("staging", uploaded([])) with data.gatekeeper.config as {}
}

# --- presence and binding --------------------------------------------------------------------

test_sbom_required_in_production if {
	missing := {"present": false, "state": "missing", "reason": "no SBOM found for the image", "documents": []}
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
	reason := "SBOM for another artifact: its upload names sha256:bbbbbbbbbbbb, not sha256:aaaaaaaaaaaa"
	other_doc := object.union(document("upload", "ci-bot", []), {"bound": false, "state": "another_artifact", "reason": reason})
	other := {"present": true, "state": "another_artifact", "reason": reason, "documents": [other_doc]}
	denies := sbom.deny with input as request("production", other) with data.gatekeeper.config as {}
	denies == {{"image": ref, "message": concat("", ["the SBOM must be bound to the image digest in production: ", reason])}}
	warns := sbom.warn with input as request("development", other) with data.gatekeeper.config as {}
	warns == {{"image": ref, "message": reason}}
}

test_unbound_sbom_components_still_checked_in_development if {
	unbound_doc := object.union(document("referrer", null, [component("pkg:npm/event-stream@3.3.6", ["MIT"])]), {"state": "unbound", "bound": false, "reason": "not bound"})
	unbound := {"present": true, "state": "unbound", "reason": "not bound", "documents": [unbound_doc]}
	denies := sbom.deny with input as request("development", unbound) with data.gatekeeper.config as config
	denies == {{"image": ref, "message": "banned component pkg:npm/event-stream@3.3.6: malicious release (flatmap-stream) (listed by referrer)"}}
}

test_invalid_sbom_denied_in_production_and_warned_elsewhere if {
	reason := "SBOM is invalid: CycloneDX 1.6 schema violation at $.components[0].type: \"weird\" is not one of ..."
	invalid := {"present": true, "state": "invalid", "reason": reason, "documents": []}
	denies := sbom.deny with input as request("production", invalid) with data.gatekeeper.config as {}
	count(denies) == 1
	warns := sbom.warn with input as request("staging", invalid) with data.gatekeeper.config as {}
	warns == {{"image": ref, "message": reason}}
}

test_truncated_sbom_denied_in_production if {
	big := object.union(document("attestation", "release", []), {"truncated": true, "component_count": 12000})
	denies := sbom.deny with input as request("production", section([big])) with data.gatekeeper.config as {}
	denies == {{"image": ref, "message": "the SBOM from attestation by release lists 12000 components, more than the gatekeeper evaluates; production needs a complete list"}}
}

test_more_stored_sboms_than_read_denies_in_production if {
	many := object.union(attested([]), {"documents_truncated": true})
	denies := sbom.deny with input as request("production", many) with data.gatekeeper.config as {}
	denies == {{"image": ref, "message": "more SBOMs are stored for the image digest than the gatekeeper reads; production needs every one"}}
	count(sbom.deny) == 0 with input as request("staging", many) with data.gatekeeper.config as {}
}

test_bound_clean_sbom_is_allowed if {
	components := [component("pkg:npm/left-pad@1.3.0", ["MIT"])]
	count(sbom.deny) == 0 with input as request("production", attested(components)) with data.gatekeeper.config as config
	count(sbom.warn) == 0 with input as request("production", attested(components)) with data.gatekeeper.config as config
}

test_golden_banned_component_of_the_attested_sbom_denies_despite_a_clean_upload if {
	golden := data.golden.pipeline_production_sbom_sources
	denies := sbom.deny with input as golden with data.gatekeeper.config as config
	denies == {{"image": golden.images[0].reference, "message": "banned component pkg:npm/event-stream@3.3.6: malicious release (flatmap-stream) (listed by attestation by release)"}}
	count(sbom.warn) == 0 with input as golden with data.gatekeeper.config as config
}

test_a_replayed_schema_1_input_is_judged_as_its_one_document if {
	v1 := {
		"present": true, "valid": true, "bound": true, "state": "bound", "reason": "bound by attestation",
		"binding": {"method": "attestation", "named_digests": ["sha256:aaaa"]},
		"component_count": 1, "truncated": false, "components": [component("pkg:npm/event-stream@3.3.6", ["MIT"])],
	}
	denies := sbom.deny with input as request("production", v1) with data.gatekeeper.config as config
	denies == {{"image": ref, "message": "banned component pkg:npm/event-stream@3.3.6: malicious release (flatmap-stream) (listed by attestation)"}}
	count(sbom.warn) == 0 with input as request("production", v1) with data.gatekeeper.config as config
}

test_a_replayed_schema_1_unbound_document_without_binding_method_is_named if {
	v1 := {
		"present": true, "valid": true, "bound": false, "state": "unbound", "reason": "not bound",
		"binding": {"method": null, "named_digests": []},
		"component_count": 1, "truncated": false, "components": [component("pkg:npm/event-stream@3.3.6", ["MIT"])],
	}
	denies := sbom.deny with input as request("development", v1) with data.gatekeeper.config as config
	denies == {{"image": ref, "message": "banned component pkg:npm/event-stream@3.3.6: malicious release (flatmap-stream) (listed by an unknown source)"}}
}

test_a_document_not_counted_beside_a_bound_one_is_named_in_a_warning if {
	reason := "SBOM for another artifact: its attestation names sha256:bbbbbbbbbbbb, not sha256:aaaaaaaaaaaa"
	other := object.union(document("attestation", "release", []), {"bound": false, "state": "another_artifact", "reason": reason, "components": []})
	docs := [other, document("attestation", "release", [])]
	count(sbom.deny) == 0 with input as request("production", section(docs)) with data.gatekeeper.config as {}
	warns := sbom.warn with input as request("production", section(docs)) with data.gatekeeper.config as {}
	warns == {{"image": ref, "message": concat("", ["SBOM from attestation by release not counted: ", reason])}}
}
