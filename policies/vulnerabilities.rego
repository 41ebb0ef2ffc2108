# Vulnerabilities: decide on the scan evidence at input.images[].evidence.scan (ECR basic or
# enhanced findings, normalised by gatekeeper/scans).
#
# Settings live in data.gatekeeper.config.vulnerabilities; anything left out falls back to the
# defaults below (production is the strictest):
#
#   environments.<env>.deny_severities          severities that deny, e.g. ["CRITICAL", "HIGH"]
#   environments.<env>.only_when_fix_available  deny a finding only when a fix is available
#   environments.<env>.max_severity_counts      e.g. {"HIGH": 5, "UNTRIAGED": 0}: deny above it
#   environments.<env>.max_scan_age_hours       deny a scan completed longer ago (null: no limit)
#   environments.<env>.max_vulnerability_db_age_hours   same for the scanner's database
#   environments.<env>.require_complete_scan    deny unless the scan is complete (or active)
#   environments.<env>.require_scanner          deny images no scanner covers (not_applicable)
#   environments.<env>.deny_when_not_collected  with require_complete_scan: also deny when the
#                      input has no evidence.scan at all, i.e. the gatekeeper runs without its scan
#                      collector (false: such inputs are not judged here); set it wherever the
#                      collector is wired
#   environments.<env>.vex_sources  sources whose VEX statements may waive a finding (default
#                      ["attestation", "upload"]: attested by an authority of the image policy,
#                      or uploaded by a vex-publisher / policy-admin; nothing else ever reaches
#                      evidence.vex)
#   environments.<env>.vex_waiving_statuses  VEX statuses that waive (default not_affected, fixed)
#   cve_exceptions  [{"id", "ticket_id", "expires_at", "reason", optional "images" (globs over
#                   registry/repository), "packages", "environments"}]
#
# VEX (input.images[].evidence.vex.statements): a statement waives a finding when its source is
# trusted here, its status waives, it names the finding's CVE (or an alias), its products name
# THIS image's digest, and its packages (when it names any) include the finding's package. A
# trusted statement saying "affected" for the same CVE and digest wins: nothing is waived and a
# warning says so. Every waiver is a warning naming the status, justification and source.
#
# Time is input.evaluated_at (RFC 3339, set by the gatekeeper). An exception applies while
# evaluated_at < expires_at; once expired it stops applying, and the deny says so. Without
# evaluated_at no exception applies and every age check denies: the gate fails closed.
package gatekeeper.rules.vulnerabilities

import data.gatekeeper.config

default_settings := {
	"development": {
		"deny_severities": ["CRITICAL"],
		"only_when_fix_available": true,
		"max_severity_counts": {},
		"max_scan_age_hours": null,
		"max_vulnerability_db_age_hours": null,
		"require_complete_scan": false,
		"require_scanner": false,
		"deny_when_not_collected": false,
		"vex_sources": ["attestation", "upload"],
		"vex_waiving_statuses": ["not_affected", "fixed"],
	},
	"staging": {
		"deny_severities": ["CRITICAL"],
		"only_when_fix_available": false,
		"max_severity_counts": {},
		"max_scan_age_hours": 336,
		"max_vulnerability_db_age_hours": null,
		"require_complete_scan": false,
		"require_scanner": false,
		"deny_when_not_collected": false,
		"vex_sources": ["attestation", "upload"],
		"vex_waiving_statuses": ["not_affected", "fixed"],
	},
	"production": {
		"deny_severities": ["CRITICAL", "HIGH"],
		"only_when_fix_available": false,
		"max_severity_counts": {"UNTRIAGED": 10},
		"max_scan_age_hours": 168,
		"max_vulnerability_db_age_hours": 72,
		"require_complete_scan": true,
		"require_scanner": false,
		"deny_when_not_collected": false,
		"vex_sources": ["attestation", "upload"],
		"vex_waiving_statuses": ["not_affected", "fixed"],
	},
}

# Unknown environments get production's settings (policies/environments.rego denies them too).
settings := object.union(base, configured) if {
	base := object.get(default_settings, input.environment, default_settings.production)
	configured := object.get(config, ["vulnerabilities", "environments", input.environment], {})
}

cve_exceptions := object.get(config, ["vulnerabilities", "cve_exceptions"], [])

hour_ns := 3600 * 1000000000

