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

warn contains {"image": image.reference, "message": "tag \"latest\" is mutable; deploy a version tag or a digest"} if {
	some image in input.images
	image.tag == "latest"
	image.digest == null
}
