package gatekeeper.rules.signatures_test

import data.gatekeeper.rules.signatures

ref := "registry.example.com/shop/api:1.0"

section(status, authorities, attestations) := {
	"schema": 1, "digest": "sha256:aaaa", "status": status, "verified": status == "verified",
	"message": sprintf("image %s@sha256:aaaa: no signature found; 0 of 1 required authorities verified", [ref]),
	"authorities": authorities, "attestations": attestations, "unmatched_default": "deny",
}

request(environment, sig) := {
	"environment": environment,
	"images": [{
		"reference": ref, "registry": "registry.example.com", "repository": "shop/api",
		"tag": "1.0", "digest": "sha256:aaaa", "evidence": {"signatures": sig},
	}],
}

slsa(builder) := {"kind": "slsa-provenance-v1", "builder_id": builder, "authority": "release"}

config := {"signatures": {"environments": {"production": {
	"required_authorities": ["release"],
	"allowed_builders": ["https://github.com/acme/*"],
}}}}

test_unverified_image_is_denied_with_the_collector_message if {
	denies := signatures.deny with input as request("production", section("unverified", {"release": {"verified": false, "reason": "no signature found"}}, [])) with data.gatekeeper.config as config
	{"image": ref, "message": "image registry.example.com/shop/api:1.0@sha256:aaaa: no signature found; 0 of 1 required authorities verified"} in denies
	{"image": ref, "message": "signature of authority \"release\" is required in production: no signature found"} in denies
}

test_verified_with_allowed_provenance_passes if {
	denies := signatures.deny with input as request("production", section("verified", {"release": {"verified": true, "reason": "verified"}}, [slsa("https://github.com/acme/builder")])) with data.gatekeeper.config as config
	count(denies) == 0
}

test_provenance_from_another_builder_is_denied if {
	denies := signatures.deny with input as request("production", section("verified", {"release": {"verified": true}}, [slsa("https://evil.example/builder")])) with data.gatekeeper.config as config
	denies == {{"image": ref, "message": "no verified SLSA provenance from an allowed builder (found: https://evil.example/builder)"}}
}

test_unmatched_image_follows_the_default if {
	sig := object.union(section("unmatched", {}, []), {"unmatched_default": "deny"})
	denies := signatures.deny with input as request("staging", sig) with data.gatekeeper.config as config
	denies == {{"image": ref, "message": "no signature policy covers registry.example.com/shop/api; unmatched images are denied"}}
	allowed := object.union(sig, {"unmatched_default": "allow"})
	none_denied := signatures.deny with input as request("staging", allowed) with data.gatekeeper.config as config
	count(none_denied) == 0
}

test_development_does_not_require_signatures if {
	denies := signatures.deny with input as request("development", section("unverified", {}, [])) with data.gatekeeper.config as config
	count(denies) == 0
}

test_missing_evidence_is_denied_where_required if {
	input_doc := {"environment": "staging", "images": [{"reference": ref, "registry": "registry.example.com", "repository": "shop/api", "evidence": {}}]}
	denies := signatures.deny with input as input_doc with data.gatekeeper.config as config
	denies == {{"image": ref, "message": "no signature evidence was collected; staging requires signatures"}}
}

notation_authority(verified, extra) := object.union(
	{"kind": "notation", "verified": verified, "reason": "verified", "trust_policy": {"name": "images", "level": "permissive"}, "logged": []},
	extra,
)

test_notation_authorities_count_towards_the_threshold_like_cosign_ones if {
	two := {"acme": notation_authority(true, {}), "release": {"verified": true, "reason": "verified"}}
	denies := signatures.deny with input as request("staging", section("verified", two, [])) with data.gatekeeper.config as config
	count(denies) == 0
	short := {"acme": notation_authority(false, {"reason": "signature expired"}), "release": {"verified": true}}
	denied := signatures.deny with input as request("staging", section("unverified", short, [])) with data.gatekeeper.config as config
	denied == {{"image": ref, "message": "image registry.example.com/shop/api:1.0@sha256:aaaa: no signature found; 0 of 1 required authorities verified"}}
}