now := time.parse_rfc3339_ns(input.evaluated_at)

scan_of(image) := object.get(image, ["evidence", "scan"], {"state": "not_collected", "reason": "no scan evidence was collected"})

findings_available(scan) if scan.state in {"complete", "active"}

# --- per finding ------------------------------------------------------------------------------

deny contains {"image": image.reference, "message": msg} if {
	some image in input.images
	scan := scan_of(image)
	findings_available(scan)
	some finding in scan.findings
	denied(finding)
	not waived(image, finding)
	msg := concat("", [finding_text(finding), " is not allowed in ", input.environment, expired_note(image, finding)])
}

denied(finding) if {
	finding.severity in settings.deny_severities
	fix_condition_met(finding)
}

fix_condition_met(_) if not settings.only_when_fix_available

fix_condition_met(finding) if {
	settings.only_when_fix_available
	finding.fix_available == true
}

finding_text(f) := sprintf("%s in %s %s (%s, fixed in %s)", [f.id, package_name(f), installed(f), f.severity, f.fixed_version]) if {
	is_string(f.fixed_version)
} else := sprintf("%s in %s %s (%s, fix available)", [f.id, package_name(f), installed(f), f.severity]) if {
	f.fix_available == true
} else := sprintf("%s in %s %s (%s, no fix available)", [f.id, package_name(f), installed(f), f.severity]) if {
	f.fix_available == false
} else := sprintf("%s in %s %s (%s)", [f.id, package_name(f), installed(f), f.severity])

package_name(f) := f.package if is_string(f.package)

else := "an unnamed package"

installed(f) := f.installed_version if is_string(f.installed_version)

else := "(version unknown)"

# --- CVE exceptions -----------------------------------------------------------------------------

exception_matches(e, image, finding) if {
	e.id == finding.id
	scope_matches(object.get(e, "environments", null), input.environment)
	scope_matches(object.get(e, "packages", null), finding.package)
	image_in_scope(object.get(e, "images", null), image)
}

scope_matches(null, _) := true

scope_matches(values, value) if value in values

image_in_scope(null, _) := true

image_in_scope(patterns, image) if {
	some pattern in patterns
	glob.match(pattern, ["/"], sprintf("%s/%s", [image.registry, image.repository]))
}

waived(image, finding) if count(vex_waivers(image, finding)) > 0

waived(image, finding) if {
	some e in cve_exceptions
	exception_matches(e, image, finding)
	now < time.parse_rfc3339_ns(e.expires_at)
}

expired_exceptions(image, finding) := [e |
	some e in cve_exceptions
	exception_matches(e, image, finding)
	now >= time.parse_rfc3339_ns(e.expires_at)
]

expired_note(image, finding) := note if {
	expired := expired_exceptions(image, finding)
	count(expired) > 0
	e := expired[0]
	note := sprintf(" (exception for %s, ticket %s, expired at %s)", [e.id, e.ticket_id, e.expires_at])
} else := ""

warn contains {"image": image.reference, "message": msg} if {
	some image in input.images
	scan := scan_of(image)
	findings_available(scan)
	some finding in scan.findings
	denied(finding)
	some e in cve_exceptions
	exception_matches(e, image, finding)
	now < time.parse_rfc3339_ns(e.expires_at)
	msg := sprintf("%s waived by exception (ticket %s, expires %s)", [finding_text(finding), e.ticket_id, e.expires_at])
}

# --- VEX ---------------------------------------------------------------------------------------

vex_statements(image) := [s |
	some s in object.get(image, ["evidence", "vex", "statements"], [])
	s.source in settings.vex_sources
	is_string(image.digest)
	image.digest in s.products
]

vex_names(s, finding) if s.vulnerability == finding.id

vex_names(s, finding) if finding.id in s.aliases

vex_package_matches(s, _) if count(s.packages) == 0

vex_package_matches(s, finding) if finding.package in s.packages

vex_about(image, finding) := [s |
	some s in vex_statements(image)
	vex_names(s, finding)
	vex_package_matches(s, finding)
]

vex_contradicted(image, finding) if {
	some s in vex_about(image, finding)
	s.status == "affected"
}

vex_waivers(image, finding) := [s |
	not vex_contradicted(image, finding)
	some s in vex_about(image, finding)
	s.status in settings.vex_waiving_statuses
]

