# syntax=docker/dockerfile:1
# kube-pcap images. Two targets from one build:
#   docker build --target gateway -t ghcr.io/kube-pcap/gateway:0.1.0 .
#   docker build --target agent   -t ghcr.io/kube-pcap/agent:0.1.0 .
# Pin the base by digest in your registry mirror for fully reproducible builds.
ARG NODE_IMAGE=node:24.21.0-bookworm-slim

# --- build: compile TypeScript with the dev dependencies, from the lockfile only ---
FROM ${NODE_IMAGE} AS build
WORKDIR /src
COPY package.json package-lock.json ./
RUN npm ci --ignore-scripts --no-audit --no-fund
COPY tsconfig.json tsconfig.build.json ./
COPY src ./src
COPY routes ./routes
RUN npx tsc -p tsconfig.build.json

# --- production dependencies only: no compiler, no test tools ---
FROM ${NODE_IMAGE} AS prod-deps
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --omit=dev --ignore-scripts --no-audit --no-fund && npm cache clean --force

# --- the application, shared by both images ---
FROM ${NODE_IMAGE} AS app
WORKDIR /app
COPY --from=prod-deps /app/node_modules ./node_modules
COPY --from=build /src/dist/src ./dist/src
COPY --from=build /src/dist/routes ./dist/routes
COPY package.json openapi.yaml ./

# --- gateway: plain Node, no capture tools, an unprivileged user ---
FROM ${NODE_IMAGE} AS gateway
ENV NODE_ENV=production
WORKDIR /app
COPY --from=app /app /app
USER 65532:65532
EXPOSE 9443
# Node flags: see src/node-flags.ts (a test keeps the two in step).
ENTRYPOINT ["node", "--max-semi-space-size=1", "/app/dist/src/cli.js"]
CMD ["gateway"]

# --- agent: tcpdump (it writes the capture file itself; the agent rotates it), coreutils'
# stdbuf (tcpdump's 256 KiB output buffer; Essential in Debian, named anyway) and iproute2 for
# finding pods' interfaces on the node ---
FROM ${NODE_IMAGE} AS agent
ENV NODE_ENV=production
RUN apt-get update \
 && apt-get install -y --no-install-recommends tcpdump iproute2 coreutils \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY --from=app /app /app
# Runs as root with every capability dropped but NET_RAW and SETGID (see deploy/agent).
USER 0:0
EXPOSE 9444
ENTRYPOINT ["node", "--max-semi-space-size=1", "/app/dist/src/cli.js"]
CMD ["agent"]
