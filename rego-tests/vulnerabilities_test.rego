package gatekeeper.rules.vulnerabilities_test

import data.gatekeeper.rules.vulnerabilities

ref := "123456789012.dkr.ecr.eu-west-1.amazonaws.com/shop/api@sha256:aaaa"

xz := {
	"id": "CVE-2024-3094", "severity": "CRITICAL", "package": "xz-utils",
	"installed_version": "5.6.0", "fixed_version": "5.6.1", "fix_available": true,
	"exploit_available": true, "score": 10, "package_manager": "OS", "title": null,
}

zlib := {
	"id": "CVE-2023-0001", "severity": "HIGH", "package": "zlib",
	"installed_version": "1.2.11", "fixed_version": null, "fix_available": false,
	"exploit_available": false, "score": 7.5, "package_manager": "OS", "title": null,
}

basic := {
	"id": "CVE-2022-1111", "severity": "HIGH", "package": "openssl",
	"installed_version": "1.1.1k", "fixed_version": null, "fix_available": null,
	"exploit_available": null, "score": 8.1, "package_manager": null, "title": null,
}

scan(findings, overrides) := object.union(
	{
		"state": "complete", "findings_available": true, "reason": "ECR enhanced scan COMPLETE",
		"scanner": "ecr", "scan_type": "enhanced", "status": "COMPLETE",
		"completed_at": "2026-03-01T10:00:00Z", "vulnerability_db_updated_at": "2026-03-01T06:00:00Z",
		"severity_counts": {
			"CRITICAL": 1, "HIGH": 1, "MEDIUM": 0, "LOW": 0, "INFORMATIONAL": 0,
			"UNDEFINED": 0, "UNTRIAGED": 0,
		},
		"counts_source": "reported", "finding_count": count(findings), "findings": findings,
		"truncated": false, "location": {},
	},
	overrides,
)

request(environment, scan_section) := {
	"environment": environment,
	"evaluated_at": "2026-03-02T10:00:00Z",
	"images": [{
		"reference": ref, "registry": "123456789012.dkr.ecr.eu-west-1.amazonaws.com",
		"repository": "shop/api", "tag": null, "digest": "sha256:aaaa",
		"evidence": {"scan": scan_section},
	}],
}

xz_message := "CVE-2024-3094 in xz-utils 5.6.0 (CRITICAL, fixed in 5.6.1) is not allowed in production"

zlib_message := "CVE-2023-0001 in zlib 1.2.11 (HIGH, no fix available) is not allowed in production"

test_production_denies_critical_and_high_naming_cve_package_and_fix if {
	denies := vulnerabilities.deny with input as request("production", scan([xz, zlib], {}))
		with data.gatekeeper.config as {}
	denies == {{"image": ref, "message": xz_message}, {"image": ref, "message": zlib_message}}
}

test_basic_finding_without_fix_information if {
	denies := vulnerabilities.deny with input as request("production", scan([basic], {"scan_type": "basic"}))
		with data.gatekeeper.config as {}
	denies == {{"image": ref, "message": "CVE-2022-1111 in openssl 1.1.1k (HIGH) is not allowed in production"}}
}

test_staging_denies_only_critical if {
	denies := vulnerabilities.deny with input as request("staging", scan([xz, zlib], {}))
		with data.gatekeeper.config as {}
	denies == {{"image": ref, "message": "CVE-2024-3094 in xz-utils 5.6.0 (CRITICAL, fixed in 5.6.1) is not allowed in staging"}}
}

test_only_when_fix_available_mode if {
	cfg := {"vulnerabilities": {"environments": {"production": {"only_when_fix_available": true}}}}
	denies := vulnerabilities.deny with input as request("production", scan([xz, zlib, basic], {}))
		with data.gatekeeper.config as cfg
	denies == {{"image": ref, "message": xz_message}}
}

