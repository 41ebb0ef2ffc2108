# The workload itself (input.review.object), for Pod and every pod-bearing kind: resource
# requests and limits per environment (with maxima), no privileged containers, no host
# network/PID/IPC, allowed capabilities, read-only root filesystem and runAsNonRoot where the
# environment requires them. Thresholds live in data.gatekeeper.config.workload.environments.
# Messages start with the field path, as the image findings do:
#   spec.template.spec.containers[1].resources.limits.memory: ...
# Findings are about the request (not one image), so exceptions do not waive them.
package gatekeeper.rules.workload

import data.gatekeeper.config

settings := config.workload.environments[input.environment]

# Where a pod spec lives, by kind (the same places the gatekeeper reads images from).
spec_paths(kind) := [["spec"]] if {
	kind == "Pod"
} else := [
	["spec", "template", "spec"],
	["spec", "jobTemplate", "spec", "template", "spec"],
	["template", "spec"],
]

container_lists := ["initContainers", "containers", "ephemeralContainers"]

# [dotted path of the pod spec, pod spec]
pod_specs contains [concat(".", path), spec] if {
	obj := input.review.object
	some path in spec_paths(input.review.kind.kind)
	spec := object.get(obj, path, null)
	is_object(spec)
	some name in container_lists
	is_array(spec[name])
}

# [dotted path of the container, container list name, container, pod spec path, pod spec]
containers contains [sprintf("%s.%s[%d]", [prefix, list, i]), list, c, prefix, spec] if {
	some [prefix, spec] in pod_specs
	some list in container_lists
	some i, c in spec[list]
}

# --- resources ---------------------------------------------------------------------------

resource_containers contains entry if {
	some entry in containers
	entry[1] != "ephemeralContainers" # the API server refuses resources on these
}

deny contains msg if {
	some [path, _, c, _, _] in resource_containers
	some resource in settings.required_requests
	not c.resources.requests[resource]
	msg := sprintf("%s.resources.requests.%s: container %q sets no %s request (required in environment %q)", [path, resource, c.name, resource, input.environment])
}

deny contains msg if {
	some [path, _, c, _, _] in resource_containers
	some resource in settings.required_limits
	not c.resources.limits[resource]
	msg := sprintf("%s.resources.limits.%s: container %q sets no %s limit (required in environment %q)", [path, resource, c.name, resource, input.environment])
}

deny contains msg if {
	some [path, _, c, _, _] in resource_containers
	some resource, maximum in settings.max_limits
	some kind in ["requests", "limits"]
	value := c.resources[kind][resource]
	units.parse(sprintf("%v", [value])) > units.parse(maximum)
	msg := sprintf("%s.resources.%s.%s: %v is more than the maximum %s in environment %q", [path, kind, resource, value, maximum, input.environment])
}

deny contains msg if {
	some [path, _, c, _, _] in resource_containers
	some resource, _ in settings.max_limits
	some kind in ["requests", "limits"]
	value := c.resources[kind][resource]
	not quantity(value)
	msg := sprintf("%s.resources.%s.%s: %v is not a quantity", [path, kind, resource, value])
}

quantity(value) if units.parse(sprintf("%v", [value]))

# --- security context --------------------------------------------------------------------

deny contains msg if {
	not settings.allow_privileged
	some [path, _, c, _, _] in containers
	c.securityContext.privileged == true
	msg := sprintf("%s.securityContext.privileged: container %q is privileged (not allowed in environment %q)", [path, c.name, input.environment])
}

deny contains msg if {
	not settings.allow_host_namespaces
	some [prefix, spec] in pod_specs
	some field in ["hostNetwork", "hostPID", "hostIPC"]
	spec[field] == true
	msg := sprintf("%s.%s: host namespaces are not allowed in environment %q", [prefix, field, input.environment])
}

deny contains msg if {
	some [path, _, c, _, _] in containers
	some i, capability in c.securityContext.capabilities.add
	not capability in settings.allowed_capabilities
	allowed := concat(", ", sort(settings.allowed_capabilities))
	msg := sprintf("%s.securityContext.capabilities.add[%d]: capability %q is not allowed in environment %q (allowed: %s)", [path, i, capability, input.environment, allowed])
}

deny contains msg if {
	settings.require_read_only_root_filesystem
	some [path, _, c, _, _] in containers
	not c.securityContext.readOnlyRootFilesystem == true
	msg := sprintf("%s.securityContext.readOnlyRootFilesystem: container %q must set it to true in environment %q", [path, c.name, input.environment])
}

deny contains msg if {
	settings.require_run_as_non_root
	some [path, _, c, prefix, spec] in containers
	not runs_as_non_root(c, spec)
	msg := sprintf("%s.securityContext.runAsNonRoot: container %q must run as non-root in environment %q (set it, or %s.securityContext.runAsNonRoot, to true)", [path, c.name, input.environment, prefix])
}

# The container's own setting wins over the pod's (as in the kubelet).
runs_as_non_root(c, _) if c.securityContext.runAsNonRoot == true

runs_as_non_root(c, spec) if {
	not has_own_setting(c)
	spec.securityContext.runAsNonRoot == true
}

has_own_setting(c) if is_boolean(c.securityContext.runAsNonRoot)

# A user id 0 is root whatever runAsNonRoot says (the kubelet refuses it too, at start).
deny contains msg if {
	settings.require_run_as_non_root
	some [path, _, c, _, _] in containers
	c.securityContext.runAsUser == 0
	msg := sprintf("%s.securityContext.runAsUser: container %q runs as user 0 (root) in environment %q", [path, c.name, input.environment])
}
