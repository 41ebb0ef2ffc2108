package gatekeeper.exceptions_test

import data.gatekeeper.main

# data.golden.pipeline_production_unpinned is evaluated at 2026-11-24T12:00:00Z and asks for
# "nginx" (docker.io/library/nginx:latest) in production, namespace "payments".
# A repository-wide exception: says so with any_digest, approved by a second person.
hub_exception := {
	"id": "EXC-1",
	"images": ["docker.io/library/nginx"],
	"policies": ["registries"],
	"environment": "production",
	"namespace": null,
	"reason": "vendor image, mirror pending",
	"ticket_id": "SEC-9",
	"created_at": "2026-11-20T00:00:00Z",
	"created_by": "alice",
	"approved_at": "2026-11-20T00:00:00Z",
	"approved_by": "carol",
	"expires_at": "2026-11-24T12:00:01Z",
	"any_digest": true,
	"digests": {},
}

registry_message := "registry \"docker.io\" is not allowed in environment \"production\""

registry_finding := {"policy": "registries", "item": {"image": "nginx", "message": registry_message}}

test_waived_until_the_expiry_instant if {
	d := main.decision with input as data.golden.pipeline_production_unpinned
		with data.gatekeeper.exceptions as [hub_exception]
	not registry_finding in d.deny
	{"policy": "registries", "item": {
		"image": "nginx",
		"message": sprintf("waived by exception EXC-1 (ticket SEC-9, expires 2026-11-24T12:00:01Z, any digest): %s", [registry_message]),
	}} in d.warn
	{"id": "EXC-1", "ticket_id": "SEC-9", "expires_at": "2026-11-24T12:00:01Z", "policy": "registries", "image": "nginx", "status": "applied", "any_digest": true} in d.exceptions
}

test_not_waived_at_and_after_expiry if {
	at_expiry := object.union(data.golden.pipeline_production_unpinned, {"evaluated_at": "2026-11-24T12:00:01Z"})
	d := main.decision with input as at_expiry with data.gatekeeper.exceptions as [hub_exception]
	registry_finding in d.deny
	{"policy": "registries", "item": {
		"image": "nginx",
		"message": sprintf("exception EXC-1 (ticket SEC-9) expired at 2026-11-24T12:00:01Z; not waived: %s", [registry_message]),
	}} in d.warn
	{"id": "EXC-1", "ticket_id": "SEC-9", "expires_at": "2026-11-24T12:00:01Z", "policy": "registries", "image": "nginx", "status": "expired", "any_digest": true} in d.exceptions
}

test_not_waived_before_creation if {
	before := object.union(data.golden.pipeline_production_unpinned, {"evaluated_at": "2026-11-19T23:59:59Z"})
	d := main.decision with input as before with data.gatekeeper.exceptions as [hub_exception]
	registry_finding in d.deny
	count(d.exceptions) == 0
}

test_only_named_policies_are_waived if {
	d := main.decision with input as data.golden.pipeline_production_unpinned
		with data.gatekeeper.exceptions as [hub_exception]
	{"policy": "digests", "item": {
		"image": "nginx",
		"message": "image has no verified digest; environment \"production\" requires one",
	}} in d.deny
}

test_other_environment_is_not_waived if {
	staging := object.union(hub_exception, {"environment": "staging"})
	d := main.decision with input as data.golden.pipeline_production_unpinned
		with data.gatekeeper.exceptions as [staging]
	registry_finding in d.deny
}

test_namespace_scope if {
	other := object.union(hub_exception, {"namespace": "billing"})
	same := object.union(hub_exception, {"namespace": "payments"})
	registry_finding in main.decision.deny with input as data.golden.pipeline_production_unpinned
		with data.gatekeeper.exceptions as [other]
	not registry_finding in main.decision.deny with input as data.golden.pipeline_production_unpinned
		with data.gatekeeper.exceptions as [same]
}

test_glob_stays_inside_a_path_segment if {
	lookalike := {
		"policy": "registries",
		"item": {
			"image": "registry.example.com.evil.io/payments/api:1.4",
			"message": "registry \"registry.example.com.evil.io\" is not allowed in environment \"production\"",
		},
	}
	other_host := object.union(hub_exception, {"images": ["registry.example.com/*/*"]})
	one_segment := object.union(hub_exception, {"images": ["registry.example.com.evil.io/*"]})
	same_host := object.union(hub_exception, {"images": ["registry.example.com.evil.io/payments/*"]})
	lookalike in main.decision.deny with input as data.golden.pipeline_production_unpinned
		with data.gatekeeper.exceptions as [other_host]
	lookalike in main.decision.deny with input as data.golden.pipeline_production_unpinned
		with data.gatekeeper.exceptions as [one_segment]
	not lookalike in main.decision.deny with input as data.golden.pipeline_production_unpinned
		with data.gatekeeper.exceptions as [same_host]
}

test_digest_pattern_matches_the_digest_only if {
	pinned := data.golden.pipeline_production_pinned
	some image in pinned.images
	finding := {"policy": "custom", "item": {"image": image.reference, "message": "no"}}
	exception := object.union(hub_exception, {"images": [image.digest], "policies": ["custom"]})
	d := main.decision with input as pinned
		with data.gatekeeper.rules.custom.deny as {{"image": image.reference, "message": "no"}}
		with data.gatekeeper.exceptions as [exception]
	not finding in d.deny
}

