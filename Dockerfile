# syntax=docker/dockerfile:1
#
# Gatehouse: one static binary on distroless, running as a non-root user.
#   docker build --build-arg VERSION=$(git describe --tags --always) -t gatehouse .
#   docker run -p 1883:1883 -p 8080:8080 -v gatehouse-data:/data gatehouse

ARG GO_VERSION=1.26.8

FROM golang:${GO_VERSION}-bookworm AS build
WORKDIR /src
# Modules first: this layer is rebuilt only when go.mod or go.sum change.
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=dev
RUN CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X main.version=${VERSION}" -o /out/gatehouse . \
 && mkdir -p /rootfs/data \
 && chmod 0700 /rootfs/data

FROM gcr.io/distroless/static-debian12:nonroot
# /data comes from the build stage owned by nonroot (65532), so that a new
# named volume mounted there starts writable by the server.
COPY --from=build --chown=65532:65532 /rootfs/ /
COPY --from=build /out/gatehouse /gatehouse
ENV GATEHOUSE_DATA=/data
VOLUME /data
# 1883 MQTT; 8080 REST and MQTT over WebSocket at /mqtt.
EXPOSE 1883 8080 8883
USER 65532:65532
# healthcheck reads GATEHOUSE_HTTP like the server does: set the address with
# the environment variable rather than --http.
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 CMD ["/gatehouse", "healthcheck"]
ENTRYPOINT ["/gatehouse"]
