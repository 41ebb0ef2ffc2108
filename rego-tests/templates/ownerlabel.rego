# A ConstraintTemplate's Rego, written in OPA Gatekeeper's format (for the tests): every object
# must carry the labels named by the constraint, each matching its allowed regex.
package gatekeeper.templates.ownerlabel

violation contains {"msg": msg, "details": {"missing": missing}} if {
	provided := {label | some label, _ in object.get(input.review.object.metadata, "labels", {})}
	required := {label.key | some label in input.parameters.labels}
	missing := required - provided
	count(missing) > 0
	msg := sprintf("you must provide labels: %v", [sort(missing)])
}

violation contains {"msg": msg} if {
	some label in input.parameters.labels
	value := input.review.object.metadata.labels[label.key]
	not regex.match(label.allowedRegex, value)
	msg := sprintf("label <%v: %v> does not match the regex %v", [label.key, value, label.allowedRegex])
}
