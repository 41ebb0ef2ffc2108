# SBOM components by reference (issue 17.2): a large component list reaches the policy as
# d.components_sha256 plus its index in data.gatekeeper.evidence[<sha256>]. Every decision must
# be the one the same components give inline.
package gatekeeper.sbom_by_reference_test

import data.gatekeeper.main
import data.gatekeeper.rules.sbom
import data.gatekeeper.rules.sbom_test.attested
import data.gatekeeper.rules.sbom_test.component
import data.gatekeeper.rules.sbom_test.config
import data.gatekeeper.rules.sbom_test.document
import data.gatekeeper.rules.sbom_test.ref
import data.gatekeeper.rules.sbom_test.request
import data.gatekeeper.rules.sbom_test.section

# The index gatekeeper/domain/evidence_documents.py builds (written here as a scan: tests only;
# the golden below pins the Python builder's output).
index(components) := {
	"purls": {c.purl: true | some c in components; is_string(c.purl)},
	"packages": {key: sort({p |
		some other in components
		p := other.purl
		is_string(p)
		split(p, "@")[0] == key
	}) |
		some c in components
		is_string(c.purl)
		key := split(c.purl, "@")[0]
	},
	"types": {key: sort({p |
		some other in components
		p := other.purl
		is_string(p)
		type_key(p) == key
	}) |
		some c in components
		is_string(c.purl)
		key := type_key(c.purl)
	},
	"licenses": {id: {sbom.component_name(other): true |
		some other in components
		id in other.license_ids
	} |
		some c in components
		some id in c.license_ids
	},
	"component_count": count(components),
}

type_key(purl) := substring(purl, 0, indexof(purl, "/") + 1)

by_reference(doc, digest) := object.union(object.remove(doc, ["components"]), {"components_sha256": digest})

# [inline input, by-reference input, evidence data] for one attested document.
both_ways(environment, components) := [
	request(environment, attested(components)),
	request(environment, section([by_reference(document("attestation", "release", components), "d1")])),
	{"d1": index(components)},
]

same_denies(environment, components, cfg) := denies if {
	[inline, referenced, evidence] := both_ways(environment, components)
	denies := sbom.deny with input as inline with data.gatekeeper.config as cfg
	denies == sbom.deny with input as referenced with data.gatekeeper.config as cfg with data.gatekeeper.evidence as evidence
}

test_exact_purl_is_found_by_reference if {
	components := [component("pkg:npm/event-stream@3.3.6", ["MIT"]), component("pkg:npm/left-pad@1.3.0", ["MIT"])]
	same_denies("production", components, config) == {{"image": ref, "message": "banned component pkg:npm/event-stream@3.3.6: malicious release (flatmap-stream) (listed by attestation by release)"}}
}

test_version_pattern_is_found_through_the_package_index if {
	components := [
		component("pkg:maven/org.apache.logging.log4j/log4j-core@2.14.1", ["Apache-2.0"]),
		component("pkg:maven/org.apache.logging.log4j/log4j-core@2.17.1", ["Apache-2.0"]),
	]
	same_denies("production", components, config) == {{"image": ref, "message": "banned component pkg:maven/org.apache.logging.log4j/log4j-core@2.14.1: Log4Shell (listed by attestation by release)"}}
}

test_wildcard_in_the_name_globs_only_the_purls_of_its_type if {
	components := [component("pkg:pypi/debug-only-toolbar@1.0", ["MIT"]), component("pkg:pypi/requests@2.0", ["MIT"])]
	same_denies("production", components, config) == {{"image": ref, "message": "banned component pkg:pypi/debug-only-toolbar@1.0: development tooling (listed by attestation by release)"}}
}

test_package_pattern_does_not_match_a_longer_name if {
	cfg := {"sbom": {"banned_components": [{"purl": "pkg:npm/event-stream@*", "reason": "all of it"}]}}
	components := [component("pkg:npm/event-stream-fork@3.3.6", ["MIT"]), component("pkg:npm/event-stream@4.0.1", ["MIT"])]
	same_denies("production", components, cfg) == {{"image": ref, "message": "banned component pkg:npm/event-stream@4.0.1: all of it (listed by attestation by release)"}}
}

test_an_unencoded_scope_at_sign_is_still_found if {
	# "@" before the version: the package key is the purl up to its FIRST "@", for both sides
	cfg := {"sbom": {"banned_components": [{"purl": "pkg:npm/@evil/thing@*", "reason": "typosquat"}]}}
	components := [component("pkg:npm/@evil/thing@1.0.0", ["MIT"]), component("pkg:npm/@good/thing@1.0.0", ["MIT"])]
	same_denies("production", components, cfg) == {{"image": ref, "message": "banned component pkg:npm/@evil/thing@1.0.0: typosquat (listed by attestation by release)"}}
}

