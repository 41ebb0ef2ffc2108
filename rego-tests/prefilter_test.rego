package gatekeeper.prefilter_test

import data.gatekeeper.main

# The prefilter is asked with images that carry no evidence yet (input.prefilter set).
evidence_free(document, resolved) := object.union(
	document,
	{
		"prefilter": {"digests_resolved": resolved},
		"images": [object.union(image, {"evidence": {}}) | some image in document.images],
	},
)

registry_message := "registry \"docker.io\" is not allowed in environment \"production\""

test_registry_allow_list_is_decided_before_evidence if {
	found := main.prefilter with input as evidence_free(data.golden.pipeline_production_unpinned, true)
	{"policy": "registries", "item": {"image": "nginx", "message": registry_message}} in found
}

test_allowed_registry_is_not_prefiltered if {
	found := main.prefilter with input as evidence_free(data.golden.pipeline_production_unpinned, true)
	every f in found { f.item.image != "registry.example.com/payments/api:1.4" }
}

test_missing_digest_waits_for_resolution if {
	found := main.prefilter with input as evidence_free(data.golden.pipeline_production_unpinned, true)
	every f in found { f.policy != "digests" }
}

test_missing_digest_is_certain_without_resolution if {
	found := main.prefilter with input as evidence_free(data.golden.pipeline_production_unpinned, false)
	{"policy": "digests", "item": {
		"image": "registry.example.com/payments/api:1.4",
		"message": "image has no verified digest; environment \"production\" requires one",
	}} in found
}

test_every_prefilter_finding_is_also_a_deny if {
	document := evidence_free(data.golden.pipeline_production_unpinned, false)
	found := main.prefilter with input as document
	count(found) > 0
	denied := main.deny with input as document
	every f in found { f in denied }
}

test_waived_finding_is_not_prefiltered if {
	exception := {
		"id": "EXC-1", "images": ["docker.io/library/nginx"], "policies": ["registries"],
		"environment": "production", "namespace": null, "reason": "mirror pending",
		"ticket_id": "SEC-9", "created_at": "2026-11-20T00:00:00Z", "created_by": "alice",
		"approved_at": "2026-11-20T00:00:00Z", "approved_by": "carol",
		"expires_at": "2026-12-24T00:00:00Z", "any_digest": true, "digests": {},
	}
	found := main.prefilter with input as evidence_free(data.golden.pipeline_production_unpinned, true)
		with data.gatekeeper.exceptions as [exception]
	every f in found { f.item.image != "nginx" }
}

test_skipped_scan_evidence_is_not_judged_incomplete if {
	skipped := {"state": "skipped", "status": "skipped", "reason": "not gathered: registry not allowed"}
	image := object.union(data.golden.pipeline_production_pinned.images[0], {"evidence": {"scan": skipped}})
	document := object.union(data.golden.pipeline_production_pinned, {"images": [image]})
	denies := data.gatekeeper.rules.vulnerabilities.deny with input as document
	every d in denies { not contains(d.message, "not complete") }
}
