# otau-operator: a static binary on an empty base image (docs/architecture.md §9.11).
# No shell, no package manager; runs as the non-root user 65532. Use `kubectl debug` for a shell.
# Build: docker build -t otau-operator .   (the builder stage runs hack/build-static.sh)

FROM docker.io/library/rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN hack/build-static.sh release /out/otau-operator

FROM scratch
# reqwest (rustls) reads the system CA store: the platform's HTTPS endpoints need these roots.
COPY --from=build /etc/ssl/certs/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
COPY --from=build /out/otau-operator /otau-operator
USER 65532:65532
EXPOSE 8080 8081
ENTRYPOINT ["/otau-operator"]
CMD ["run"]
