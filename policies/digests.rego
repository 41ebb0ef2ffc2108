# Pinning: environments with require_digest deny images whose digest is unknown;
# a mutable "latest" tag is always worth a warning.
package gatekeeper.rules.digests

import data.gatekeeper.config

deny contains {"image": image.reference, "message": msg} if {
	config.environments[input.environment].require_digest
	some image in input.images
	image.digest == null
	msg := sprintf("image has no verified digest; environment %q requires one", [input.environment])
}

# Before evidence (input.prefilter set by the gatekeeper): a reference without a digest stays
# without one when the gatekeeper does not resolve tags, so the deny above is certain.
prefilter contains finding if {
	input.prefilter.digests_resolved == false
	some finding in deny
}

warn contains {"image": image.reference, "message": "tag \"latest\" is mutable; deploy a version tag or a digest"} if {
	some image in input.images
	image.tag == "latest"
	image.digest == null
}
