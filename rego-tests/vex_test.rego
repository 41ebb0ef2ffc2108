package gatekeeper.rules.vex_test

# VEX in policies/vulnerabilities.rego: a trusted statement waives exactly the CVE, package and
# digest it names, and the decision says so with the justification and the source.

import data.gatekeeper.rules.vulnerabilities

digest := "sha256:aaaa"

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

# One entry of evidence.vex.statements, as gatekeeper/vex/collector.py builds it.
statement(overrides) := object.union(
	{
		"vulnerability": "CVE-2024-3094", "aliases": [], "status": "not_affected",
		"justification": "vulnerable_code_not_in_execute_path", "impact_statement": null,
		"products": [digest], "packages": [], "timestamp": "2026-03-01T00:00:00Z",
		"source": "upload", "authority": null, "supplied_by": "sec-team",
		"origin": "vex upload 1", "format": "openvex", "document_sha256": "00",
	},
	overrides,
)

request(image_digest, statements) := {
	"environment": "production",
	"evaluated_at": "2026-03-02T10:00:00Z",
	"images": [{
		"reference": ref, "registry": "123456789012.dkr.ecr.eu-west-1.amazonaws.com",
		"repository": "shop/api", "tag": null, "digest": image_digest,
		"evidence": {
			"scan": {
				"state": "complete", "reason": "ECR enhanced scan COMPLETE",
				"completed_at": "2026-03-01T10:00:00Z", "vulnerability_db_updated_at": "2026-03-01T06:00:00Z",
				"severity_counts": {"CRITICAL": 1, "HIGH": 1}, "finding_count": 2, "findings": [xz, zlib],
				"truncated": false,
			},
			"vex": {"statement_count": count(statements), "statements": statements, "documents": []},
		},
	}],
}

xz_text := "CVE-2024-3094 in xz-utils 5.6.0 (CRITICAL, fixed in 5.6.1)"

xz_denied := {"image": ref, "message": concat("", [xz_text, " is not allowed in production"])}

zlib_denied := {"image": ref, "message": "CVE-2023-0001 in zlib 1.2.11 (HIGH, no fix available) is not allowed in production"}

test_not_affected_waives_exactly_that_cve_and_says_why if {
	inp := request(digest, [statement({})])
	denies := vulnerabilities.deny with input as inp with data.gatekeeper.config as {}
	denies == {zlib_denied}
	warns := vulnerabilities.warn with input as inp with data.gatekeeper.config as {}
	warns == {{"image": ref, "message": concat("", [xz_text, " waived by VEX (not_affected: vulnerable_code_not_in_execute_path) from upload by sec-team"])}}
}

test_attested_fixed_statement_names_its_authority if {
	inp := request(digest, [statement({"status": "fixed", "justification": null, "source": "attestation", "authority": "release", "supplied_by": null})])
	warns := vulnerabilities.warn with input as inp with data.gatekeeper.config as {}
	warns == {{"image": ref, "message": concat("", [xz_text, " waived by VEX (fixed) from attestation by release"])}}
}

test_impact_statement_is_shown_without_justification if {
	inp := request(digest, [statement({"justification": null, "impact_statement": "xz is never invoked"})])
	warns := vulnerabilities.warn with input as inp with data.gatekeeper.config as {}
	warns == {{"image": ref, "message": concat("", [xz_text, " waived by VEX (not_affected: xz is never invoked) from upload by sec-team"])}}
}

test_statement_for_another_digest_waives_nothing if {
	inp := request("sha256:bbbb", [statement({})])
	denies := vulnerabilities.deny with input as inp with data.gatekeeper.config as {}
	xz_denied in denies
	count(vulnerabilities.warn) == 0 with input as inp with data.gatekeeper.config as {}
}

test_statement_without_products_waives_nothing if {
	inp := request(digest, [statement({"products": []})])
	xz_denied in vulnerabilities.deny with input as inp with data.gatekeeper.config as {}
}

test_alias_names_the_finding if {
	inp := request(digest, [statement({"vulnerability": "GHSA-rxwq-x6h5-x525", "aliases": ["CVE-2024-3094"]})])
	denies := vulnerabilities.deny with input as inp with data.gatekeeper.config as {}
	denies == {zlib_denied}
}

test_packages_restrict_the_waiver if {
	other_package := request(digest, [statement({"packages": ["liblzma5"]})])
	xz_denied in vulnerabilities.deny with input as other_package with data.gatekeeper.config as {}
	same_package := request(digest, [statement({"packages": ["xz-utils"]})])
	denies := vulnerabilities.deny with input as same_package with data.gatekeeper.config as {}
	denies == {zlib_denied}
}

test_affected_and_under_investigation_do_not_waive if {
	every status in ["affected", "under_investigation"] {
		inp := request(digest, [statement({"status": status, "justification": null})])
		xz_denied in vulnerabilities.deny with input as inp with data.gatekeeper.config as {}
	}
}

test_a_trusted_affected_statement_wins_and_is_named if {
	inp := request(digest, [statement({}), statement({"status": "affected", "justification": null, "source": "attestation", "authority": "release"})])
	xz_denied in vulnerabilities.deny with input as inp with data.gatekeeper.config as {}
	warns := vulnerabilities.warn with input as inp with data.gatekeeper.config as {}
	warns == {{"image": ref, "message": "CVE-2024-3094 not waived by VEX (not_affected: vulnerable_code_not_in_execute_path) from upload by sec-team: a trusted statement says affected"}}
}

test_untrusted_source_is_ignored if {
	inp := request(digest, [statement({"source": "referrer"})])
	xz_denied in vulnerabilities.deny with input as inp with data.gatekeeper.config as {}
	only_attested := {"vulnerabilities": {"environments": {"production": {"vex_sources": ["attestation"]}}}}
	xz_denied in vulnerabilities.deny with input as request(digest, [statement({})]) with data.gatekeeper.config as only_attested
}

test_an_image_without_a_digest_is_never_waived if {
	inp := request(null, [statement({"products": [null]})])
	xz_denied in vulnerabilities.deny with input as inp with data.gatekeeper.config as {}
}

test_golden_vex_statement_waives_the_finding_of_its_digest if {
	golden := data.golden.pipeline_production_sbom_sources
	scan := {
		"state": "complete", "reason": "complete", "completed_at": "2026-11-24T10:00:00Z",
		"vulnerability_db_updated_at": "2026-11-24T06:00:00Z", "severity_counts": {"CRITICAL": 1},
		"finding_count": 1, "findings": [xz], "truncated": false,
	}
	inp := json.patch(golden, [{"op": "add", "path": "/images/0/evidence/scan", "value": scan}])
	count(vulnerabilities.deny) == 0 with input as inp with data.gatekeeper.config as {}
	vulnerabilities.warn == {{
		"image": golden.images[0].reference,
		"message": concat("", [xz_text, " waived by VEX (not_affected: vulnerable_code_not_in_execute_path) from upload by sec-team"]),
	}} with input as inp with data.gatekeeper.config as {}
}
