# SBOM: decide on input.images[].evidence.sbom (CycloneDX or SPDX, validated, normalised and
# bound to the image digest by gatekeeper/sbom). Every SBOM found for the image is in
# evidence.sbom.documents, each with its "source" (attestation, referrer, upload, inline),
# the "authority" that attested it and who "supplied_by" it (the uploader's token subject).
#
# Settings live in data.gatekeeper.config.sbom; anything left out falls back to the defaults:
#
#   environments.<env>.require_sbom     deny unless a bound SBOM from a proof source (or, with a
#                                       warning, from a warn source) was found
#   environments.<env>.proof_sources    sources whose bound SBOM counts as proof
#   environments.<env>.warn_sources     sources whose bound SBOM, without proof, is accepted with
#                                       a warning; any other source does not count at all
#   environments.<env>.require_bound    deny when nothing is bound and an SBOM names another
#                                       artifact or no digest at all
#   environments.<env>.deny_truncated   deny when a component list was cut, or when more SBOMs
#                                       were stored for the digest than the gatekeeper reads (a
#                                       banned component could hide past the cap)
#   environments.<env>.deny_when_not_collected
#                                       with require_sbom: also deny when the input has no
#                                       evidence.sbom at all, i.e. the gatekeeper runs without its
#                                       SBOM collector (false: such inputs are not judged here).
#                                       Set it in production wherever the collector is wired: the
#                                       collector always reports a state, "missing" included.
#   banned_components  [{"purl": glob over the purl ("*" crosses "/" and "@"), "reason",
#                        optional "environments"}]
#   banned_licenses    [{"id": glob over SPDX ids, e.g. "AGPL-*", "reason",
#                        optional "environments"}]
#
# Banned components and licences are checked in EVERY document that may describe the image
# (bound, or unbound), whatever its source: a caller can add an SBOM, never hide one. The
# components of an SBOM for another artifact are never listed, so they can neither deny nor
# allow.
package gatekeeper.rules.sbom

import data.gatekeeper.config

all_sources := ["attestation", "referrer", "upload", "inline"]

# Literal values only (not all_sources): a constant document is built once, one that refers to
# another rule is rebuilt on every query.
default_settings := {
	"development": {"require_sbom": false, "require_bound": false, "deny_truncated": false, "deny_when_not_collected": false, "proof_sources": ["attestation", "referrer", "upload", "inline"], "warn_sources": []},
	"staging": {"require_sbom": false, "require_bound": true, "deny_truncated": false, "deny_when_not_collected": false, "proof_sources": ["attestation", "referrer", "upload", "inline"], "warn_sources": []},
	"production": {"require_sbom": true, "require_bound": true, "deny_truncated": true, "deny_when_not_collected": false, "proof_sources": ["attestation"], "warn_sources": ["referrer", "upload", "inline"]},
}

# Unknown environments get production's settings (policies/environments.rego denies them too).
settings := object.union(base, configured) if {
	base := object.get(default_settings, input.environment, default_settings.production)
	configured := object.get(config, ["sbom", "environments", input.environment], {})
}

banned_components := [b |
	some b in object.get(config, ["sbom", "banned_components"], [])
	applies_here(b)
]

banned_licenses := [b |
	some b in object.get(config, ["sbom", "banned_licenses"], [])
	applies_here(b)
]

applies_here(entry) if object.get(entry, "environments", null) == null

applies_here(entry) if input.environment in entry.environments

# glob.match treats an empty delimiter list as ["."]; a newline never occurs in a purl or an
# SPDX id, so with it "*" really matches any run of characters.
anything := ["\n"]

not_collected := {"state": "not_collected", "reason": "no SBOM evidence was collected", "components": []}

sbom_of(image) := object.get(image, ["evidence", "sbom"], not_collected)

# An input of schema version 1 (a recorded decision replayed against this policy) carried one
# document as the section itself: judge it as that one document, its source its binding method.
documents(image) := docs if {
	docs := sbom_of(image).documents
} else := [object.union(sbom, {"source": source, "authority": null, "supplied_by": null})] if {
	sbom := sbom_of(image)
	is_array(sbom.components)
	source := object.get(sbom, ["binding", "method"], "unknown")
}

else := []

bound_from(image, sources) := [d |
	some d in documents(image)
	d.state == "bound"
	d.source in sources
]

