# SBOM: decide on input.images[].evidence.sbom (CycloneDX or SPDX, validated, normalised and
# bound to the image digest by gatekeeper/sbom).
#
# Settings live in data.gatekeeper.config.sbom; anything left out falls back to the defaults:
#
#   environments.<env>.require_sbom     deny when no valid SBOM was found
#   environments.<env>.require_bound    deny unless the SBOM is bound to the image digest
#   environments.<env>.deny_truncated   deny when the component list was cut (a banned component
#                                       could hide past the cap)
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
# Banned components and licences are checked in every SBOM that may describe the image
# (bound, or unbound where binding is not required); the components of an SBOM for another
# artifact are never listed, so they can neither deny nor allow.
package gatekeeper.rules.sbom

import data.gatekeeper.config

default_settings := {
	"development": {"require_sbom": false, "require_bound": false, "deny_truncated": false, "deny_when_not_collected": false},
	"staging": {"require_sbom": false, "require_bound": true, "deny_truncated": false, "deny_when_not_collected": false},
	"production": {"require_sbom": true, "require_bound": true, "deny_truncated": true, "deny_when_not_collected": false},
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

# --- presence and binding -------------------------------------------------------------------

deny contains {"image": image.reference, "message": msg} if {
	settings.require_sbom
	some image in input.images
	sbom := sbom_of(image)
	required_state(sbom.state)
	msg := sprintf("an SBOM is required in %s: %s", [input.environment, sbom.reason])
}

required_state(state) if state in {"missing", "invalid"}

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

deny contains {"image": image.reference, "message": msg} if {
	settings.deny_truncated
	some image in input.images
	sbom := sbom_of(image)
	sbom.truncated == true
	msg := sprintf(
		"the SBOM lists %d components, more than the gatekeeper evaluates; %s needs a complete list",
		[sbom.component_count, input.environment],
	)
}

# --- banned components and licences ---------------------------------------------------------

deny contains {"image": image.reference, "message": msg} if {
	some image in input.images
	some component in sbom_of(image).components
	is_string(component.purl)
	some banned in banned_components
	glob.match(banned.purl, anything, component.purl)
	msg := sprintf("banned component %s: %s", [component.purl, object.get(banned, "reason", "listed as banned")])
}

deny contains {"image": image.reference, "message": msg} if {
	some image in input.images
	some component in sbom_of(image).components
	some licence in component.license_ids
	some banned in banned_licenses
	glob.match(banned.id, anything, licence)
	msg := sprintf(
		"component %s is under banned licence %s: %s",
		[component_name(component), licence, object.get(banned, "reason", "listed as banned")],
	)
}

component_name(c) := c.purl if is_string(c.purl)

else := sprintf("%s %s", [c.name, c.version]) if is_string(c.version)

else := c.name
