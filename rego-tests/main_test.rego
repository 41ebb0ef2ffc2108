package gatekeeper.main_test

import data.gatekeeper.main

test_findings_carry_the_package_name if {
	d := main.decision with input as data.golden.pipeline_production_unpinned
	{"policy": "registries", "item": {
		"image": "nginx",
		"message": "registry \"docker.io\" is not allowed in environment \"production\"",
	}} in d.deny
}

test_bare_string_findings_are_kept if {
	d := main.decision with input as {"environment": "nowhere", "images": []}
	{"policy": "environments", "item": "unknown environment \"nowhere\" (known: development, production, staging)"} in d.deny
}

test_every_rule_package_is_listed if {
	d := main.decision with input as data.golden.pipeline_production_pinned
	{"digests", "environments", "registries"} & {p | some p in d.packages} == {"digests", "environments", "registries"}
}

# A package counts when it defines deny or warn (what the aggregator reads); a package of
# helpers only is not listed, and nothing else of a package is evaluated to list it.
test_packages_are_those_defining_deny_or_warn if {
	d := main.decision with data.gatekeeper.rules.only_warn.warn as {"w"}
		with data.gatekeeper.rules.helpers_only.limit as 3
		with input as data.golden.pipeline_production_pinned
	"only_warn" in d.packages
	not "helpers_only" in d.packages
	{"policy": "only_warn", "item": "w"} in d.warn
}

test_clean_request_has_no_findings if {
	d := main.decision with input as data.golden.pipeline_development_hub
	count(d.deny) == 0
	count(d.warn) == 0
}

test_new_package_is_aggregated if {
	d := main.decision with data.gatekeeper.rules.custom.deny as {"no"}
		with input as data.golden.pipeline_production_pinned
	{"policy": "custom", "item": "no"} in d.deny
}
