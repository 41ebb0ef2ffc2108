# The OPA sidecar image: the pinned, statically linked OPA built by scripts/install-tools and
# nothing else (no shell, no package manager). Built by `scripts/build-image --target opa`.
FROM scratch
COPY opa /opa
USER 65532:65532
ENTRYPOINT ["/opa"]
CMD ["run", "--server"]
