package gatekeeper.rules.digests_test

import data.gatekeeper.rules.digests

test_production_requires_digest if {
	denies := digests.deny with input as data.golden.pipeline_production_unpinned
	count(denies) == 3
	{
		"image": "nginx",
		"message": "image has no verified digest; environment \"production\" requires one",
	} in denies
}

test_pinned_images_pass_in_production if {
	count(digests.deny) == 0 with input as data.golden.pipeline_production_pinned
}

test_development_does_not_require_digest if {
	count(digests.deny) == 0 with input as data.golden.pipeline_development_hub
}

test_latest_tag_warns if {
	warns := digests.warn with input as data.golden.pipeline_production_unpinned
	{d.image | some d in warns} == {"nginx"}
}

test_pinned_latest_does_not_warn if {
	img := {"reference": "x:latest@sha256:ab", "tag": "latest", "digest": "sha256:ab"}
	count(digests.warn) == 0 with input as {"environment": "development", "images": [img]}
}
