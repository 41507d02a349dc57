# Portcullis: a small runtime image with OpenSSL (josekit links it) and a non-root user.
# The binary is the profile-guided build of bench/pgo.sh, the one bench/compare.sh measures:
# built instrumented, run on `portcullis demo` with a site's traffic (python3), built again
# with that profile (~10 minutes on two cores). Docker itself cannot run on the development
# machines, so this file is kept in step with bench/pgo.sh and .ci/run by hand, and its build
# stage is checked there by running bench/pgo.sh in a directory holding only what it copies.

FROM rust:1-bookworm AS build
RUN apt-get update && apt-get install -y --no-install-recommends pkg-config libssl-dev python3 \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
# Cargo reads every target the manifest names (the criterion benches, the integration tests)
# even to build only the binary.
COPY benches ./benches
COPY tests ./tests
COPY bench/pgo.sh bench/pgo_train.py bench/cpu.py ./bench/
RUN bench/pgo.sh /src/portcullis && strip /src/portcullis

FROM debian:bookworm-slim
# libssl3 and ca-certificates come from Debian's security updates: rebuilding the image picks
# up OpenSSL fixes (see README, "Keeping OpenSSL current").
RUN apt-get update && apt-get install -y --no-install-recommends libssl3 ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --no-create-home portcullis
COPY --from=build /src/portcullis /usr/local/bin/portcullis
COPY config/portcullis.example.toml /etc/portcullis/portcullis.toml
USER portcullis
ENV PORTCULLIS_CONFIG=/etc/portcullis/portcullis.toml \
    PORTCULLIS_SERVER__LISTEN=0.0.0.0:8080 \
    PORTCULLIS_ADMIN__LISTEN=0.0.0.0:9090
EXPOSE 8080 9090
HEALTHCHECK --interval=10s --timeout=3s --retries=3 CMD ["portcullis", "health", "http://127.0.0.1:9090/healthz"]
ENTRYPOINT ["portcullis"]
CMD ["run"]