vex_reason(s) := sprintf("%s: %s", [s.status, s.justification]) if is_string(s.justification)

else := sprintf("%s: %s", [s.status, s.impact_statement]) if is_string(s.impact_statement)

else := s.status

vex_source(s) := sprintf("attestation by %s", [s.authority]) if {
	s.source == "attestation"
	is_string(s.authority)
} else := sprintf("upload by %s", [s.supplied_by]) if {
	s.source == "upload"
	is_string(s.supplied_by)
} else := s.source

warn contains {"image": image.reference, "message": msg} if {
	some image in input.images
	scan := scan_of(image)
	findings_available(scan)
	some finding in scan.findings
	denied(finding)
	some s in vex_waivers(image, finding)
	msg := sprintf("%s waived by VEX (%s) from %s", [finding_text(finding), vex_reason(s), vex_source(s)])
}

warn contains {"image": image.reference, "message": msg} if {
	some image in input.images
	scan := scan_of(image)
	findings_available(scan)
	some finding in scan.findings
	denied(finding)
	vex_contradicted(image, finding)
	some s in vex_about(image, finding)
	s.status in settings.vex_waiving_statuses
	msg := sprintf("%s not waived by VEX (%s) from %s: a trusted statement says affected", [finding.id, vex_reason(s), vex_source(s)])
}

# --- counts -------------------------------------------------------------------------------------

deny contains {"image": image.reference, "message": msg} if {
	some image in input.images
	scan := scan_of(image)
	findings_available(scan)
	some severity, limit in settings.max_severity_counts
	found := object.get(scan.severity_counts, severity, 0)
	found > limit
	msg := sprintf("%d %s findings exceed the limit of %d in %s", [found, severity, limit, input.environment])
}

# --- scan state and freshness ----------------------------------------------------------------

deny contains {"image": image.reference, "message": msg} if {
	settings.require_complete_scan
	some image in input.images
	scan := scan_of(image)
	not findings_available(scan)
	incomplete_denies(scan.state)
	msg := sprintf("vulnerability scan is not complete (%s: %s); %s requires a complete scan", [scan.state, scan.reason, input.environment])
}

# "skipped": not gathered because network-free rules already deny the image (the gatekeeper
# gathers it after all should the decision not deny the image).
incomplete_denies(state) if not state in {"not_applicable", "not_collected", "skipped"}

incomplete_denies("not_collected") if settings.deny_when_not_collected

deny contains {"image": image.reference, "message": msg} if {
	settings.require_scanner
	some image in input.images
	scan := scan_of(image)
	scan.state == "not_applicable"
	msg := sprintf("no vulnerability scanner covers this image (%s); %s requires one", [scan.reason, input.environment])
}

deny contains {"image": image.reference, "message": msg} if {
	is_number(settings.max_scan_age_hours)
	some image in input.images
	scan := scan_of(image)
	findings_available(scan)
	msg := stale(scan.completed_at, settings.max_scan_age_hours, "scan")
}

deny contains {"image": image.reference, "message": msg} if {
	is_number(settings.max_vulnerability_db_age_hours)
	some image in input.images
	scan := scan_of(image)
	findings_available(scan)
	msg := stale(scan.vulnerability_db_updated_at, settings.max_vulnerability_db_age_hours, "vulnerability database")
}

stale(at, _, what) := msg if {
	not is_string(at)
	msg := sprintf("%s time is unknown; cannot prove it is fresh enough for %s", [what, input.environment])
}

stale(at, _, what) := msg if {
	is_string(at)
	not is_string(object.get(input, "evaluated_at", null))
	msg := sprintf("cannot tell the %s age: evaluated_at is missing", [what])
}

stale(at, max_hours, what) := msg if {
	is_string(at)
	age_ns := now - time.parse_rfc3339_ns(at)
	age_ns > max_hours * hour_ns
	msg := sprintf(
		"%s is %d hours old (%s), older than the %v hours allowed in %s",
		[what, floor(age_ns / hour_ns), at, max_hours, input.environment],
	)
}

warn contains {"image": image.reference, "message": msg} if {
	some image in input.images
	scan := scan_of(image)
	scan.truncated == true
	msg := sprintf("only %d of %d scan findings were evaluated (list truncated); severity counts still apply", [count(scan.findings), scan.finding_count])
}
