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

# Runtime: glibc, CA certificates, tzdata, no shell, no package manager; uid/gid 65532 (nonroot).
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/pennant /usr/local/bin/pennant
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/pennant"]
CMD ["controller"]
