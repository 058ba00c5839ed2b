# weft's image: one image for its three programs on Kubernetes (daemonset/): `weft controller`,
# `weft agent` (started by weft-node, the DaemonSet's entry) and `weft relay`.
#
#   npm run image                         builds it here with buildah (scripts/image.mjs), no Docker engine
#   docker build -t weft:0.1.0 .           elsewhere; the tag is the one daemonset/ names
#
# The build stage compiles the BPF objects (CO-RE: built against this machine's BTF, loaded on any
# kernel with BTF), weft-cni (static), the native addon against Debian's Node and libbpf, and the
# TypeScript. The runtime stage is Debian slim with Node, libbpf and nothing to build with.
# BASE is Debian 13 (trixie): its Node is 20.19, what weft needs; `npm run image` passes a local
# copy of it when no registry is reachable.
ARG BASE=debian:trixie-slim

FROM ${BASE} AS build
ENV DEBIAN_FRONTEND=noninteractive
RUN apt-get update \
 && apt-get install -y --no-install-recommends \
      ca-certificates nodejs npm libnode-dev \
      clang llvm libbpf-dev libelf-dev zlib1g-dev pkg-config bpftool \
      make gcc g++ libc6-dev python3 \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY package.json package-lock.json ./
# NPM_CAFILE: a CA bundle for a registry reached through a TLS-inspecting proxy; `npm run image` mounts
# the host's for this step only, so it never lands in a layer.
ARG NPM_CAFILE=
RUN if [ -n "$NPM_CAFILE" ]; then export npm_config_cafile="$NPM_CAFILE"; fi \
 && npm ci --no-audit --no-fund --ignore-scripts
COPY tsconfig.json ./
COPY bpf bpf
COPY cni cni
COPY native native
COPY proto proto
COPY agent agent
COPY daemonset/image daemonset/image
# vmlinux.h comes from the build machine's kernel BTF; CO-RE relocates the objects at load time.
RUN make -s -C bpf clean && make -s -C bpf \
 && make -s -C cni clean && make -s -C cni \
 && npx node-gyp rebuild --directory native --nodedir=/usr \
 && npx tsc -p daemonset/image/tsconfig.json \
 && npm prune --omit=dev --no-audit --no-fund \
 && mkdir -p /out/opt/weft/bpf/build /out/opt/weft/native/build/Release /out/opt/weft/cni/build /out/opt/weft/daemonset \
 && cp -r package.json node_modules dist proto /out/opt/weft/ \
 && cp bpf/build/*.bpf.o /out/opt/weft/bpf/build/ \
 && cp native/build/Release/weft_native.node /out/opt/weft/native/build/Release/ \
 && cp cni/build/weft-cni /out/opt/weft/cni/build/ \
 && cp -r daemonset/image /out/opt/weft/daemonset/ \
 && rm -f /out/opt/weft/daemonset/image/tsconfig.json

FROM ${BASE}
ENV DEBIAN_FRONTEND=noninteractive
# libbpf1, libelf and zlib for the addon; mount (util-linux) for weft-node's /proc/sys remount.
RUN apt-get update \
 && apt-get install -y --no-install-recommends nodejs libbpf1 libelf1t64 zlib1g mount ca-certificates \
 && rm -rf /var/lib/apt/lists/* /usr/share/doc/* /usr/share/man/* /var/cache/debconf/*-old
COPY --from=build /out/ /
RUN ln -s /opt/weft/dist/agent/cli/main.js /usr/local/bin/weft \
 && ln -s /opt/weft/daemonset/image/weft-node.mjs /usr/local/bin/weft-node \
 && chmod 0755 /opt/weft/dist/agent/cli/main.js /opt/weft/daemonset/image/weft-node.mjs /opt/weft/daemonset/image/ca-bootstrap.mjs
ENV NODE_ENV=production
WORKDIR /opt/weft
ENTRYPOINT ["weft"]
CMD ["--help"]