test_revoked_exception_stops_applying if {
	revoked := object.union(hub_exception, {"revoked_at": "2026-11-24T11:00:00Z"})
	d := main.decision with input as data.golden.pipeline_production_unpinned
		with data.gatekeeper.exceptions as [revoked]
	registry_finding in d.deny
	{"policy": "registries", "item": {
		"image": "nginx",
		"message": sprintf("exception EXC-1 (ticket SEC-9) was revoked at 2026-11-24T11:00:00Z; not waived: %s", [registry_message]),
	}} in d.warn
}

test_no_evaluated_at_waives_nothing if {
	no_time := object.remove(data.golden.pipeline_production_unpinned, ["evaluated_at"])
	d := main.decision with input as no_time with data.gatekeeper.exceptions as [hub_exception]
	registry_finding in d.deny
}

test_request_level_violations_are_never_waived if {
	exception := object.union(hub_exception, {"policies": ["environments"], "environment": null})
	d := main.decision with input as {"environment": "prod", "evaluated_at": "2026-11-24T12:00:00Z", "images": []}
		with data.gatekeeper.exceptions as [exception]
	count(d.deny) == 1
}

# --- an exception waives what actually runs -------------------------------------------------

pinned_image := data.golden.pipeline_production_pinned.images[0]

custom_finding := {"policy": "custom", "item": {"image": pinned_image.reference, "message": "no"}}

other_digest := "sha256:cdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcd"

# registry.example.com/payments/api:1.4, approved when the tag named pinned_image.digest.
tag_exception := object.union(hub_exception, {
	"images": ["registry.example.com/payments/api:1.4"],
	"policies": ["custom"],
	"any_digest": false,
	"digests": {"registry.example.com/payments/api:1.4": pinned_image.digest},
})

decide(input_doc, exceptions) := d if {
	d := main.decision with input as input_doc
		with data.gatekeeper.rules.custom.deny as {{"image": input_doc.images[0].reference, "message": "no"}}
		with data.gatekeeper.exceptions as exceptions
}

with_digest(digest) := object.union(data.golden.pipeline_production_pinned, {"images": [object.union(pinned_image, {
	"digest": digest,
	"reference": sprintf("registry.example.com/payments/api:1.4@%s", [digest]),
})]})

test_tag_exception_waives_the_digest_it_was_approved_for if {
	d := decide(data.golden.pipeline_production_pinned, [tag_exception])
	not custom_finding in d.deny
	{"id": "EXC-1", "ticket_id": "SEC-9", "expires_at": "2026-11-24T12:00:01Z", "policy": "custom", "image": pinned_image.reference, "status": "applied", "any_digest": false} in d.exceptions
}

test_tag_exception_never_matches_another_digest if {
	other := with_digest(other_digest)
	d := decide(other, [tag_exception])
	{"policy": "custom", "item": {"image": other.images[0].reference, "message": "no"}} in d.deny
	count(d.exceptions) == 0
}

test_tag_exception_without_resolved_digest_waives_nothing if {
	unresolved := object.union(object.remove(tag_exception, ["digests"]), {"digests": {}})
	d := decide(data.golden.pipeline_production_pinned, [unresolved])
	custom_finding in d.deny
}

test_repository_glob_without_any_digest_waives_nothing if {
	glob := object.union(tag_exception, {"images": ["registry.example.com/payments/*"], "digests": {}})
	d := decide(data.golden.pipeline_production_pinned, [glob])
	custom_finding in d.deny
}

test_repository_glob_with_any_digest_says_so if {
	glob := object.union(tag_exception, {"images": ["registry.example.com/payments/*"], "digests": {}, "any_digest": true})
	other := with_digest(other_digest)
	d := decide(other, [glob])
	not {"policy": "custom", "item": {"image": other.images[0].reference, "message": "no"}} in d.deny
	{"policy": "custom", "item": {
		"image": other.images[0].reference,
		"message": "waived by exception EXC-1 (ticket SEC-9, expires 2026-11-24T12:00:01Z, any digest): no",
	}} in d.warn
}

test_pinned_reference_needs_name_and_digest if {
	exact := object.union(tag_exception, {"images": [sprintf("registry.example.com/payments/api@%s", [pinned_image.digest])]})
	not custom_finding in decide(data.golden.pipeline_production_pinned, [exact]).deny
	other := with_digest(other_digest)
	{"policy": "custom", "item": {"image": other.images[0].reference, "message": "no"}} in decide(other, [exact]).deny
	elsewhere := object.union(tag_exception, {"images": [sprintf("registry.example.com/billing/api@%s", [pinned_image.digest])]})
	custom_finding in decide(data.golden.pipeline_production_pinned, [elsewhere]).deny
}

# --- four eyes: pending until approved --------------------------------------------------------

test_pending_exception_waives_nothing_and_says_so if {
	pending := object.remove(tag_exception, ["approved_at", "approved_by"])
	d := decide(data.golden.pipeline_production_pinned, [pending])
	custom_finding in d.deny
	{"policy": "custom", "item": {
		"image": pinned_image.reference,
		"message": "exception EXC-1 (ticket SEC-9) awaits approval by a second person; not waived: no",
	}} in d.warn
	{"id": "EXC-1", "ticket_id": "SEC-9", "expires_at": "2026-11-24T12:00:01Z", "policy": "custom", "image": pinned_image.reference, "status": "pending", "any_digest": false} in d.exceptions
}

test_exception_approved_after_now_waives_nothing if {
	later := object.union(tag_exception, {"approved_at": "2026-11-24T12:00:00.000000001Z"})
	custom_finding in decide(data.golden.pipeline_production_pinned, [later]).deny
}