test_a_wildcard_in_the_type_still_globs_every_purl if {
	cfg := {"sbom": {"banned_components": [{"purl": "pkg:*/left-pad@*", "reason": "any ecosystem"}]}}
	components := [component("pkg:npm/left-pad@1.3.0", ["MIT"]), component("pkg:gem/left-pad@0.1", ["MIT"]), component("pkg:npm/right-pad@1", ["MIT"])]
	same_denies("production", components, cfg) == {
		{"image": ref, "message": "banned component pkg:gem/left-pad@0.1: any ecosystem (listed by attestation by release)"},
		{"image": ref, "message": "banned component pkg:npm/left-pad@1.3.0: any ecosystem (listed by attestation by release)"},
	}
}

test_a_star_crossing_the_version_separator_is_found if {
	# "*" crosses "@": "pkg:npm/left-pad*" also matches every version of left-pad
	cfg := {"sbom": {"banned_components": [{"purl": "pkg:npm/left-pad*", "reason": "no"}]}}
	components := [component("pkg:npm/left-pad@1.3.0", ["MIT"])]
	same_denies("production", components, cfg) == {{"image": ref, "message": "banned component pkg:npm/left-pad@1.3.0: no (listed by attestation by release)"}}
}

test_banned_licence_is_found_by_reference if {
	components := [
		object.union(component("pkg:npm/mongo-thing@2.0", ["MIT", "SSPL-1.0"]), {"licenses": ["MIT OR SSPL-1.0"]}),
		{"purl": null, "name": "tool", "version": "3", "type": "application", "licenses": ["AGPL-3.0-only"], "license_ids": ["AGPL-3.0-only"], "hashes": {}},
	]
	same_denies("development", components, config) == {
		{"image": ref, "message": "component pkg:npm/mongo-thing@2.0 is under banned licence SSPL-1.0: not OSI approved (listed by attestation by release)"},
		{"image": ref, "message": "component tool 3 is under banned licence AGPL-3.0-only: network copyleft (listed by attestation by release)"},
	}
}

test_clean_components_by_reference_allow if {
	components := [component("pkg:npm/left-pad@1.3.0", ["MIT"])]
	same_denies("production", components, config) == set()
	[_, referenced, evidence] := both_ways("production", components)
	d := main.decision with input as referenced with data.gatekeeper.config as config with data.gatekeeper.evidence as evidence
	d.missing_evidence == set()
}

test_a_document_inline_and_one_by_reference_are_both_named if {
	listed := [component("pkg:npm/event-stream@3.3.6", ["MIT"])]
	docs := [document("attestation", "release", listed), by_reference(document("upload", "ci-bot", listed), "d2")]
	denies := sbom.deny with input as request("development", section(docs)) with data.gatekeeper.config as config with data.gatekeeper.evidence as {"d2": index(listed)}
	denies == {{"image": ref, "message": "banned component pkg:npm/event-stream@3.3.6: malicious release (flatmap-stream) (listed by attestation by release, upload by ci-bot)"}}
}

test_unloaded_evidence_denies_and_is_reported_missing if {
	[_, referenced, _] := both_ways("production", [component("pkg:npm/left-pad@1.3.0", ["MIT"])])
	denies := sbom.deny with input as referenced with data.gatekeeper.config as config with data.gatekeeper.evidence as {}
	denies == {{"image": ref, "message": "the components of the SBOM from attestation by release (evidence document d1) are not loaded in the policy engine"}}
	d := main.decision with input as referenced with data.gatekeeper.config as config with data.gatekeeper.evidence as {}
	d.missing_evidence == {"d1"}
}

test_golden_by_reference_decides_as_the_inline_golden if {
	inline := data.golden.pipeline_production_sbom_sources
	referenced := data.golden.pipeline_production_sbom_by_reference
	evidence := data.golden.evidence_by_reference
	some document in referenced.images[0].evidence.sbom.documents
	is_string(document.components_sha256)
	denies := sbom.deny with input as referenced with data.gatekeeper.config as config with data.gatekeeper.evidence as evidence
	denies == sbom.deny with input as inline with data.gatekeeper.config as config
	count(denies) == 1
}

test_an_unloaded_attestation_predicate_is_reported_missing if {
	attestation := {"predicate_type": "https://cyclonedx.org/bom", "kind": "cyclonedx", "predicate_sha256": "p1", "predicate_truncated": false}
	inp := object.union(request("production", attested([])), {"images": [object.union(request("production", attested([])).images[0], {"evidence": {"sbom": attested([]), "signatures": {"attestations": [attestation]}}})]})
	missing := main.decision.missing_evidence with input as inp with data.gatekeeper.config as config with data.gatekeeper.evidence as {}
	missing == {"p1"}
	loaded := main.decision.missing_evidence with input as inp with data.gatekeeper.config as config with data.gatekeeper.evidence as {"p1": {"components": []}}
	loaded == set()
}
