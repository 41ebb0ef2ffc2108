package gatekeeper.templates_test

import data.gatekeeper.main

review := data.golden.admission_production_deployment

owner := {"name": "must-have-owner", "template": "ownerlabel", "parameters": {"labels": [{"key": "owner", "allowedRegex": "^team-[a-z]+$"}]}}

replicas := {"name": "replicas-1-3", "template": "replicarange", "parameters": {"min": 1, "max": 3}, "match": {"kinds": ["Deployment", "StatefulSet"]}}

with_labels(labels, count_) := json.patch(review, [
	{"op": "add", "path": "/review/object/metadata/labels", "value": labels},
	{"op": "add", "path": "/review/object/spec/replicas", "value": count_},
])

test_constraint_parameters_are_enforced_with_the_template_name_as_policy if {
	denies := {f | some f in main.deny; f.policy in {"ownerlabel", "replicarange"}} with input as with_labels({"app": "shop"}, 5)
		with data.gatekeeper.config.constraints as [owner, replicas]
	denies == {
		{"policy": "ownerlabel", "item": "you must provide labels: [\"owner\"]"},
		{"policy": "replicarange", "item": "replicas 5 is outside [1, 3]"},
	}
}

test_compliant_object_passes if {
	denies := {f | some f in main.deny; f.policy in {"ownerlabel", "replicarange"}} with input as with_labels({"owner": "team-pay"}, 2)
		with data.gatekeeper.config.constraints as [owner, replicas]
	count(denies) == 0
}

test_parameters_change_the_meaning if {
	strict := json.patch(owner, [{"op": "replace", "path": "/parameters/labels/0/allowedRegex", "value": "^team-ops$"}])
	denies := {f | some f in main.deny; f.policy == "ownerlabel"} with input as with_labels({"owner": "team-pay"}, 2)
		with data.gatekeeper.config.constraints as [strict]
	denies == {{"policy": "ownerlabel", "item": "label <owner: team-pay> does not match the regex ^team-ops$"}}
}

test_match_limits_kinds_namespaces_and_environments if {
	elsewhere := json.patch(owner, [{"op": "add", "path": "/match", "value": {"namespaces": ["other"]}}])
	staging := json.patch(owner, [{"op": "add", "path": "/match", "value": {"environments": ["staging"]}}])
	pods := json.patch(replicas, [{"op": "replace", "path": "/match/kinds", "value": ["Pod"]}])
	denies := {f | some f in main.deny; f.policy in {"ownerlabel", "replicarange"}} with input as with_labels({}, 9)
		with data.gatekeeper.config.constraints as [elsewhere, staging, pods]
	count(denies) == 0
}

test_no_constraint_no_finding if {
	denies := {f | some f in main.deny; f.policy == "ownerlabel"} with input as with_labels({}, 9)
	count(denies) == 0
}

test_images_only_request_is_not_given_to_templates if {
	denies := {f | some f in main.deny; f.policy == "ownerlabel"} with input as data.golden.pipeline_production_pinned
		with data.gatekeeper.config.constraints as [owner]
	count(denies) == 0
}

test_violation_without_msg_denies_saying_so if {
	denies := {f | some f in main.deny; f.policy == "broken"} with input as review
		with data.gatekeeper.config.constraints as [{"name": "b", "template": "broken"}]
	denies == {{"policy": "broken", "item": "template broken (constraint b) returned a violation without a string \"msg\": {\"message\":\"forgot msg\"}"}}
}
