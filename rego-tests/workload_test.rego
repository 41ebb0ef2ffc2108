package gatekeeper.rules.workload_test

import data.gatekeeper.rules.workload

deployment := data.golden.admission_production_deployment

# A golden input whose first pod spec (at spec) is replaced by ``spec`` for ``kind``.
with_pod(kind, spec) := object.union(object.remove(deployment, ["review"]), {"review": {
	"kind": {"group": "", "version": "v1", "kind": kind},
	"object": {"kind": kind, "spec": spec},
}})

compliant_container(name) := {
	"name": name,
	"image": "registry.example.com/acme/api@sha256:abababababababababababababababababababababababababababababababab",
	"resources": {
		"requests": {"cpu": "100m", "memory": "128Mi"},
		"limits": {"cpu": "500m", "memory": "256Mi"},
	},
	"securityContext": {"readOnlyRootFilesystem": true, "runAsNonRoot": true},
}

test_real_deployment_without_resources_is_denied_in_production_with_field_paths if {
	denies := workload.deny with input as deployment
	msg := "spec.template.spec.containers[1].resources.limits.memory: container \"api\" sets no memory limit (required in environment \"production\")"
	msg in denies
	init := "spec.template.spec.initContainers[0].resources.requests.cpu: container \"migrate\" sets no cpu request (required in environment \"production\")"
	init in denies
	ro := "spec.template.spec.containers[2].securityContext.readOnlyRootFilesystem: container \"sidecar\" must set it to true in environment \"production\""
	ro in denies
	root := "spec.template.spec.containers[0].securityContext.runAsNonRoot: container \"web\" must run as non-root in environment \"production\" (set it, or spec.template.spec.securityContext.runAsNonRoot, to true)"
	root in denies
}

test_real_cronjob_paths_go_through_the_job_template if {
	denies := workload.deny with input as data.golden.admission_production_cronjob
	"spec.jobTemplate.spec.template.spec.containers[1].resources.limits.cpu: container \"api\" sets no cpu limit (required in environment \"production\")" in denies
}

test_compliant_pod_passes_in_production if {
	count(workload.deny) == 0 with input as with_pod("Pod", {"containers": [compliant_container("a"), compliant_container("b")]})
}

test_development_requires_no_resources if {
	inp := object.union(with_pod("Pod", {"containers": [{"name": "a", "image": "x"}]}), {"environment": "development"})
	count(workload.deny) == 0 with input as inp
}

test_staging_requires_no_resources_but_keeps_the_maxima if {
	c := {"name": "a", "image": "x", "resources": {"requests": {"cpu": "9"}}}
	inp := object.union(with_pod("Pod", {"containers": [c]}), {"environment": "staging"})
	denies := workload.deny with input as inp
	denies == {"spec.containers[0].resources.requests.cpu: 9 is more than the maximum 8 in environment \"staging\""}
}

test_maximum_is_compared_as_a_quantity if {
	c := object.union(compliant_container("big"), {"resources": {"limits": {"memory": "33Gi"}}})
	denies := workload.deny with input as with_pod("Pod", {"containers": [compliant_container("a"), c]})
	denies == {"spec.containers[1].resources.limits.memory: 33Gi is more than the maximum 32Gi in environment \"production\""}
}

test_millicores_within_maximum_pass if {
	c := object.union(compliant_container("a"), {"resources": {"limits": {"cpu": "8000m"}}})
	count(workload.deny) == 0 with input as with_pod("Pod", {"containers": [c]})
}

test_malformed_quantity_is_denied if {
	c := object.union(compliant_container("a"), {"resources": {"limits": {"cpu": "lots"}}})
	denies := workload.deny with input as with_pod("Pod", {"containers": [c]})
	"spec.containers[0].resources.limits.cpu: lots is not a quantity" in denies
}

test_privileged_container_is_denied_in_every_environment if {
	c := object.union(compliant_container("a"), {"securityContext": {"privileged": true}})
	every env in ["development", "staging", "production"] {
		inp := object.union(with_pod("DaemonSet", {"template": {"spec": {"containers": [c]}}}), {"environment": env})
		denies := workload.deny with input as inp
		sprintf("spec.template.spec.containers[0].securityContext.privileged: container \"a\" is privileged (not allowed in environment %q)", [env]) in denies
	}
}

test_host_namespaces_are_denied if {
	spec := {"hostNetwork": true, "hostPID": true, "hostIPC": false, "containers": [compliant_container("a")]}
	denies := workload.deny with input as with_pod("Pod", spec)
	denies == {
		"spec.hostNetwork: host namespaces are not allowed in environment \"production\"",
		"spec.hostPID: host namespaces are not allowed in environment \"production\"",
	}
}

test_capabilities_outside_the_allow_list_are_denied if {
	c := object.union(compliant_container("a"), {"securityContext": {"capabilities": {"add": ["NET_BIND_SERVICE", "SYS_ADMIN"]}}})
	denies := workload.deny with input as with_pod("Pod", {"ephemeralContainers": [c]})
	denies == {"spec.ephemeralContainers[0].securityContext.capabilities.add[1]: capability \"SYS_ADMIN\" is not allowed in environment \"production\" (allowed: NET_BIND_SERVICE)"}
}

test_pod_level_run_as_non_root_counts_unless_the_container_overrides_it if {
	plain := {"name": "a", "image": "x", "resources": compliant_container("a").resources, "securityContext": {"readOnlyRootFilesystem": true}}
	override := object.union(plain, {"name": "b", "securityContext": {"runAsNonRoot": false}})
	denies := workload.deny with input as with_pod("Pod", {"securityContext": {"runAsNonRoot": true}, "containers": [plain, override]})
	denies == {"spec.containers[1].securityContext.runAsNonRoot: container \"b\" must run as non-root in environment \"production\" (set it, or spec.securityContext.runAsNonRoot, to true)"}
}

test_user_zero_is_root if {
	c := object.union(compliant_container("a"), {"securityContext": {"runAsUser": 0}})
	denies := workload.deny with input as with_pod("Pod", {"containers": [c]})
	denies == {"spec.containers[0].securityContext.runAsUser: container \"a\" runs as user 0 (root) in environment \"production\""}
}

test_images_only_request_has_no_workload_findings if {
	count(workload.deny) == 0 with input as data.golden.pipeline_production_pinned
}

test_spec_of_a_non_pod_kind_is_not_a_pod_spec if {
	count(workload.deny) == 0 with input as with_pod("ConfigMap", {"containers": [{"name": "a", "image": "x", "securityContext": {"privileged": true}}]})
}