test_configured_thresholds_override_defaults if {
	cfg := {"vulnerabilities": {"environments": {"production": {"deny_severities": ["CRITICAL"]}}}}
	denies := vulnerabilities.deny with input as request("production", scan([xz, zlib], {}))
		with data.gatekeeper.config as cfg
	denies == {{"image": ref, "message": xz_message}}
}

test_clean_scan_is_allowed if {
	counts := {"CRITICAL": 0, "HIGH": 0, "MEDIUM": 0, "LOW": 0, "INFORMATIONAL": 0, "UNDEFINED": 0, "UNTRIAGED": 0}
	denies := vulnerabilities.deny with input as request("production", scan([], {"severity_counts": counts}))
		with data.gatekeeper.config as {}
	count(denies) == 0
}

exception(expires_at) := {
	"id": "CVE-2024-3094", "ticket_id": "SEC-42", "expires_at": expires_at,
	"reason": "patched in the base image next sprint",
}

test_exception_waives_until_expiry_and_warns if {
	cfg := {"vulnerabilities": {"cve_exceptions": [exception("2026-03-02T10:00:01Z")]}}
	inp := request("production", scan([xz], {}))
	denies := vulnerabilities.deny with input as inp with data.gatekeeper.config as cfg
	warns := vulnerabilities.warn with input as inp with data.gatekeeper.config as cfg
	count(denies) == 0
	warns == {{"image": ref, "message": "CVE-2024-3094 in xz-utils 5.6.0 (CRITICAL, fixed in 5.6.1) waived by exception (ticket SEC-42, expires 2026-03-02T10:00:01Z)"}}
}

test_expired_exception_stops_applying_and_says_so if {
	cfg := {"vulnerabilities": {"cve_exceptions": [exception("2026-03-02T10:00:00Z")]}}
	denies := vulnerabilities.deny with input as request("production", scan([xz], {}))
		with data.gatekeeper.config as cfg
	denies == {{"image": ref, "message": concat("", [xz_message, " (exception for CVE-2024-3094, ticket SEC-42, expired at 2026-03-02T10:00:00Z)"])}}
}

test_exception_scoped_to_other_images_or_packages_does_not_apply if {
	scoped := object.union(exception("2027-01-01T00:00:00Z"), {"images": ["*.dkr.ecr.*.amazonaws.com/other/*"]})
	by_package := object.union(exception("2027-01-01T00:00:00Z"), {"packages": ["liblzma"]})
	cfg := {"vulnerabilities": {"cve_exceptions": [scoped, by_package]}}
	denies := vulnerabilities.deny with input as request("production", scan([xz], {}))
		with data.gatekeeper.config as cfg
	denies == {{"image": ref, "message": xz_message}}
}

test_exception_scoped_to_this_repository_applies if {
	scoped := object.union(exception("2027-01-01T00:00:00Z"), {"images": ["*.dkr.ecr.*.amazonaws.com/shop/*"], "environments": ["production"]})
	denies := vulnerabilities.deny with input as request("production", scan([xz], {}))
		with data.gatekeeper.config as {"vulnerabilities": {"cve_exceptions": [scoped]}}
	count(denies) == 0
}

test_no_evaluated_at_means_no_exception if {
	inp := json.remove(request("production", scan([xz], {})), ["evaluated_at"])
	denies := vulnerabilities.deny with input as inp
		with data.gatekeeper.config as {"vulnerabilities": {"cve_exceptions": [exception("2099-01-01T00:00:00Z")]}}
	{"image": ref, "message": xz_message} in denies
	{"image": ref, "message": "cannot tell the scan age: evaluated_at is missing"} in denies
}

test_untriaged_count_limit if {
	counts := {"CRITICAL": 0, "HIGH": 0, "MEDIUM": 0, "LOW": 0, "INFORMATIONAL": 0, "UNDEFINED": 0, "UNTRIAGED": 11}
	denies := vulnerabilities.deny with input as request("production", scan([], {"severity_counts": counts}))
		with data.gatekeeper.config as {}
	denies == {{"image": ref, "message": "11 UNTRIAGED findings exceed the limit of 10 in production"}}
}

