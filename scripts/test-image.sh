#!/usr/bin/env bash
# Builds the image with rootful podman the way ../shared/notes/containers.md describes (no
# registry here: the base image is made locally) and checks it against real services: the
# machine's PostgreSQL and a VictoriaMetrics this script starts on a free port.
#
#   npm run test:image            # or: bash scripts/test-image.sh
#
# Environment: IMAGE (tag to build, default localhost/metrics-sidecar:test), TEST_DATABASE_URL
# (superuser URL, default postgresql://postgres@127.0.0.1:5432/postgres), DEBIAN_MIRROR
# (default: the machine's bookworm mirror from apt), CA_BUNDLE (default: $NODE_EXTRA_CA_CERTS or
# /etc/ssl/certs/ca-certificates.crt), REBUILD_BASE=1 to rebuild the local base images.
set -euo pipefail
cd "$(dirname "$0")/.."

IMAGE=${IMAGE:-localhost/metrics-sidecar:test}
OS_BASE=localhost/bookworm-base
NODE_BASE=localhost/node20-base
PG_ADMIN_URL=${TEST_DATABASE_URL:-postgresql://postgres@127.0.0.1:5432/postgres}
CA_BUNDLE=${CA_BUNDLE:-${NODE_EXTRA_CA_CERTS:-/etc/ssl/certs/ca-certificates.crt}}
GRACE=15 # podman stop -t; the service itself promises exit within 10 s
RUN_FLAGS=(--runtime runc --ulimit nofile=20000:20000 --ulimit nproc=32768:32768 --network host)

passed=0 failed=0
pass () { passed=$((passed + 1)); echo "ok $((passed + failed)) - $*"; }
fail () { failed=$((failed + 1)); echo "not ok $((passed + failed)) - $*"; }
info () { echo "# $*"; }
now () { date +%s.%N; }
since () { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }
T0=$(now)

# ---- cleanup -------------------------------------------------------------------------------
work=$(mktemp -d /tmp/test-image.XXXXXX)
container="" vm_pid="" database=""
cleanup () {
  local rc=$?
  set +e
  [[ -n $container ]] && podman rm -f -t 0 "$container" >/dev/null 2>&1
  [[ -n $vm_pid ]] && kill "$vm_pid" 2>/dev/null && wait "$vm_pid" 2>/dev/null
  [[ -n $database ]] && psql "$PG_ADMIN_URL" -qAtc "DROP DATABASE IF EXISTS $database WITH (FORCE)" >/dev/null 2>&1
  rm -rf "$work"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---- tools ---------------------------------------------------------------------------------
missing=()
for p in podman buildah runc debootstrap; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if ((${#missing[@]})); then
  info "installing: ${missing[*]}"
  apt-get update -q
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}"
fi
for tool in psql victoria-metrics node curl; do
  command -v "$tool" >/dev/null || { echo "test-image: $tool is required (see .ci/run)" >&2; exit 1; }
done

free_port () {
  node -e "const s = require('net').createServer().listen(0, '127.0.0.1', () => { console.log(s.address().port); s.close() })"
}

# ---- local base images (notes/containers.md: no registry is reachable) -----------------------
T_BASE=$(now)
if [[ ${REBUILD_BASE:-} == 1 ]]; then
  podman rmi -f "$IMAGE" "$NODE_BASE" "$OS_BASE" >/dev/null 2>&1 || true
  if podman image exists "$OS_BASE" || podman image exists "$NODE_BASE"; then
    echo "test-image: could not remove the base images for REBUILD_BASE=1" >&2; exit 1
  fi
fi
if ! podman image exists "$OS_BASE"; then
  mirror=${DEBIAN_MIRROR:-$(apt-get indextargets --format '$(SITE)' 'Codename: bookworm' 'Identifier: Packages' | head -n 1)}
  mirror=${mirror:-http://deb.debian.org/debian}
  info "debootstrap bookworm (minbase) from $mirror"
  debootstrap --variant=minbase bookworm "$work/rootfs" "$mirror" >"$work/debootstrap.log" 2>&1 \
    || { tail -n 20 "$work/debootstrap.log" >&2; exit 1; }
  rm -rf "$work"/rootfs/var/cache/apt/archives/*.deb "$work"/rootfs/var/lib/apt/lists/* \
    "$work"/rootfs/usr/share/doc/* "$work"/rootfs/usr/share/man/* "$work"/rootfs/usr/share/info/*
  tar -C "$work/rootfs" -c . | podman import --change 'CMD ["/bin/bash"]' - "$OS_BASE" >/dev/null
  rm -rf "$work/rootfs"
fi
if ! podman image exists "$NODE_BASE"; then
  info "$NODE_BASE from this machine's node $(node --version) and npm"
  mkdir -p "$work/node-base"
  cp /usr/bin/node "$work/node-base/node"
  cp -a /usr/lib/node_modules/npm "$work/node-base/npm"
  # The official node images' layout: /usr/local/bin/node, npm under /usr/local/lib/node_modules.
  cat >"$work/node-base/Containerfile" <<EOF
FROM $OS_BASE
COPY node /usr/local/bin/node
COPY npm /usr/local/lib/node_modules/npm
RUN ln -s ../lib/node_modules/npm/bin/npm-cli.js /usr/local/bin/npm \\
 && ln -s ../lib/node_modules/npm/bin/npx-cli.js /usr/local/bin/npx \\
 && node --version && npm --version
CMD ["node"]
EOF
  podman build --isolation chroot --format docker --network host -q -t "$NODE_BASE" "$work/node-base" >/dev/null
  rm -rf "$work/node-base"
fi
info "base images ready in $(since "$T_BASE") s"

# ---- build -----------------------------------------------------------------------------------
T_BUILD=$(now)
ca_args=()
if [[ -f $CA_BUNDLE ]]; then
  ca_args=(-v "$CA_BUNDLE:/run/host-ca.crt:ro" --build-arg NODE_EXTRA_CA_CERTS=/run/host-ca.crt)
fi
if podman build --isolation chroot --format docker --network host \
  --build-arg BASE_IMAGE="$NODE_BASE" "${ca_args[@]}" -t "$IMAGE" . >"$work/build.log" 2>&1; then
  pass "image builds ($(since "$T_BUILD") s)"
else
  tail -n 40 "$work/build.log" >&2
  fail "image builds"
  echo "image test: $passed passed, $failed failed"
  exit 1
fi
size=$(podman image inspect --format '{{.Size}}' "$IMAGE")
base_size=$(podman image inspect --format '{{.Size}}' "$NODE_BASE")
info "image size: $((size / 1000000)) MB ($(((size - base_size) / 1000000)) MB over the $((base_size / 1000000)) MB base $NODE_BASE)"

# ---- static checks on the image --------------------------------------------------------------
image_env=$(podman image inspect --format '{{json .Config.Env}}' "$IMAGE")
history=$(podman history --no-trunc --format '{{.CreatedBy}}' "$IMAGE")
if [[ $image_env != *NODE_EXTRA_CA_CERTS* && $history != *NODE_EXTRA_CA_CERTS* && $history != *host-ca* ]]; then
  pass "no NODE_EXTRA_CA_CERTS in the final image's env or history"
else
  fail "the build CA leaked into the final image: $image_env"
fi
[[ $(podman image inspect --format '{{json .Config.Healthcheck}}' "$IMAGE") == *'/health'* ]] \
  && pass "HEALTHCHECK on /health is in the image (docker format)" \
  || fail "no HEALTHCHECK in the image"
user=$(podman image inspect --format '{{.Config.User}}' "$IMAGE")
[[ $user =~ ^[1-9][0-9]*(:[0-9]+)?$ ]] && pass "image USER is a numeric non-root uid ($user)" || fail "image USER is '$user'"
# Runs with node only, so it would work on a shell-less base too.
contents=$(podman run --rm --no-healthcheck "${RUN_FLAGS[@]}" --entrypoint node "$IMAGE" -e '
  const fs = require("fs")
  const bad = []
  for (const p of ["/run/host-ca.crt", "src", "node_modules/typescript", "node_modules/tap", "node_modules/@types"]) if (fs.existsSync(p)) bad.push(p)
  const walk = d => fs.readdirSync(d, { withFileTypes: true }).flatMap(e => e.isDirectory() ? walk(d + "/" + e.name) : [d + "/" + e.name])
  bad.push(...walk("dist").filter(f => !/\.(js|json)$/.test(f)))
  console.log(bad.join(" ") || "clean")' 2>>"$work/podman.log") || true
if [[ $contents == clean ]]; then pass "compiled JS and production dependencies only"; else fail "unexpected in /app: $contents"; tail -n 5 "$work/podman.log"; fi

# ---- real services -----------------------------------------------------------------------------
database=sidecar_image_$(od -An -N6 -tx1 /dev/urandom | tr -d ' \n')
psql "$PG_ADMIN_URL" -qAtc "CREATE DATABASE $database" >/dev/null
db_url=$(node -e 'const u = new URL(process.argv[1]); u.pathname = "/" + process.argv[2]; console.log(u.href)' "$PG_ADMIN_URL" "$database")
psql "$db_url" -q -v ON_ERROR_STOP=1 -f test/fixtures/django-schema.sql >/dev/null
psql "$db_url" -q -v ON_ERROR_STOP=1 >/dev/null <<'SQL'
INSERT INTO auth_user (password, is_superuser, username, first_name, last_name, email, is_staff, is_active, date_joined)
  VALUES ('!', false, 'owner', '', '', '', false, true, now());
INSERT INTO derps_derp (name, species, photo, created_at, owner_id)
  SELECT 'derp ' || g, s, 'derps/' || g || '.jpg', now(), (SELECT id FROM auth_user WHERE username = 'owner')
  FROM (VALUES ('dog', 3), ('cat', 2), ('axolotl', 1)) AS v(s, n), generate_series(1, v.n) AS g;
SQL

vm_port=$(free_port)
vm_url=http://127.0.0.1:$vm_port
mkdir -p "$work/vm"
victoria-metrics -storageDataPath="$work/vm" -httpListenAddr="127.0.0.1:$vm_port" -retentionPeriod=100y -loggerLevel=ERROR >"$work/vm.log" 2>&1 &
vm_pid=$!
for _ in $(seq 100); do curl -fs "$vm_url/health" >/dev/null && break; sleep 0.1; done

# ---- run ---------------------------------------------------------------------------------------
T_RUN=$(now)
port=$(free_port)
container=metrics-sidecar-test-$$
# Mirrors deploy/kubernetes: read-only root filesystem, no capabilities, no privilege escalation.
if ! podman run -d --name "$container" "${RUN_FLAGS[@]}" \
  --read-only --cap-drop=ALL --security-opt no-new-privileges \
  -e PORT="$port" -e DATABASE_URL="$db_url" -e POLL_INTERVAL=1s \
  -e INFLUX_URL="$vm_url" -e INFLUX_TOKEN=not-checked-by-victoriametrics -e INFLUX_ORG=test -e INFLUX_BUCKET=test \
  "$IMAGE" >/dev/null 2>>"$work/podman.log"; then
  tail -n 5 "$work/podman.log" >&2
  fail "podman run"
  echo "image test: $passed passed, $failed failed"
  exit 1
fi

ready=""
for _ in $(seq 200); do
  if [[ $(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/ready") == 200 ]]; then ready=1; break; fi
  [[ $(podman inspect --format '{{.State.Running}}' "$container") == true ]] || break
  sleep 0.1
done
[[ -n $ready ]] && pass "/ready answers 200 ($(since "$T_RUN") s after podman run)" \
  || { fail "/ready never answered 200"; podman logs "$container" 2>&1 | tail -n 20; }

pid=$(podman inspect --format '{{.State.Pid}}' "$container")
uid=$(awk '/^Uid:/ { print $2 }' "/proc/$pid/status" 2>/dev/null || echo unknown)
[[ $uid =~ ^[0-9]+$ && $uid != 0 ]] && pass "the container process runs as uid $uid" || fail "container process uid is $uid"
cmdline=$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null || true)
[[ $cmdline == "node --max-semi-space-size=2 dist/src/server.js "* ]] && pass "PID 1 is node itself ($cmdline)" || fail "PID 1 is '$cmdline'"

derps=""
for _ in $(seq 15); do
  curl -fs "$vm_url/internal/force_flush" >/dev/null || true
  sleep 1.1 # a series VictoriaMetrics has just created shows in exports about a second later
  derps=$(curl -fs "$vm_url/api/v1/export" --data-urlencode 'match[]={__name__="derps_count"}' \
    | node -e 'let s = ""; process.stdin.on("data", d => s += d).on("end", () => {
        const latest = {}
        for (const l of s.split("\n").filter(Boolean)) { const j = JSON.parse(l); latest[j.metric.species] = j.values.at(-1) }
        console.log(Object.keys(latest).sort().map(k => k + "=" + latest[k]).join(","))
      })') || true
  [[ $derps == axolotl=1,cat=2,dog=3 ]] && break
done
[[ $derps == axolotl=1,cat=2,dog=3 ]] && pass "derps points arrive in VictoriaMetrics ($derps)" || fail "derps_count in VictoriaMetrics: '$derps'"

if podman healthcheck run "$container" >/dev/null 2>&1; then pass "podman healthcheck run passes"; else fail "podman healthcheck run fails"; fi

# --once, both ways README "Run it" gives: as the image's arguments, and exec'd in a running pod.
once=$(podman run --rm --no-healthcheck "${RUN_FLAGS[@]}" -e DATABASE_URL="$db_url" "$IMAGE" --once 2>>"$work/podman.log") \
  && [[ $once == *'derps,species=dog count=3i '* ]] \
  && pass "podman run IMAGE --once prints the poll as line protocol, exit 0" \
  || fail "podman run IMAGE --once: '${once:0:200}'"
once=$(podman exec "$container" node dist/src/server.js --once 2>>"$work/podman.log") \
  && [[ $once == *'derps,species=dog count=3i '* ]] \
  && pass "--once exec'd beside the running service, exit 0" \
  || fail "podman exec … --once: '${once:0:200}'"

# The exec probes of deploy/kubernetes, run inside the container as the kubelet would (with the
# manifest's PORT replaced by the free port this container listens on).
if [[ -f deploy/kubernetes/deployment.yaml && -d node_modules/yaml ]]; then
  probes=0
  while IFS=$'\t' read -r probe command; do
    [[ -z $probe ]] && continue
    probes=$((probes + 1))
    start=$(now)
    if podman exec "$container" node -e "$command" >/dev/null 2>&1; then
      pass "Kubernetes $probe (exec) passes in the container ($(since "$start") s)"
    else
      fail "Kubernetes $probe (exec) fails in the container"
    fi
  done < <(node -e '
    const { parseAllDocuments } = require("yaml")
    for (const d of parseAllDocuments(require("fs").readFileSync("deploy/kubernetes/deployment.yaml", "utf8"))) {
      const c = d.toJS()?.spec?.template?.spec?.containers?.find(c => /metrics-sidecar/.test(c.image))
      const port = c?.env?.find(e => e.name === "PORT")?.value ?? "8186"
      for (const p of ["readinessProbe", "livenessProbe", "startupProbe"]) {
        const cmd = c?.[p]?.exec?.command
        if (cmd && cmd[0] === "node" && cmd[1] === "-e") {
          console.log(p + "\t" + cmd[2].replace(/\n/g, " ").replaceAll(":" + port + "/", ":" + process.argv[1] + "/"))
        }
      }
    }' "$port")
  ((probes > 0)) || info "deploy/kubernetes/deployment.yaml has no node -e exec probes to run"
else
  info "skipped the Kubernetes exec probes (needs deploy/kubernetes and node_modules/yaml: npm ci)"
fi

# Memory: resident set of the running service after some 1 s poll cycles.
rss_kb=$(awk '/^VmRSS:/ { print $2 }' "/proc/$pid/status")
hwm_kb=$(awk '/^VmHWM:/ { print $2 }' "/proc/$pid/status")
info "sidecar RSS after $(since "$T_RUN") s of 1 s polling: $((rss_kb / 1024)) MiB (peak $((hwm_kb / 1024)) MiB)"
probe_cost=$(podman exec "$container" node -e "fetch('http://127.0.0.1:' + process.env.PORT + '/ready').then(() => { const u = process.resourceUsage(); console.log(Math.round(u.maxRSS / 1024) + ' MiB peak RSS, ' + Math.round((u.userCPUTime + u.systemCPUTime) / 1000) + ' ms CPU') })" 2>/dev/null || echo '?')
info "one exec probe (node -e fetch) costs $probe_cost"

# ---- SIGTERM -----------------------------------------------------------------------------------
start=$(now)
podman stop -t "$GRACE" "$container" >/dev/null 2>>"$work/podman.log"
took=$(since "$start")
code=$(podman inspect --format '{{.State.ExitCode}}' "$container")
if [[ $code == 0 ]] && awk -v t="$took" -v g=10 'BEGIN { exit !(t < g) }'; then
  pass "podman stop: exit code 0 after $took s (within the 10 s grace, stop timeout $GRACE s)"
else
  fail "podman stop: exit code $code after $took s"
  podman logs "$container" 2>&1 | tail -n 20
fi
logs=$(podman logs "$container" 2>&1)
[[ $logs == *'"signal":"SIGTERM"'* ]] && pass "the service logged its SIGTERM shutdown" || fail "no SIGTERM shutdown in the logs"

info "run and checks: $(since "$T_RUN") s; total: $(since "$T0") s"
echo "image test: $passed passed, $failed failed"
((failed == 0))
