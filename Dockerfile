# First version (the image is finished in the operations issue): build, then run the compiled
# service as a non-root user. Behind a TLS-intercepting proxy, pass its CA bundle to the build
# stage with --build-arg NODE_EXTRA_CA_CERTS=<path inside the build>; it never reaches the image.
ARG BASE_IMAGE=node:20-bookworm-slim

FROM ${BASE_IMAGE} AS build
ARG NODE_EXTRA_CA_CERTS
WORKDIR /build
COPY package.json package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY tsconfig.json ./
COPY src src
COPY plugins plugins
COPY measurements measurements
COPY routes routes
RUN npm run build && npm prune --omit=dev

FROM ${BASE_IMAGE}
ENV NODE_ENV=production SINK_FILE=/data/metrics.lp
WORKDIR /app
COPY --from=build /build/node_modules node_modules
COPY --from=build /build/dist dist
COPY package.json ./
RUN mkdir -p /data && chown 1000:1000 /data
USER 1000:1000
EXPOSE 8186
HEALTHCHECK --interval=10s --timeout=3s CMD ["node", "-e", "fetch('http://127.0.0.1:' + (process.env.PORT || 8186) + '/health').then(r => process.exit(r.ok ? 0 : 1), () => process.exit(1))"]
CMD ["node", "dist/src/server.js"]
