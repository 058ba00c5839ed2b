# weft's image: one image for its three programs on Kubernetes (daemonset/): `weft controller`,
# `weft agent` (started by weft-node, the DaemonSet's entry) and `weft relay`.
#
#   npm run image                         builds it here with buildah (scripts/image.mjs), no Docker engine
#   docker build -t weft:0.1.0 .           elsewhere; the tag is the one daemonset/ names
#
# Stages:
#   bpf    the BPF objects, with Debian 12's clang 14: the toolchain weft's tests verify them with.
#          (Debian 13's clang 19 turns sk_lookup's reads of ctx->remote_ip6[] into pointer arithmetic
#          on ctx, which the verifier refuses: "dereference of modified ctx ptr".) CO-RE: built against
#          the build machine's BTF, relocated at load time on any kernel with BTF.
#   build  weft-cni (static), the native addon against Debian 13's Node and libbpf, and the
#          TypeScript; what runs needs no type declarations, source maps or READMEs of dependencies.
#   (last) Debian 13 slim with Node, libbpf and nothing to build with.
# BASE is Debian 13 (trixie): its Node is 20.19, what weft needs. `npm run image` passes local copies
# of both bases when no registry is reachable.
ARG BASE=debian:trixie-slim
ARG BPF_BASE=debian:bookworm-slim

FROM ${BPF_BASE} AS bpf
ENV DEBIAN_FRONTEND=noninteractive
RUN apt-get update \
 && apt-get install -y --no-install-recommends clang llvm libbpf-dev bpftool make \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY bpf bpf
RUN make -s -C bpf clean && make -s -C bpf

FROM ${BASE} AS build
ENV DEBIAN_FRONTEND=noninteractive
RUN apt-get update \
 && apt-get install -y --no-install-recommends \
      ca-certificates nodejs npm libnode-dev \
      libbpf-dev libelf-dev zlib1g-dev pkg-config \
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
COPY cni cni
COPY native native
COPY proto proto
COPY agent agent
COPY daemonset/image daemonset/image
RUN make -s -C cni clean && make -s -C cni \
 && npx node-gyp rebuild --directory native --nodedir=/usr \
 && npx tsc -p daemonset/image/tsconfig.json \
 && npm prune --omit=dev --no-audit --no-fund \
 && find node_modules -type f \( -name '*.map' -o -name '*.d.ts' -o -name '*.d.mts' -o -name '*.d.cts' -o -name '*.md' \) -delete \
 && rm -rf node_modules/@types \
 && mkdir -p /out/opt/weft/bpf/build /out/opt/weft/native/build/Release /out/opt/weft/cni/build /out/opt/weft/daemonset \
 && cp -r package.json node_modules dist proto /out/opt/weft/ \
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
COPY --from=bpf /src/bpf/build/*.bpf.o /opt/weft/bpf/build/
RUN ln -s /opt/weft/dist/agent/cli/main.js /usr/local/bin/weft \
 && ln -s /opt/weft/daemonset/image/weft-node.mjs /usr/local/bin/weft-node \
 && chmod 0755 /opt/weft/dist/agent/cli/main.js /opt/weft/daemonset/image/weft-node.mjs /opt/weft/daemonset/image/ca-bootstrap.mjs
ENV NODE_ENV=production
WORKDIR /opt/weft
ENTRYPOINT ["weft"]
CMD ["--help"]
