# syntax=docker/dockerfile:1
#
# strangler, neworders and legacyorders as static binaries on an empty
# image: no shell, no libc, no package manager, nothing to patch but the
# binaries themselves. strangler needs no CA certificates (it calls its
# upstreams and Prometheus over plain HTTP inside the cluster); add a stage
# that copies /etc/ssl/certs/ca-certificates.crt if yours are HTTPS.
#
#   docker build --build-arg VERSION=$(git describe --tags --always) -t strangler .
#   docker run --rm strangler version
#
# Without Docker, `make image` builds the same image with buildah, pulling
# nothing (deploy/image.sh).

ARG GO_VERSION=1.26.8

FROM golang:${GO_VERSION}-bookworm AS build
WORKDIR /src
# The module download is its own layer: it changes only with go.sum.
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=dev
# CGO_ENABLED=0: static binaries for the scratch stage. -trimpath keeps the
# builder's paths out of them, -s -w the symbol tables. .git is not in the
# context (.dockerignore), hence -buildvcs=false; the version comes from
# the build argument.
RUN CGO_ENABLED=0 go build -buildvcs=false -trimpath \
      -ldflags "-s -w -X main.version=${VERSION}" \
      -o /out/ ./cmd/strangler ./cmd/neworders ./cmd/legacyorders

FROM scratch
ARG VERSION=dev
LABEL org.opencontainers.image.title="strangler" \
      org.opencontainers.image.description="A strangler-fig reverse proxy for migrating a legacy backend one endpoint at a time" \
      org.opencontainers.image.source="https://github.com/strangler-proxy/strangler" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="${VERSION}"
COPY --from=build /out/strangler /out/neworders /out/legacyorders /
# 65532 is the conventional "nonroot" user of distroless images; no
# /etc/passwd is needed for a numeric user.
USER 65532:65532
# 8080: the proxy (listen); 9090: /metrics, /healthz, /readyz, /admin
# (admin.listen). Both default to loopback: the config must say 0.0.0.0.
EXPOSE 8080 9090
ENTRYPOINT ["/strangler"]
CMD ["serve", "--config", "/etc/strangler/strangler.yaml"]
