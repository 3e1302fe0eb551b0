# syntax=docker/dockerfile:1
#
# secmail container image: build with `docker build -t secmail:0.1.0 .` at the project root.
# deploy/README.md says how to run it and how the Kubernetes manifests use it.

# Base image, pinned by tag AND digest, so that a rebuild uses the same CPython and the same Debian
# packages until someone moves the pin on purpose. The digest is the multi-platform index of
# python:3.11.15-slim-bookworm (amd64 and arm64) as pinned in public Dockerfiles (one pins it as
# `python:3.11-slim-bookworm@...`, others as `python:3.11.15-slim-bookworm@...`, one calling it the
# multi-platform manifest). It could not be re-checked against the registry where this file was
# written (no registry access there), so CHECK IT AT THE FIRST BUILD, and whenever the pin is moved:
#     docker buildx imagetools inspect python:3.11.15-slim-bookworm
# and update the tag and the digest together. Bookworm, not bullseye: cryptography 50's wheels need
# glibc >= 2.34 (bookworm has 2.36), and without a wheel pip would try to build Rust code here.
ARG PYTHON_IMAGE=python:3.11.15-slim-bookworm@sha256:b18992999dbe963a45a8a4da40ac2b1975be1a776d939d098c647482bcad5cba

# ---------------------------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS builder

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_ROOT_USER_ACTION=ignore

# Everything secmail needs lives in one venv that the runtime stage copies whole: no pip, no
# build tools and no source tree reach the runtime image. The venv path is the same in both
# stages because a venv's scripts hard-code their interpreter's path.
RUN python -m venv /opt/secmail

WORKDIR /src
COPY pyproject.toml README.md ./
COPY secmail ./secmail

# psycopg is not (yet) a dependency in pyproject.toml, but the deployment stores its state in
# PostgreSQL (`--database-url postgresql+psycopg://...`); the binary wheel bundles libpq, so the
# runtime stage needs no libpq5. Same version as the development venv. When pyproject.toml grows
# a `postgresql` extra, install `.[postgresql]` instead.
# The runtime never installs anything, so the installer itself is left out of the venv.
RUN /opt/secmail/bin/pip install . "psycopg[binary]==3.3.9" \
    && /opt/secmail/bin/pip uninstall --yes setuptools pip

# ---------------------------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS runtime

# The service runs no external tool (OpenPGP RSA secret-key operations go through OpenSSL via
# `cryptography`, see secmail/pgp/sign.py and decrypt.py), so no GnuPG here.
# ca-certificates: the CA store that verifies the PostgreSQL server (see SSL_CERT_FILE below).
# Debian package versions are not pinned: bookworm's mirror drops superseded versions, so a pin
# would break the build at the next security update; the base digest fixes the rest.
# hadolint ignore=DL3008
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
       ca-certificates \
    && rm -rf /var/lib/apt/lists/*

# A fixed numeric uid/gid (10001, above any distribution range) so Kubernetes can check
# runAsNonRoot without resolving names, and volumes can be prepared with the same ids.
RUN groupadd --system --gid 10001 secmail \
    && useradd --system --uid 10001 --gid 10001 --home-dir /var/lib/secmail --no-create-home \
       --shell /usr/sbin/nologin secmail \
    && install -d -o 10001 -g 10001 -m 0700 /var/lib/secmail

COPY --from=builder /opt/secmail /opt/secmail

# PYTHONDONTWRITEBYTECODE: the root filesystem is read-only in production (pip compiled the
# .pyc files at install time). PYTHONUNBUFFERED: log lines reach the container log at once.
# SSL_CERT_FILE: the libpq inside the psycopg wheel brings its own OpenSSL, whose default CA
# location (/usr/lib/psycopg-openssl) does not exist here; this points it, and so
# `sslrootcert=system` in the database URL, at Debian's CA store.
ENV PATH=/opt/secmail/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    SECMAIL_DATA_DIR=/var/lib/secmail \
    SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt

# The data directory holds the SQLite database and master.key only when no PostgreSQL URL and no
# SECMAIL_MASTER_KEY are given (a single-container setup); a volume keeps them across restarts.
# /tmp must stay writable too (Python's temporary files): with a read-only root filesystem mount
# a tmpfs there (`docker run --read-only --tmpfs /tmp ...`).
VOLUME ["/var/lib/secmail"]

USER 10001:10001
WORKDIR /var/lib/secmail

# 50051: the API (TLS, client certificates required). 50052: grpc.health.v1 only, in plaintext,
# because neither the kubelet's gRPC probe nor this HEALTHCHECK can present a client certificate
# (KEP-2727: "the kubelet probe will not allow use of client certificates").
EXPOSE 50051 50052

# The gRPC Health Checking Protocol (grpc.health.v1.Health/Check, service "") through the venv's
# Python: no grpc_health_probe binary to download. Any error (refused, timeout, NOT_SERVING)
# exits non-zero. SECMAIL_HEALTH_CHECK_ADDRESS exists so tests can point it at a test server.
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["/opt/secmail/bin/python", "-c", "import os,sys,grpc;from grpc_health.v1 import health_pb2 as h,health_pb2_grpc as g;c=grpc.insecure_channel(os.environ.get('SECMAIL_HEALTH_CHECK_ADDRESS','127.0.0.1:50052'));r=g.HealthStub(c).Check(h.HealthCheckRequest(service=''),timeout=3);sys.exit(0 if r.status==h.HealthCheckResponse.SERVING else 1)"]

ENTRYPOINT ["/opt/secmail/bin/secmail"]
# A non-loopback --address needs --tls-cert/--tls-key (and --tls-client-ca for client
# certificates) and --callers; mount them (see deploy/README.md and deploy/kubernetes).
CMD ["serve", \
     "--address", "[::]:50051", \
     "--health-address", "[::]:50052", \
     "--data-dir", "/var/lib/secmail", \
     "--tls-cert", "/etc/secmail/tls/tls.crt", \
     "--tls-key", "/etc/secmail/tls/tls.key", \
     "--tls-client-ca", "/etc/secmail/tls/ca.crt"]