proof(image) := bound_from(image, settings.proof_sources)

tolerated(image) := bound_from(image, settings.warn_sources)

# "attestation by release", "upload by ci-bot", "referrer".
describe(d) := sprintf("%s by %s", [d.source, d.authority]) if is_string(d.authority)

else := sprintf("%s by %s", [d.source, d.supplied_by]) if is_string(d.supplied_by)

else := d.source if is_string(d.source)

else := "an unknown source"

described(docs) := concat(", ", sort({describe(d) | some d in docs}))

# --- presence and binding -------------------------------------------------------------------

deny contains {"image": image.reference, "message": msg} if {
	settings.require_sbom
	some image in input.images
	sbom := sbom_of(image)
	required_state(sbom.state)
	msg := sprintf("an SBOM is required in %s: %s", [input.environment, sbom.reason])
}

required_state(state) if state in {"missing", "invalid"}

# Bound SBOMs were found, but none from a source this environment accepts.
deny contains {"image": image.reference, "message": msg} if {
	settings.require_sbom
	some image in input.images
	sbom_of(image).state == "bound"
	count(proof(image)) == 0
	count(tolerated(image)) == 0
	msg := sprintf(
		"an SBOM is required in %s: only SBOMs from %s were found, which do not count as proof there (accepted: %s)",
		[input.environment, described(bound_from(image, all_sources)), concat(", ", settings.proof_sources)],
	)
}

warn contains {"image": image.reference, "message": msg} if {
	settings.require_sbom
	some image in input.images
	count(proof(image)) == 0
	count(tolerated(image)) > 0
	msg := sprintf(
		"no SBOM from %s in %s: accepted with a warning on the SBOM from %s",
		[concat(" or ", settings.proof_sources), input.environment, described(tolerated(image))],
	)
}

required_state("not_collected") if settings.deny_when_not_collected

deny contains {"image": image.reference, "message": msg} if {
	settings.require_bound
	some image in input.images
	sbom := sbom_of(image)
	sbom.state in {"another_artifact", "unbound"}
	msg := sprintf("the SBOM must be bound to the image digest in %s: %s", [input.environment, sbom.reason])
}

warn contains {"image": image.reference, "message": msg} if {
	not settings.require_sbom
	some image in input.images
	sbom := sbom_of(image)
	sbom.state == "invalid"
	msg := sbom.reason
}

warn contains {"image": image.reference, "message": msg} if {
	not settings.require_bound
	some image in input.images
	sbom := sbom_of(image)
	sbom.state == "another_artifact"
	msg := sbom.reason
}

# Beside a bound SBOM, a document that names another artifact or is invalid is not counted;
# the decision says so rather than dropping it silently.
warn contains {"image": image.reference, "message": msg} if {
	some image in input.images
	sbom_of(image).state == "bound"
	some d in documents(image)
	d.state in {"another_artifact", "invalid"}
	msg := sprintf("SBOM from %s not counted: %s", [describe(d), d.reason])
}

deny contains {"image": image.reference, "message": msg} if {
	settings.deny_truncated
	some image in input.images
	some d in documents(image)
	d.truncated == true
	msg := sprintf(
		"the SBOM from %s lists %d components, more than the gatekeeper evaluates; %s needs a complete list",
		[describe(d), d.component_count, input.environment],
	)
}

deny contains {"image": image.reference, "message": msg} if {
	settings.deny_truncated
	some image in input.images
	sbom_of(image).documents_truncated == true
	msg := sprintf(
		"more SBOMs are stored for the image digest than the gatekeeper reads; %s needs every one",
		[input.environment],
	)
}

# --- banned components and licences ---------------------------------------------------------

# One message per banned component, naming every document that lists it.
deny contains {"image": image.reference, "message": msg} if {
	some image in input.images
	some [purl, reason] in banned_purls(image)
	msg := sprintf("banned component %s: %s (listed by %s)", [purl, reason, described(listing_purl(image, purl))])
}

banned_purls(image) := {[purl, object.get(banned, "reason", "listed as banned")] |
	some d in documents(image)
	some banned in banned_components
	some purl in purls_matching(d, banned.purl)
}

