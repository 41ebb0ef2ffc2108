# Every request must name an environment this policy set knows; an unknown one is denied,
# so a typo can never skip the thresholds of the real environment.
package gatekeeper.rules.environments

import data.gatekeeper.config

deny contains msg if {
	not config.environments[input.environment]
	known := concat(", ", sort(object.keys(config.environments)))
	msg := sprintf("unknown environment %q (known: %s)", [input.environment, known])
}
