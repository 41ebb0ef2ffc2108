# A second template in Gatekeeper's format: replicas within the constraint's range.
package gatekeeper.templates.replicarange

violation contains {"msg": msg} if {
	replicas := input.review.object.spec.replicas
	not in_range(replicas)
	msg := sprintf("replicas %v is outside [%v, %v]", [replicas, input.parameters.min, input.parameters.max])
}

in_range(replicas) if {
	replicas >= input.parameters.min
	replicas <= input.parameters.max
}