# --- where the components are ---------------------------------------------------------------
#
# A small component list travels inline (d.components) and is scanned. A large one travels by
# reference: d.components_sha256 names the evidence document the gatekeeper loaded into
# data.gatekeeper.evidence[<sha256>] as an index (gatekeeper/domain/evidence_documents.py):
#   purls     {purl: true}
#   packages  {purl up to its first "@": [purls]}
#   types     {purl up to its first "/" ("pkg:npm/"): [purls]}
#   licenses  {SPDX id: {component name: true}}
# so a banned entry costs a lookup, not a scan of every component: an exact purl is one lookup,
# a pattern whose part before its first "@" is literal ("pkg:npm/event-stream@*") globs only
# that package's purls, a pattern with a wildcard in the name ("pkg:pypi/debug-only-*") globs
# only the purls of its type, and only a pattern with a wildcard in the type globs every purl.
# A licence glob runs over the distinct licence ids.

evidence_index(d) := data.gatekeeper.evidence[d.components_sha256]

# Glob metacharacters of glob.match; a pattern without them matches only itself.
literal(pattern) if not regex.match(`[*?\[\]{}\\]`, pattern)

package_part(pattern) := prefix if {
	at := indexof(pattern, "@")
	at > 0
	prefix := substring(pattern, 0, at)
	literal(prefix)
}

# The purl type ("pkg:pypi/") of a pattern whose wildcard comes after it ("pkg:pypi/debug-*").
type_part(pattern) := prefix if {
	literal_prefix := regex.split(`[*?\[\]{}\\]`, pattern)[0]
	slash := indexof(literal_prefix, "/")
	slash > 0
	prefix := substring(pattern, 0, slash + 1)
}

purls_matching(d, pattern) := {c.purl |
	some c in d.components
	is_string(c.purl)
	glob.match(pattern, anything, c.purl)
} if {
	is_array(d.components)
} else := {pattern | evidence_index(d).purls[pattern]} if {
	literal(pattern)
} else := {purl |
	some purl in object.get(evidence_index(d).packages, package_part(pattern), [])
	glob.match(pattern, anything, purl)
} if {
	package_part(pattern)
} else := {purl |
	some purl in object.get(evidence_index(d).types, type_part(pattern), [])
	glob.match(pattern, anything, purl)
} if {
	type_part(pattern)
} else := {purl |
	some purl, _ in evidence_index(d).purls
	glob.match(pattern, anything, purl)
}

lists_purl(d, purl) if {
	some component in d.components
	component.purl == purl
}

lists_purl(d, purl) if evidence_index(d).purls[purl]

listing_purl(image, purl) := [d |
	some d in documents(image)
	lists_purl(d, purl)
]

licensed(d, pattern) := {[component_name(component), licence] |
	some component in d.components
	some licence in component.license_ids
	glob.match(pattern, anything, licence)
} if {
	is_array(d.components)
} else := {[name, licence] |
	some licence, names in evidence_index(d).licenses
	glob.match(pattern, anything, licence)
	some name, _ in names
}

lists_licence(d, name, licence) if {
	some component in d.components
	component_name(component) == name
	licence in component.license_ids
}

lists_licence(d, name, licence) if evidence_index(d).licenses[licence][name]

# A document by reference whose index is not loaded: its components cannot be seen, so the
# decision denies (the gatekeeper loads the document and asks again; see
# data.gatekeeper.main.decision.missing_evidence).
deny contains {"image": image.reference, "message": msg} if {
	some image in input.images
	some d in documents(image)
	is_string(d.components_sha256)
	not evidence_index(d)
	msg := sprintf(
		"the components of the SBOM from %s (evidence document %s) are not loaded in the policy engine",
		[describe(d), d.components_sha256],
	)
}

# --- banned licences ------------------------------------------------------------------------

deny contains {"image": image.reference, "message": msg} if {
	some image in input.images
	some [name, licence, reason] in banned_licences_found(image)
	msg := sprintf(
		"component %s is under banned licence %s: %s (listed by %s)",
		[name, licence, reason, described(listing_licence(image, name, licence))],
	)
}

banned_licences_found(image) := {[name, licence, object.get(banned, "reason", "listed as banned")] |
	some d in documents(image)
	some banned in banned_licenses
	some [name, licence] in licensed(d, banned.id)
}

listing_licence(image, name, licence) := [d |
	some d in documents(image)
	lists_licence(d, name, licence)
]

component_name(c) := c.purl if is_string(c.purl)

else := sprintf("%s %s", [c.name, c.version]) if is_string(c.version)

else := c.name
