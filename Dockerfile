# syntax=docker/dockerfile:1
# pennant controller image: a static-enough Rust binary on distroless, running as non-root.
#
#   docker build -t pennant:dev .
#
# Build stage: the release profile (LTO, one codegen unit, stripped; see Cargo.toml). rustls with
# ring means no OpenSSL: the binary links only glibc, which distroless/cc provides.
FROM rust:1.95-bookworm AS build
WORKDIR /src
# Dependencies first, so a source change does not rebuild them.
COPY Cargo.toml Cargo.lock ./
RUN mkdir src && echo 'fn main() {}' > src/main.rs && touch src/lib.rs \
 && cargo build --release --locked \
 && rm -rf src target/release/.fingerprint/pennant-* target/release/deps/pennant-* target/release/deps/libpennant-*
COPY src ./src
COPY crds ./crds
RUN cargo build --release --locked --bin pennant \
 && install -D -m 0755 target/release/pennant /out/pennant

# The CLIs the GitOps controllers run: helm (Helm 4, the HelmRelease engine) and kustomize (Kustomization
# builds and HelmRelease post-renderers), built from their Go modules at the versions e2e/cluster tests.
FROM golang:1.26-bookworm AS tools
ARG HELM_VERSION=v4.3.2
ARG KUSTOMIZE_VERSION=v5.8.2
RUN CGO_ENABLED=0 GOBIN=/out go install \
      -ldflags "-s -w -X helm.sh/helm/v4/internal/version.version=${HELM_VERSION} -X helm.sh/helm/v4/internal/version.gitTreeState=clean" \
      helm.sh/helm/v4/cmd/helm@${HELM_VERSION} \
 && CGO_ENABLED=0 GOBIN=/out go install -ldflags "-s -w" sigs.k8s.io/kustomize/kustomize/v5@${KUSTOMIZE_VERSION}

# Runtime: glibc, CA certificates, tzdata, no shell, no package manager; uid/gid 65532 (nonroot).
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/pennant /usr/local/bin/pennant
COPY --from=tools /out/helm /out/kustomize /usr/local/bin/
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/pennant"]
CMD ["controller"]
