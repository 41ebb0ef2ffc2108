# Images may only come from the registries allow-listed for the environment.
# Entries are host[:port] patterns matched with glob.match on "." and ":" boundaries, so
# "registry.example.com" never matches "registry.example.com.evil.io".
package gatekeeper.rules.registries

import data.gatekeeper.config

deny contains {"image": image.reference, "message": msg} if {
	environment := config.environments[input.environment]
	some image in input.images
	not allowed(environment.allowed_registries, image.registry)
	msg := sprintf("registry %q is not allowed in environment %q", [image.registry, input.environment])
}

allowed(patterns, host) if {
	some pattern in patterns
	glob.match(pattern, [".", ":"], host)
}

# The allow-list reads only the reference: decided before any evidence is fetched.
prefilter contains finding if some finding in deny
