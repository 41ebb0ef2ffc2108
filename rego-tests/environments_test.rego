package gatekeeper.rules.environments_test

import data.gatekeeper.rules.environments

test_known_environment_passes if {
	count(environments.deny) == 0 with input as data.golden.pipeline_production_pinned
}

test_unknown_environment_is_denied if {
	denies := environments.deny with input as {"environment": "prod", "images": []}
	denies == {"unknown environment \"prod\" (known: development, production, staging)"}
}

test_missing_environment_is_denied if {
	count(environments.deny) == 1 with input as {"images": []}
}