test_stale_scan_is_denied if {
	old := scan([], {"completed_at": "2026-02-20T09:00:00Z", "severity_counts": {}})
	denies := vulnerabilities.deny with input as request("production", old)
		with data.gatekeeper.config as {}
	denies == {{"image": ref, "message": "scan is 241 hours old (2026-02-20T09:00:00Z), older than the 168 hours allowed in production"}}
}

test_stale_vulnerability_database_is_denied if {
	old := scan([], {"vulnerability_db_updated_at": "2026-02-26T10:00:00Z", "severity_counts": {}})
	denies := vulnerabilities.deny with input as request("production", old)
		with data.gatekeeper.config as {}
	denies == {{"image": ref, "message": "vulnerability database is 96 hours old (2026-02-26T10:00:00Z), older than the 72 hours allowed in production"}}
}

test_unknown_completion_time_is_denied_where_age_matters if {
	denies := vulnerabilities.deny with input as request("production", scan([], {"completed_at": null, "severity_counts": {}}))
		with data.gatekeeper.config as {}
	denies == {{"image": ref, "message": "scan time is unknown; cannot prove it is fresh enough for production"}}
}

test_pending_scan_is_denied_in_production if {
	pending := {"state": "pending", "findings_available": false, "reason": "ECR scan status IN_PROGRESS", "findings": []}
	denies := vulnerabilities.deny with input as request("production", pending)
		with data.gatekeeper.config as {}
	denies == {{"image": ref, "message": "vulnerability scan is not complete (pending: ECR scan status IN_PROGRESS); production requires a complete scan"}}
}

test_failed_scan_is_allowed_in_development if {
	failed := {"state": "failed", "findings_available": false, "reason": "ECR scan status FAILED", "findings": []}
	denies := vulnerabilities.deny with input as request("development", failed)
		with data.gatekeeper.config as {}
	count(denies) == 0
}

test_active_enhanced_scan_counts_as_complete if {
	denies := vulnerabilities.deny with input as request("production", scan([], {"state": "active", "severity_counts": {}}))
		with data.gatekeeper.config as {}
	count(denies) == 0
}

test_no_scan_evidence_at_all_denies_only_when_configured if {
	inp := json.remove(request("production", {}), ["images/0/evidence/scan"])
	count(vulnerabilities.deny) == 0 with input as inp with data.gatekeeper.config as {}
	cfg := {"vulnerabilities": {"environments": {"production": {"deny_when_not_collected": true}}}}
	denies := vulnerabilities.deny with input as inp with data.gatekeeper.config as cfg
	denies == {{"image": ref, "message": "vulnerability scan is not complete (not_collected: no scan evidence was collected); production requires a complete scan"}}
}

test_image_never_scanned_is_denied_in_production if {
	never := {"state": "not_scanned", "findings_available": false, "reason": "ECR has no scan for this image", "findings": []}
	denies := vulnerabilities.deny with input as request("production", never) with data.gatekeeper.config as {}
	denies == {{"image": ref, "message": "vulnerability scan is not complete (not_scanned: ECR has no scan for this image); production requires a complete scan"}}
}

test_image_without_scanner_only_denied_when_required if {
	na := {"state": "not_applicable", "findings_available": false, "reason": "ghcr.io is not scanned by ecr", "findings": []}
	count(vulnerabilities.deny) == 0 with input as request("production", na) with data.gatekeeper.config as {}
	cfg := {"vulnerabilities": {"environments": {"production": {"require_scanner": true}}}}
	denies := vulnerabilities.deny with input as request("production", na) with data.gatekeeper.config as cfg
	denies == {{"image": ref, "message": "no vulnerability scanner covers this image (ghcr.io is not scanned by ecr); production requires one"}}
}

test_truncated_findings_warn if {
	warns := vulnerabilities.warn with input as request("development", scan([xz], {"truncated": true, "finding_count": 2500}))
		with data.gatekeeper.config as {}
	{"image": ref, "message": "only 1 of 2500 scan findings were evaluated (list truncated); severity counts still apply"} in warns
}