test_logged_notation_failures_are_warnings if {
	logged := {"acme": notation_authority(true, {"logged": ["expiry: signature expired at 2026-11-30T11:59:59Z"]})}
	warnings := signatures.warn with input as request("staging", section("verified", logged, [])) with data.gatekeeper.config as config
	warnings == {{"image": ref, "message": "authority \"acme\" verified with a failure its Notation trust policy \"images\" (level permissive) only logs: expiry: signature expired at 2026-11-30T11:59:59Z"}}
}

test_skipped_verification_is_denied_in_production_and_warned_elsewhere if {
	skipped := {"acme": notation_authority(true, {"skipped": true, "reason": "verification skipped by the Notation trust policy", "trust_policy": {"name": "legacy", "level": "skip"}})}
	sig := section("verified", skipped, [])
	production := signatures.deny with input as request("production", sig) with data.gatekeeper.config as config
	{"image": ref, "message": "authority \"acme\" does not verify this image (Notation trust policy \"legacy\" has level skip); production does not accept skipped verification"} in production
	staging := signatures.deny with input as request("staging", sig) with data.gatekeeper.config as config
	count(staging) == 0
	warnings := signatures.warn with input as request("staging", sig) with data.gatekeeper.config as config
	warnings == {{"image": ref, "message": "authority \"acme\" does not verify this image (Notation trust policy \"legacy\" has level skip)"}}
}

# --- builder ids as real builders write them ----------------------------------------------------

acme_workflow := "https://github.com/acme/builder/.github/workflows/build.yml@refs/tags/v1"

slsa_generator := "https://github.com/slsa-framework/slsa-github-generator/.github/workflows/generator_generic_slsa3.yml@refs/tags/v2.1.0"

# The shipped production allow-list.
shipped_builders := data.gatekeeper.config.signatures.environments.production.allowed_builders

provenance_denies(builder) := denies if {
	shipped := {"signatures": {"environments": {"production": {"allowed_builders": shipped_builders}}}}
	denies := signatures.deny with input as request("production", section("verified", {"release": {"verified": true, "reason": "verified"}}, [slsa(builder)]))
		with data.gatekeeper.config as shipped
}

builder_denied(builder) := {{"image": ref, "message": sprintf("no verified SLSA provenance from an allowed builder (found: %s)", [builder])}}

test_real_github_workflow_builder_ids_are_allowed if {
	count(provenance_denies(acme_workflow)) == 0
	count(provenance_denies(slsa_generator)) == 0
	count(provenance_denies("https://github.com/slsa-framework/slsa-github-generator/.github/workflows/generator_container_slsa3.yml@refs/tags/v1.10.0")) == 0
}

test_lookalike_builder_ids_are_denied if {
	every builder in [
		"https://github.com/acme-evil/builder/.github/workflows/build.yml@refs/tags/v1",
		"https://github.com/acme/../evil/.github/workflows/build.yml@refs/tags/v1",
		"https://github.com/acme/builder/../../evil/x.yml@refs/tags/v1",
		"https://github.com/acme/./x@refs/tags/v1",
		"https://github.com/acme/%2e%2e/evil/x.yml@refs/tags/v1",
		"https://github.com/acme\\..\\evil/x.yml",
		"https://github.com/acme",
		"https://github.com.evil.io/acme/builder/.github/workflows/build.yml@refs/tags/v1",
		"https://github.com/slsa-framework/slsa-github-generator/.github/workflows/generator_generic_slsa3.yml@refs/heads/main",
		"https://github.com/slsa-framework/slsa-github-generator/.github/workflows/x/generator_generic_slsa3.yml@refs/tags/v2.1.0",
		"https://github.com/slsa-framework-evil/slsa-github-generator/.github/workflows/generator_generic_slsa3.yml@refs/tags/v2.1.0",
	] {
		provenance_denies(builder) == builder_denied(builder)
	}
}

test_one_star_stays_inside_a_path_segment if {
	one_segment := {"signatures": {"environments": {"production": {"allowed_builders": ["https://github.com/acme/*"]}}}}
	count(signatures.deny) == 0 with input as request("production", section("verified", {"release": {"verified": true}}, [slsa("https://github.com/acme/builder")]))
		with data.gatekeeper.config as one_segment
	count(signatures.deny) == 1 with input as request("production", section("verified", {"release": {"verified": true}}, [slsa(acme_workflow)]))
		with data.gatekeeper.config as one_segment
}
