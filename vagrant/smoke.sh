#!/usr/bin/env bash
# Checks weft on the kind cluster that cluster-up.sh built, with the example app and its policies:
#   1. mutual TLS: frontend (node a) -> api (node b) answers, api sees frontend's own IP, and
#      `weft observe` shows the connection FORWARDED on both nodes with both SPIFFE identities and
#      security "mutual_tls";
#   2. a policy denial: frontend -> db is refused (db answers only api), and `weft observe` shows it
#      DROPPED, POLICY_DENIED, with frontend's identity;
#   3. STRICT mTLS: legacy/client (not in the mesh) -> api is refused, DROPPED in `weft observe`.
# Flows are read from the relay, as an operator reads them: `weft observe` inside the relay's pod.
# Exit 0 when every check passes; otherwise the first failure is printed and the exit code is 1.
#
#   sudo vagrant/smoke.sh
set -euo pipefail

WEFT_NAMESPACE=weft-system
RELAY="${RELAY:-deployment/weft-relay}"
TRUST_DOMAIN="${TRUST_DOMAIN:-cluster.local}"
# How long a pod may take to be meshed, and a flow to reach the relay.
DEADLINE_SECONDS="${DEADLINE_SECONDS:-90}"

say() { printf '[smoke] %s\n' "$*" >&2; }
fail() { printf '[smoke] FAIL: %s\n' "$*" >&2; exit 1; }

command -v kubectl >/dev/null || fail "kubectl is missing: run vagrant/provision.sh first"
command -v jq >/dev/null || fail "jq is missing: run vagrant/provision.sh first"

pod_of() { # NAMESPACE APP -> the pod's name
  kubectl -n "$1" get pods -l "app=$2" --field-selector=status.phase=Running -o jsonpath='{.items[0].metadata.name}'
}
field_of() { # NAMESPACE POD JSONPATH
  kubectl -n "$1" get pod "$2" -o jsonpath="$3"
}
# An HTTP GET from inside a pod (curl is in the example's image); prints the body, fails on refusal.
get_from() { # NAMESPACE POD URL
  kubectl -n "$1" exec "$2" -- curl --silent --show-error --fail --max-time 5 "$3"
}
# `weft observe` at the relay, JSON lines, since the smoke test started.
observe() {
  kubectl -n "$WEFT_NAMESPACE" exec "$RELAY" -- weft observe --since "$started" -o json "$@"
}
# Polls `observe ARGS` until the jq filter selects a flow; prints that flow's JSON.
await_flow() { # WHAT JQ-FILTER OBSERVE-ARGS...
  local what="$1" filter="$2" found=""
  shift 2
  local end=$((SECONDS + DEADLINE_SECONDS))
  while ((SECONDS < end)); do
    found="$(observe "$@" 2>/dev/null | jq -c "select($filter)" | tail -n 1)" || found=""
    [[ -n "$found" ]] && break
    sleep 1
  done
  [[ -n "$found" ]] || fail "no flow in weft observe for: $what (weft observe $*)"
  printf '%s\n' "$found"
}

started="$(date -u +%Y-%m-%dT%H:%M:%SZ)"
frontend="$(pod_of shop frontend)"
api="$(pod_of shop api)"
db="$(pod_of shop db)"
client="$(pod_of legacy client)"
[[ -n "$frontend" && -n "$api" && -n "$db" && -n "$client" ]] || fail "the example app is not running (kubectl apply -k examples/k8s/)"
frontend_node="$(field_of shop "$frontend" '{.spec.nodeName}')"
api_node="$(field_of shop "$api" '{.spec.nodeName}')"
frontend_ip="$(field_of shop "$frontend" '{.status.podIP}')"
say "frontend $frontend on $frontend_node ($frontend_ip); api $api on $api_node; db $db; legacy client $client"
# Mutual TLS is what crosses nodes; between pods of one node weft hands the connection over locally.
[[ "$frontend_node" != "$api_node" ]] || fail "frontend and api run on the same node ($api_node): nothing would cross nodes in mTLS"

