# Signatures and attestations: decide on input.images[].evidence.signatures (cosign signatures,
# Sigstore bundles and in-toto attestations verified by gatekeeper/verify against the configured
# authorities; see gatekeeper/verify/collector.py for the section's fields).
#
# Settings live in data.gatekeeper.config.signatures.environments.<env>; omitted keys fall back
# to the defaults below:
#
#   require_signature        deny unless the image policy's m-of-n threshold is met ("verified"),
#                            and deny images no image policy matches when its default is "deny"
#   required_authorities     names that must each have verified, on top of the threshold
#   require_provenance       deny unless a verified SLSA provenance attestation names an
#                            allowed builder
#   allowed_builders         globs over builder ids, "/" is the delimiter: "*" stays inside one
#                            path segment, "**" crosses segments ("https://github.com/acme/**"
#                            is every workflow of the acme organisation). "." is an ordinary
#                            character. A builder id with a "." or ".." path segment, a
#                            backslash, a percent-escape, white space or a control character
#                            never matches (no path games: "https://github.com/acme/../evil").
#   deny_when_not_collected  with require_signature: deny when there is no evidence.signatures
#   allow_skipped_verification  with require_signature: accept an authority whose Notation trust
#                            policy has level "skip" for the image (it verifies nothing)
#
# Notation authorities (evidence "kind": "notation") count towards the threshold like cosign
# ones; failures their trust policy only logs ("logged", levels permissive/audit) are warnings.
package gatekeeper.rules.signatures

import data.gatekeeper.config

default_settings := {
	"development": {"require_signature": false, "required_authorities": [], "require_provenance": false, "allowed_builders": [], "deny_when_not_collected": false, "allow_skipped_verification": true},
	"staging": {"require_signature": true, "required_authorities": [], "require_provenance": false, "allowed_builders": [], "deny_when_not_collected": true, "allow_skipped_verification": true},
	"production": {"require_signature": true, "required_authorities": [], "require_provenance": true, "allowed_builders": [], "deny_when_not_collected": true, "allow_skipped_verification": false},
}

settings := object.union(base, configured) if {
	base := object.get(default_settings, input.environment, default_settings.production)
	configured := object.get(config, ["signatures", "environments", input.environment], {})
}

evidence(image) := image.evidence.signatures

deny contains {"image": image.reference, "message": evidence(image).message} if {
	settings.require_signature
	some image in input.images
	evidence(image).status == "unverified"
}

deny contains {"image": image.reference, "message": msg} if {
	settings.require_signature
	some image in input.images
	evidence(image).status == "unmatched"
	evidence(image).unmatched_default == "deny"
	msg := sprintf("no signature policy covers %s/%s; unmatched images are denied", [image.registry, image.repository])
}

deny contains {"image": image.reference, "message": msg} if {
	settings.require_signature
	some image in input.images
	evidence(image).status in {"verified", "unverified"}
	some name in settings.required_authorities
	not evidence(image).authorities[name].verified
	reason := object.get(evidence(image), ["authorities", name, "reason"], "authority not configured for this image")
	msg := sprintf("signature of authority %q is required in %s: %s", [name, input.environment, reason])
}

deny contains {"image": image.reference, "message": msg} if {
	settings.require_signature
	settings.deny_when_not_collected
	some image in input.images
	not image.evidence.signatures
	msg := sprintf("no signature evidence was collected; %s requires signatures", [input.environment])
}

provenance(image) := [a |
	some a in object.get(image, ["evidence", "signatures", "attestations"], [])
	startswith(a.kind, "slsa-provenance")
]

allowed_builder(attestation) if {
	builder := object.get(attestation, "builder_id", "")
	is_string(builder)
	not suspicious_builder(builder)
	some pattern in settings.allowed_builders
	glob.match(pattern, ["/"], builder)
}

# A "." or ".." path segment (also just before "@ref"), an escape or a character no real builder
# id contains: such an id could name one path and mean another.
suspicious_builder(builder) if regex.match(`(^|/)\.{1,2}(/|@|$)|[%\\\s\x00-\x1f\x7f]`, builder)

deny contains {"image": image.reference, "message": msg} if {
	settings.require_provenance
	some image in input.images
	evidence(image).status in {"verified", "unverified"}
	not any_allowed(image)
	found := sort({b | some a in provenance(image); b := object.get(a, "builder_id", "?")})
	msg := sprintf("no verified SLSA provenance from an allowed builder (found: %s)", [concat_or_none(found)])
}

any_allowed(image) if {
	some attestation in provenance(image)
	allowed_builder(attestation)
}

concat_or_none(items) := "none" if count(items) == 0

concat_or_none(items) := concat(", ", items) if count(items) > 0

authorities(image) := object.get(image, ["evidence", "signatures", "authorities"], {})

deny contains {"image": image.reference, "message": msg} if {
	settings.require_signature
	not settings.allow_skipped_verification
	some image in input.images
	some name, authority in authorities(image)
	authority.skipped == true
	msg := sprintf("authority %q does not verify this image (Notation trust policy %q has level skip); %s does not accept skipped verification", [name, authority.trust_policy.name, input.environment])
}

warn contains {"image": image.reference, "message": msg} if {
	settings.allow_skipped_verification
	some image in input.images
	some name, authority in authorities(image)
	authority.skipped == true
	msg := sprintf("authority %q does not verify this image (Notation trust policy %q has level skip)", [name, authority.trust_policy.name])
}

warn contains {"image": image.reference, "message": msg} if {
	some image in input.images
	some name, authority in authorities(image)
	authority.verified == true
	some failure in object.get(authority, "logged", [])
	msg := sprintf("authority %q verified with a failure its Notation trust policy %q (level %s) only logs: %s", [name, authority.trust_policy.name, authority.trust_policy.level, failure])
}
