# Every request must name an environment this policy set knows; an unknown or missing one is
# denied, so a typo can never skip the thresholds of the real environment.
package gatekeeper.rules.environments

import data.gatekeeper.config

deny contains msg if {
	environment := object.get(input, "environment", null)
	not config.environments[environment]
	known := concat(", ", sort(object.keys(config.environments)))
	msg := sprintf("unknown environment %s (known: %s)", [json.marshal(environment), known])
}
