# Exceptions: time-boxed waivers approved by the security team. The gatekeeper hands them in
# as data (data.gatekeeper.exceptions, a list); this package decides which ones apply and
# policies/main.rego turns waived violations into warnings that name the exception.
#
# An exception applies to a violation when the violation's policy is in its "policies", its
# image matches one of its "images" (a digest "sha256:..." compared exactly, or a glob over
# "registry/repository" and "registry/repository:tag" where "*" stays inside one path segment),
# its environment / namespace (when set) equal the request's, and "now" lies in
# [created_at, expires_at) and before revoked_at (when revoked).
#
# "Now" is input.evaluated_at (RFC 3339, set by the gatekeeper), never the wall clock, so a
# replay of a past decision sees the exceptions as they were at that instant. Without
# evaluated_at nothing is waived: the gate fails closed.
package gatekeeper.waivers

now := time.parse_rfc3339_ns(input.evaluated_at)

# Exceptions whose scope matches the finding, whatever their time window.
matching(finding) := {e |
	some e in data.gatekeeper.exceptions
	finding.policy in e.policies
	in_scope(e)
	some image in input.images
	image.reference == finding.item.image
	some pattern in e.images
	image_matches(pattern, image)
}

# Exceptions that waive the finding now.
applied(finding) := {e |
	some e in matching(finding)
	started(e)
	now < time.parse_rfc3339_ns(e.expires_at)
	not revoked(e)
}

# Exceptions that would match but expired before now (the decision says so).
expired(finding) := {e |
	some e in matching(finding)
	started(e)
	now >= time.parse_rfc3339_ns(e.expires_at)
	not revoked_before_expiry(e)
}

# Exceptions that would match but were revoked before now.
withdrawn(finding) := {e |
	some e in matching(finding)
	started(e)
	revoked(e)
	now < time.parse_rfc3339_ns(e.expires_at)
}

started(e) if time.parse_rfc3339_ns(e.created_at) <= now

revoked(e) if time.parse_rfc3339_ns(e.revoked_at) <= now

revoked_before_expiry(e) if time.parse_rfc3339_ns(e.revoked_at) < time.parse_rfc3339_ns(e.expires_at)

in_scope(e) if {
	object.get(e, "environment", null) in {null, input.environment}
	object.get(e, "namespace", null) in {null, input.namespace}
}

image_matches(pattern, image) if {
	is_digest(pattern)
	image.digest == pattern
}

image_matches(pattern, image) if {
	not is_digest(pattern)
	some name in image_names(image)
	glob.match(pattern, ["/"], name)
}

is_digest(pattern) if regex.match(`^sha(256|512):[a-f0-9]+$`, pattern)

image_names(image) := {name, sprintf("%s:%s", [name, image.tag])} if {
	name := sprintf("%s/%s", [image.registry, image.repository])
	is_string(image.tag)
} else := {sprintf("%s/%s", [image.registry, image.repository])}
