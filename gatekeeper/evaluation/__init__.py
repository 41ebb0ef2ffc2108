"""The parts of the evaluate use case; :mod:`gatekeeper.service` composes them.

* :mod:`gatekeeper.evaluation.outcome` - the outcome of a policy result (or a failed engine).
* :mod:`gatekeeper.evaluation.gathering` - evidence per image: prefilter, digest, collectors, cache.
* :mod:`gatekeeper.evaluation.recording` - decisions built and written to the audit log.
* :mod:`gatekeeper.evaluation.warm` - the warm admission path on the event loop.
* :mod:`gatekeeper.evaluation.state` - the attributes the parts share.
"""