# --- 1. mutual TLS between two enrolled pods -------------------------------------------------------
say "1. frontend -> api.shop:80 (allowed: api-from-frontend)"
answer=""
end=$((SECONDS + DEADLINE_SECONDS))
# The first attempts may come before the pods' certificates: retry until the deadline.
until answer="$(get_from shop "$frontend" http://api.shop/ 2>/dev/null)"; do
  ((SECONDS < end)) || fail "frontend could not reach api.shop within ${DEADLINE_SECONDS}s: $(get_from shop "$frontend" http://api.shop/ 2>&1 || true)"
  sleep 1
done
[[ "$answer" == "$api" ]] || fail "api.shop answered '$answer', expected the api pod's name '$api'"
say "   answered by $answer"
# The app sees the caller's own address: serve-hostname logs it.
api_log="$(kubectl -n shop logs "$api")"
grep -qF "HTTP request from ${frontend_ip}:" <<<"$api_log" \
  || fail "api's log does not show a request from frontend's IP $frontend_ip (the source address was not preserved)"
say "   api saw the request from $frontend_ip"

want_src="${TRUST_DOMAIN}/ns/shop/sa/frontend"
want_dst="${TRUST_DOMAIN}/ns/shop/sa/api"
identities=".flow.extensions.source_principal == \"$want_src\" and .flow.extensions.destination_principal == \"$want_dst\""
for direction in EGRESS INGRESS; do
  flow="$(await_flow "frontend -> api FORWARDED ($direction)" \
    ".flow.verdict == \"FORWARDED\" and .flow.traffic_direction == \"$direction\" and $identities" \
    --from-pod "shop/$frontend" --to-pod "shop/$api" --verdict FORWARDED)"
  security="$(jq -r '.flow.extensions.security // ""' <<<"$flow")"
  node="$(jq -r '.node_name // .flow.node_name // ""' <<<"$flow")"
  [[ "$security" == mutual_tls ]] || fail "frontend -> api ($direction) was carried with security '$security', expected mutual_tls: $flow"
  say "   weft observe: $direction on $node FORWARDED spiffe://$want_src -> spiffe://$want_dst ($security)"
done

# --- 2. a connection the policy denies -------------------------------------------------------------
say "2. frontend -> db.shop:5432 (denied: db answers only api)"
if out="$(get_from shop "$frontend" http://db.shop:5432/ 2>&1)"; then
  fail "frontend reached db, which only api may reach: '$out'"
fi
flow="$(await_flow "frontend -> db DROPPED" \
  ".flow.verdict == \"DROPPED\" and .flow.extensions.source_principal == \"$want_src\"" \
  --from-pod "shop/$frontend" --to-pod "shop/$db" --verdict DROPPED)"
reason="$(jq -r '.flow.drop_reason_desc // ""' <<<"$flow")"
[[ "$reason" == POLICY_DENIED ]] || fail "frontend -> db was dropped for '$reason', expected POLICY_DENIED: $flow"
say "   weft observe: DROPPED ($reason) from spiffe://$want_src"

# --- 3. plaintext from outside the mesh under STRICT mTLS ------------------------------------------
say "3. legacy/client -> api.shop:80 (refused: STRICT PeerAuthentication in shop)"
if out="$(get_from legacy "$client" http://api.shop/ 2>&1)"; then
  fail "legacy/client reached api in plaintext under STRICT mTLS: '$out'"
fi
flow="$(await_flow "legacy/client -> api DROPPED" '.flow.verdict == "DROPPED"' \
  --from-pod "legacy/$client" --to-pod "shop/$api" --verdict DROPPED)"
reason="$(jq -r '.flow.drop_reason_desc // ""' <<<"$flow")"
[[ "$reason" == AUTH_REQUIRED ]] || fail "legacy/client -> api was dropped for '$reason', expected AUTH_REQUIRED: $flow"
say "   weft observe: DROPPED ($reason)"

say "PASS: mutual TLS with SPIFFE identities, a policy denial and STRICT mTLS, all seen in weft observe"
