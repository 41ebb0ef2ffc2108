package gatekeeper.rules.registries_test

import data.gatekeeper.rules.registries

test_allow_listed_registry_in_production if {
	denies := registries.deny with input as data.golden.pipeline_production_pinned
	count(denies) == 0
}

test_lookalike_host_is_denied if {
	denies := registries.deny with input as data.golden.pipeline_production_unpinned
	{
		"image": "registry.example.com.evil.io/payments/api:1.4",
		"message": "registry \"registry.example.com.evil.io\" is not allowed in environment \"production\"",
	} in denies
}

test_docker_hub_is_denied_in_production if {
	denies := registries.deny with input as data.golden.pipeline_production_unpinned
	{
		"image": "nginx",
		"message": "registry \"docker.io\" is not allowed in environment \"production\"",
	} in denies
}

test_exact_host_is_not_denied if {
	denies := registries.deny with input as data.golden.pipeline_production_unpinned
	every d in denies { d.image != "registry.example.com/payments/api:1.4" }
}

test_subdomain_does_not_match_exact_entry if {
	img := {"reference": "evil.registry.example.com/a", "registry": "evil.registry.example.com"}
	denies := registries.deny with input as {"environment": "production", "images": [img]}
	count(denies) == 1
}

test_ecr_pattern_needs_whole_labels if {
	good := {"reference": "r1", "registry": "123.dkr.ecr.eu-west-1.amazonaws.com"}
	bad := {"reference": "r2", "registry": "123.dkr.ecr.eu-west-1.amazonaws.com.evil.io"}
	denies := registries.deny with input as {"environment": "production", "images": [good, bad]}
	{d.image | some d in denies} == {"r2"}
}

test_loopback_port_pattern if {
	img := {"reference": "127.0.0.1:5000/a", "registry": "127.0.0.1:5000"}
	other := {"reference": "127.0.0.2:5000/a", "registry": "127.0.0.2:5000"}
	denies := registries.deny with input as {"environment": "production", "images": [img, other]}
	{d.image | some d in denies} == {"127.0.0.2:5000/a"}
}

test_unknown_environment_left_to_environments_rule if {
	denies := registries.deny with input as {"environment": "prod", "images": [{"reference": "x", "registry": "docker.io"}]}
	count(denies) == 0
}

test_development_allows_hub_and_localhost if {
	denies := registries.deny with input as data.golden.pipeline_development_hub
	count(denies) == 0
}
