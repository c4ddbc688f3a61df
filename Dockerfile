# metrics-sidecar image: compiled JavaScript and production dependencies only, run by node as
# PID 1 under a numeric non-root uid.
#
#   docker build -t metrics-sidecar .
#   docker build --build-arg BASE_IMAGE=registry.internal/node:20-bookworm-slim -t metrics-sidecar .
#
# Behind a TLS-intercepting proxy, mount its CA bundle into the build and name it; it is used by
# `npm ci` in the build stage only and never reaches the final image (neither file nor variable):
#
#   podman build -v /etc/ssl/certs/ca-certificates.crt:/run/host-ca.crt:ro \
#     --build-arg NODE_EXTRA_CA_CERTS=/run/host-ca.crt …
#
# How this repository builds and tests it without a registry: scripts/test-image.sh.
ARG BASE_IMAGE=node:20-bookworm-slim

# ---- build: all dependencies, TypeScript -> dist/, then drop dev dependencies ------------------
FROM ${BASE_IMAGE} AS build
ARG NODE_EXTRA_CA_CERTS
WORKDIR /build
COPY package.json package-lock.json ./
RUN npm ci --no-audit --no-fund --ignore-scripts
COPY tsconfig.json ./
COPY src src
COPY plugins plugins
COPY measurements measurements
COPY routes routes
# dist/package.json is emitted by tsc (routes/health.ts reads the version from it). Source maps
# point at .ts files the image does not carry, so they go too. /build/data becomes the writable
# /data (SINK_FILE) owned by the runtime uid, without needing a shell in the final stage.
RUN npm run build \
 && npm prune --omit=dev --no-audit --no-fund --ignore-scripts \
 && find node_modules -depth -type d -empty -delete \
 && find dist -name '*.map' -delete \
 && mkdir -p data

# ---- runtime ---------------------------------------------------------------------------------
FROM ${BASE_IMAGE}
# HOST stays loopback: in a pod the app reaches the sidecar on 127.0.0.1 (shared network
# namespace). Any other HOST needs WRITE_TOKEN, and QUERY_TOKEN with INFLUX_URL (the service
# refuses to start without them), e.g.
# `-e HOST=0.0.0.0 -e WRITE_TOKEN=… -e QUERY_TOKEN=…` to publish the port with `docker run -p`;
# 0.0.0.0 still answers the HEALTHCHECK on 127.0.0.1. See README "Kubernetes" for why the
# probes there are exec probes rather than HTTP probes on the pod IP.
# MALLOC_ARENA_MAX and --max-semi-space-size (ENTRYPOINT) keep resident memory under load
# within SPEC §7's 150 MB: see README "Performance". npm start runs node the same way.
ENV NODE_ENV=production \
    MALLOC_ARENA_MAX=2 \
    HOST=127.0.0.1 \
    PORT=8186 \
    SINK_FILE=/data/metrics.lp
WORKDIR /app
COPY --from=build /build/package.json ./
COPY --from=build /build/node_modules node_modules
COPY --from=build /build/dist dist
COPY --from=build --chown=1000:1000 /build/data /data
# Numeric, so the base image needs no named user and Kubernetes' runAsNonRoot can verify it.
USER 1000:1000
EXPOSE 8186
# node is PID 1 (exec form, no shell): it receives SIGTERM itself, and the service's
# close-with-grace handler stops polling, flushes and exits 0 within 10 s.
STOPSIGNAL SIGTERM
# Docker-format images only (OCI drops HEALTHCHECK): build with --format docker under podman.
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
  CMD ["node", "-e", "fetch('http://127.0.0.1:' + (process.env.PORT || 8186) + '/health', { signal: AbortSignal.timeout(3000) }).then(r => process.exit(r.ok ? 0 : 1), () => process.exit(1))"]
# ENTRYPOINT, so arguments reach the service (`docker run IMAGE --once`, SPEC §8) and a base
# image's own entrypoint script never sits between the runtime and node.
ENTRYPOINT ["node", "--max-semi-space-size=2", "dist/src/server.js"]
CMD []
