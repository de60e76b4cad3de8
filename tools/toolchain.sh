#!/usr/bin/env bash
# Builds the real tools the e2e tier runs (Pulumi engine + provider plugins,
# etcd / kube-apiserver / controller-manager / scheduler / kubectl, kwok,
# actionlint, traefik, k3d) from the Go module proxy with the machine's Go, and
# caches them under ~/.cache/classroom/toolchain so a warm run costs seconds.
# Progress goes to stderr; each build's log is in the cache's logs/ and a
# failure prints its last lines and names it.
#
#   tools/toolchain.sh [all|engine|cluster|lint|traefik|k3d|helm]  build what is missing
#       cluster: etcd kube-apiserver kube-controller-manager kube-scheduler kubectl kwok
#                kubelet kube-proxy (the real node of tools/node.py)
#       engine:  pulumi pulumi-language-python + kubernetes/tls/command plugins (installed)
#       lint: actionlint   traefik: traefik   k3d: k3d (the labs tier's real k3d)
#       helm: helm (benchmarks only, not in all)
#       all: every one the tests need (any failure fails)
#   tools/toolchain.sh env                                 print `export` lines for eval
#   tools/toolchain.sh dir                                 print the cache directory
#
# Why build from source: the machines only reach package registries, and the
# Pulumi CLI, its plugins and the Kubernetes server binaries are not shipped in
# any of them as binaries.  Each Go main module is downloaded, copied to a
# writable directory, its relative `replace` lines (`=> ../sdk`,
# `=> ./staging/src/k8s.io/api`) rewritten to the published module at the
# matching version, and built as the main module so its own pins apply.
set -euo pipefail

# ---- versions ---------------------------------------------------------------
# Each binary's stamp records the version it was built at, so changing one
# version rebuilds that binary only; Go's module and build caches
# (GOMODCACHE, GOCACHE, -trimpath) make a rebuild after a move mostly a link.
PULUMI_CLI_VERSION=3.274.1        # the engine; the proxy serves pkg/v3 at this version (not at 3.272.0)
PULUMI_LANGHOST_VERSION=3.259.0   # pulumi-language-python: vendored source (proxy refuses the module)
PULUMI_KUBERNETES_VERSION=4.32.0  # pulumi-kubernetes==4.32.0 in requirements.txt (vendored source)
PULUMI_TLS_VERSION=5.5.1          # pulumi-tls==5.5.1 (vendored source)
PULUMI_COMMAND_VERSION=1.2.1      # pulumi-command==1.2.1 (vendored source)
KUBERNETES_VERSION=1.34.4
ETCD_VERSION=3.6.16
KWOK_VERSION=0.8.0
ACTIONLINT_VERSION=1.7.12
TRAEFIK_VERSION=3.6.12           # 3.7.x needs modules the proxy here refuses
HELM_VERSION=3.22.0              # benchmarks only: the upstream chart's no-op upgrade, side by side
K3D_VERSION=5.8.3                # labd's k3d, driven for real by the labs tier (tests/labs/test_k3d_real.py)
K3D_K3S_VERSION=v1.31.5-k3s1     # k3d's default node image tag: the one labd's default template names

GO=${GO:-/usr/local/go/bin/go}
[[ -x $GO ]] || GO=$(command -v go || true)
JOBS=${TOOLCHAIN_JOBS:-2}

CACHE_ROOT=${CLASSROOM_CACHE:-$HOME/.cache/classroom}
TOOLCHAIN_DIR=$CACHE_ROOT/toolchain
BIN=$TOOLCHAIN_DIR/bin
SRC=$TOOLCHAIN_DIR/src
LOGS=$TOOLCHAIN_DIR/logs
STAMPS=$TOOLCHAIN_DIR/stamps
TIMES=$TOOLCHAIN_DIR/build-times.tsv
KWOK_STAGES=$TOOLCHAIN_DIR/share/kwok-stages.yaml
PULUMI_HOME_DIR=$TOOLCHAIN_DIR/pulumi-home
# Provider plugins are built here, off PATH: the engine then loads the copies
# installed in PULUMI_HOME at the pinned versions, not whatever is on PATH.
PLUGIN_BIN=$TOOLCHAIN_DIR/plugins

REFUSED=3   # exit status when the module proxy refuses a module (nothing to retry)

say() { printf '[toolchain] %s\n' "$*" >&2; }
die() { printf '[toolchain] ERROR: %s\n' "$*" >&2; exit 1; }

need_go() {
    [[ -n $GO && -x $GO ]] || die "no Go toolchain found (looked for /usr/local/go/bin/go and go on PATH); install Go >= 1.26.6 (the Pulumi engine modules require it)"
    local have
    have=$("$GO" env GOVERSION 2>/dev/null || true)
    # sort -V: the smaller of the two first; anything below 1.26.6 cannot build the engine's modules
    if [[ $(printf '%s\n%s\n' "${have#go}" 1.26.6 | sort -V | head -n1) != 1.26.6 ]]; then
        die "$GO is ${have:-of unknown version}; the engine's modules need Go >= 1.26.6 (set GO=/path/to/go)"
    fi
    export GOTOOLCHAIN=local      # never let go.mod's toolchain line download another Go
    export GOFLAGS="-trimpath -mod=mod -buildvcs=false"
    export CGO_ENABLED=0          # static binaries; no C toolchain needed
    export GOWORK=off             # k8s.io/kubernetes ships a go.work naming staging/, absent here
    mkdir -p "$BIN" "$SRC" "$LOGS" "$STAMPS" "$PLUGIN_BIN"
}

# record NAME SECONDS KIND MAXRSS_KB -> build-times.tsv (bench/results/toolchain.md is made from it)
record_time() { printf '%s\t%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "${4:-}" "$(date -u +%FT%TZ)" >>"$TIMES"; }

# fetch_module MODULE VERSION -> prints a writable copy's path.
# A refusal of the proxy is final here (it answers 403 for some modules), so
# the message names the module and says so instead of retrying.
fetch_module() {
    local mod=$1 ver=$2 name=$3 json dir err
    local dest=$SRC/${name}@${ver}
    if [[ -f $dest/.fetched ]]; then printf '%s\n' "$dest"; return; fi
    json=$(cd "$TOOLCHAIN_DIR" && "$GO" mod download -json "$mod@$ver" 2>&1) || true
    dir=$(printf '%s' "$json" | python3 -c 'import json,sys; d=json.load(sys.stdin); print(d.get("Dir",""))' 2>/dev/null || true)
    if [[ -z $dir ]]; then
        err=$(printf '%s' "$json" | python3 -c 'import json,sys; print(json.load(sys.stdin).get("Error",""))' 2>/dev/null || printf '%s' "$json")
        local hint="" code=1
        case $err in
            *403*) hint=" -- the proxy refuses this module outright (a final answer, not a time-out)"; code=$REFUSED ;;
        esac
        printf '[toolchain] ERROR: %s\n' "$name: cannot download $mod@$ver from the Go module proxy: $err$hint" >&2
        exit "$code"
    fi
    rm -rf "$dest"
    cp -r "$dir" "$dest"
    chmod -R u+w "$dest"
    touch "$dest/.fetched"
    printf '%s\n' "$dest"
}

# rewrite_relative_replaces DIR RULES...
# Each rule is PATTERN=VERSION (shell glob on the module path).  Every replace
# whose target is a relative directory (absent from the module zip) becomes a
# plain requirement of the published module at the version of the first
# matching rule.
rewrite_relative_replaces() {
    local dir=$1; shift
    (cd "$dir" && "$GO" mod edit -json) >"$dir/.gomod.json"
    python3 - "$dir/.gomod.json" "$@" >"$dir/.rewrite-args" <<'PY'
import fnmatch, json, sys
mod = json.load(open(sys.argv[1]))
rules = [r.split("=", 1) for r in sys.argv[2:]]
required = {r["Path"] for r in mod.get("Require") or []}
for rep in mod.get("Replace") or []:
    new = rep["New"]["Path"]
    if not (new.startswith("./") or new.startswith("../")):
        continue
    old = rep["Old"]["Path"]
    if old not in required:  # a guard like `=> ./FORBIDDEN_DEPENDENCY`: nothing uses it
        print(f"-dropreplace={old}")
        continue
    for pattern, version in rules:
        if fnmatch.fnmatch(old, pattern):
            print(f"-dropreplace={old}")
            print(f"-require={old}@{version}")
            break
    else:
        sys.exit(f"no version rule for relative replace {old} => {new}")
PY
    if [[ -s $dir/.rewrite-args ]]; then
        # shellcheck disable=SC2046  # one argument per line, no spaces inside
        (cd "$dir" && "$GO" mod edit $(cat .rewrite-args))
    fi
}

# go_build NAME DIR PKG LDFLAGS [FLAGS...] -> $BIN/NAME ($PLUGIN_BIN for pulumi-resource-*), log in $LOGS/NAME.log
go_build() {
    local name=$1 dir=$2 pkg=$3 ldflags=$4 start rc out=$BIN
    [[ $1 == pulumi-resource-* ]] && out=$PLUGIN_BIN
    shift 4   # anything else: extra `go build` flags (-tags ...)
    local log=$LOGS/$name.log
    start=$(date +%s)
    rc=0
    (cd "$dir" && nice -n 10 /usr/bin/time -f 'maxrss_kb=%M' -o "$LOGS/$name.rss" \
        "$GO" build -p "$JOBS" "$@" -ldflags="-s -w $ldflags" -o "$out/$name" "$pkg") >"$log" 2>&1 || rc=$?
    if [[ $rc -ne 0 ]]; then
        say "build of $name FAILED (exit $rc); last lines of $log:"
        tail -n 25 "$log" >&2
        die "$name did not build"
    fi
    record_time "$name" "$(( $(date +%s) - start ))" build "$(sed -n 's/maxrss_kb=//p' "$LOGS/$name.rss" 2>/dev/null)"
}

# stamped NAME [VERSION]: built, at that version (default: the tool's own pin)
stamped() { [[ ( -x $BIN/$1 || -x $PLUGIN_BIN/$1 ) && -f $STAMPS/$1 && $(cat "$STAMPS/$1") == "${2:-$(pin_of "$1")}" ]]; }
stamp() { printf '%s\n' "${2:-$(pin_of "$1")}" >"$STAMPS/$1"; }
pin_of() {
    case $1 in
        etcd) printf '%s' "$ETCD_VERSION" ;;
        kwok) printf '%s' "$KWOK_VERSION" ;;
        actionlint) printf '%s' "$ACTIONLINT_VERSION" ;;
        traefik) printf '%s' "$TRAEFIK_VERSION" ;;
        helm) printf '%s' "$HELM_VERSION" ;;
        k3d) printf '%s' "$K3D_VERSION/$K3D_K3S_VERSION" ;;
        kube*) printf '%s' "$KUBERNETES_VERSION" ;;
        *) printf 'unknown' ;;
    esac
}

# ---------------------------------------------------------------- cluster ---
k8s_ldflags() {
    local v=v$KUBERNETES_VERSION minor
    minor=$(cut -d. -f2 <<<"$KUBERNETES_VERSION")
    local f
    for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
        f+=" -X $pkg.gitVersion=$v -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
        f+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
    done
    printf '%s' "$f"
}

build_kubernetes() {
    local missing=() c
    # kubelet and kube-proxy: the real node (tools/node.py); same module tree and flags
    for c in kube-apiserver kube-controller-manager kube-scheduler kubectl kubelet kube-proxy; do
        stamped "$c" || missing+=("$c")
    done
    [[ ${#missing[@]} -eq 0 ]] && return
    need_go
    local dir
    say "fetching k8s.io/kubernetes v$KUBERNETES_VERSION"
    dir=$(fetch_module k8s.io/kubernetes "v$KUBERNETES_VERSION" kubernetes)
    if [[ ! -f $dir/.rewritten ]]; then
        # staging/src/k8s.io/* is not in the module zip: use the published v0.X.Y twins
        rewrite_relative_replaces "$dir" "k8s.io/*=v0.${KUBERNETES_VERSION#1.}"
        touch "$dir/.rewritten"
    fi
    for c in "${missing[@]}"; do
        say "building $c (k8s.io/kubernetes v$KUBERNETES_VERSION)..."
        go_build "$c" "$dir" "./cmd/$c" "$(k8s_ldflags)"
        stamp "$c"
    done
}

build_etcd() {
    stamped etcd && return
    need_go
    say "building etcd (go.etcd.io/etcd/server/v3 v$ETCD_VERSION)..."
    local dir
    dir=$(fetch_module go.etcd.io/etcd/server/v3 "v$ETCD_VERSION" etcd-server)
    if [[ ! -f $dir/.rewritten ]]; then
        rewrite_relative_replaces "$dir" "go.etcd.io/etcd/*=v$ETCD_VERSION"
        touch "$dir/.rewritten"
    fi
    go_build etcd "$dir" . ""
    stamp etcd
}

build_kwok() {
    stamped kwok && [[ -s $KWOK_STAGES ]] && return
    need_go
    local dir
    dir=$(fetch_module sigs.k8s.io/kwok "v$KWOK_VERSION" kwok)
    if ! stamped kwok; then
        say "building kwok (sigs.k8s.io/kwok v$KWOK_VERSION)..."
        go_build kwok "$dir" ./cmd/kwok "-X sigs.k8s.io/kwok/pkg/consts.Version=v$KWOK_VERSION"
        stamp kwok
    fi
    # The kwok binary ships no lifecycle: kwokctl feeds it these upstream Stage
    # documents (fast node init + status heartbeat, fast pod ready/complete/delete).
    local stages=$dir/kustomize/stage f
    mkdir -p "$(dirname "$KWOK_STAGES")"
    for f in "$stages"/node/fast/node-initialize.yaml "$stages"/node/heartbeat/node-heartbeat.yaml \
        "$stages"/pod/fast/pod-ready.yaml "$stages"/pod/fast/pod-complete.yaml "$stages"/pod/fast/pod-delete.yaml; do
        [[ -f $f ]] || die "kwok: stage file $f missing from sigs.k8s.io/kwok v$KWOK_VERSION"
        printf -- '---\n'
        cat "$f"
    done >"$KWOK_STAGES.tmp"
    mv "$KWOK_STAGES.tmp" "$KWOK_STAGES"
}

# ------------------------------------------------------------------- lint ---
build_actionlint() {
    stamped actionlint && return
    need_go
    say "building actionlint (github.com/rhysd/actionlint v$ACTIONLINT_VERSION)..."
    local dir
    dir=$(fetch_module github.com/rhysd/actionlint "v$ACTIONLINT_VERSION" actionlint)
    go_build actionlint "$dir" ./cmd/actionlint "-X main.version=v$ACTIONLINT_VERSION"
    stamp actionlint
}

# ---------------------------------------------------------------- traefik ---
build_traefik() {
    stamped traefik && return
    need_go
    say "building traefik (github.com/traefik/traefik/v3 v$TRAEFIK_VERSION)..."
    local dir
    dir=$(fetch_module github.com/traefik/traefik/v3 "v$TRAEFIK_VERSION" traefik)
    # The web UI is built by npm upstream and embedded from webui/static; the
    # tests only route traffic, so an empty (placeholder) UI is enough.
    mkdir -p "$dir/webui/static"
    [[ -n $(ls -A "$dir/webui/static") ]] || printf 'web UI not built\n' >"$dir/webui/static/index.html"
    go_build traefik "$dir" ./cmd/traefik "-X github.com/traefik/traefik/v3/pkg/version.Version=v$TRAEFIK_VERSION"
    stamp traefik
}

# -------------------------------------------------------------------- k3d ---
# The module ships a vendor/ directory that does not match its go.mod; GOFLAGS'
# -mod=mod (need_go) builds from the module cache instead.  One package at a
# time (-p 1): ~65 s cold on 2 cores, beside whatever else is building.
build_k3d() {
    stamped k3d && return
    need_go
    say "building k3d (github.com/k3d-io/k3d/v5 v$K3D_VERSION)..."
    local dir
    dir=$(fetch_module github.com/k3d-io/k3d/v5 "v$K3D_VERSION" k3d)
    JOBS=1 go_build k3d "$dir" . \
        "-X github.com/k3d-io/k3d/v5/version.Version=v$K3D_VERSION -X github.com/k3d-io/k3d/v5/version.K3sVersion=$K3D_K3S_VERSION"
    stamp k3d
}

# ------------------------------------------------------------------- helm ---
build_helm() {
    stamped helm && return
    need_go
    say "building helm (helm.sh/helm/v3 v$HELM_VERSION; benchmarks only)..."
    local dir
    dir=$(fetch_module helm.sh/helm/v3 "v$HELM_VERSION" helm)
    go_build helm "$dir" ./cmd/helm "-X helm.sh/helm/v3/internal/version.version=v$HELM_VERSION"
    stamp helm
}

# ----------------------------------------------------------------- engine ---
# The module proxy serves github.com/pulumi/pulumi/pkg/v3 at v3.274.1 but
# refuses the Python language host and the three provider modules at every
# version; their sources (upstream bytes, a few files each) are tarballs in
# ../shared/vendor, checked against its SHA256SUMS before anything is unpacked.
# Every deviation from upstream is one `go mod edit` below and is listed in
# the README ("The engine: what is not upstream-exact").
VENDOR=${CLASSROOM_VENDOR:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/../shared/vendor}

# The user's own pulumi wins: a developer machine with Pulumi installed keeps it.
foreign_pulumi() {
    local p
    p=$(command -v pulumi 2>/dev/null || true)
    [[ -n $p && $p != "$BIN/pulumi" ]] && printf '%s' "$p"
}

vendor_checked=""
check_vendor() {
    [[ -n $vendor_checked ]] && return
    [[ -f $VENDOR/SHA256SUMS ]] || die "engine: no $VENDOR/SHA256SUMS; the engine's refused sources live in ../shared/vendor beside the clone (or set CLASSROOM_VENDOR=/path/to/vendor)"
    (cd "$VENDOR" && sha256sum --quiet -c SHA256SUMS) >&2 \
        || die "engine: a tarball in $VENDOR does not match its SHA256SUMS; refusing to build from it"
    vendor_checked=1
}

# unpack NAME -> $SRC/vendor/NAME (a fresh copy each time, so edits below start from upstream bytes)
unpack_vendor() {
    local n=$1
    check_vendor
    rm -rf "${SRC:?}/vendor/$n"
    mkdir -p "$SRC/vendor"
    tar --zstd -xf "$VENDOR/$n.tar.zst" -C "$SRC/vendor"
}

# go_step NAME DIR CMD... : a non-build Go step (tidy, generate) with its own log
go_step() {
    local name=$1 dir=$2; shift 2
    local log=$LOGS/$name.log start
    start=$(date +%s)
    (cd "$dir" && nice -n 10 "$@") >"$log" 2>&1 || { say "$name FAILED; last lines of $log:"; tail -n 25 "$log" >&2; die "$name failed"; }
    record_time "$name" "$(( $(date +%s) - start ))" step ""
}

build_pulumi_cli() {
    stamped pulumi "$PULUMI_CLI_VERSION" && return
    need_go
    say "building pulumi CLI v$PULUMI_CLI_VERSION (github.com/pulumi/pulumi/pkg/v3, from the module proxy; ~13 min cold)..."
    local dir=$SRC/pulumi-cli
    rm -rf "$dir"; mkdir -p "$dir"
    # pkg/v3's own replace (replaces of a dependency are not applied to its users)
    cat >"$dir/go.mod" <<MOD
module classroom.local/pulumi-cli

go 1.26.6

require (
	github.com/pulumi/pulumi/pkg/v3 v$PULUMI_CLI_VERSION
	github.com/pulumi/pulumi/sdk/v3 v$PULUMI_CLI_VERSION
)

replace github.com/atotto/clipboard => github.com/tgummerer/clipboard v0.0.0-20241001131231-d02d263e614e
MOD
    printf '//go:build tools\n\npackage tools\n\nimport _ "github.com/pulumi/pulumi/pkg/v3/cmd/pulumi"\n' >"$dir/tools.go"
    go_step pulumi-cli-tidy "$dir" "$GO" mod tidy
    go_build pulumi "$dir" github.com/pulumi/pulumi/pkg/v3/cmd/pulumi \
        "-X github.com/pulumi/pulumi/sdk/v3/go/common/version.Version=v$PULUMI_CLI_VERSION"
    stamp pulumi "$PULUMI_CLI_VERSION"
}

build_language_host() {
    stamped pulumi-language-python "$PULUMI_LANGHOST_VERSION" && return
    need_go
    local n=pulumi-language-python-v$PULUMI_LANGHOST_VERSION
    say "building pulumi-language-python v$PULUMI_LANGHOST_VERSION (vendored source on pkg/sdk v$PULUMI_CLI_VERSION)..."
    unpack_vendor "$n"
    local dir=$SRC/vendor/$n/sdk/python/cmd/pulumi-language-python
    # upstream builds it against pkg/sdk in the same repository (../../..); here the proxy's release
    go_step langhost-mod "$dir" "$GO" mod edit \
        -dropreplace=github.com/pulumi/pulumi/pkg/v3 -dropreplace=github.com/pulumi/pulumi/sdk/v3 \
        -require=github.com/pulumi/pulumi/pkg/v3@v$PULUMI_CLI_VERSION \
        -require=github.com/pulumi/pulumi/sdk/v3@v$PULUMI_CLI_VERSION -go=1.26.6
    go_step langhost-tidy "$dir" "$GO" mod tidy
    go_build pulumi-language-python "$dir" . \
        "-X github.com/pulumi/pulumi/sdk/v3/go/common/version.Version=v$PULUMI_LANGHOST_VERSION" -tags grpcnotrace
    # the host execs these two scripts from its own directory / PATH: the
    # interpreter shim, and the one dynamic providers (pulumi.dynamic) run through
    install -m 0755 "$dir/../pulumi-language-python-exec" "$BIN/"
    install -m 0755 "$dir/../../dist/pulumi-resource-pulumi-python" "$BIN/"
    stamp pulumi-language-python "$PULUMI_LANGHOST_VERSION"
}

build_tls() {
    stamped pulumi-resource-tls "$PULUMI_TLS_VERSION" && return
    need_go
    local n=pulumi-tls-v$PULUMI_TLS_VERSION
    say "building pulumi-resource-tls v$PULUMI_TLS_VERSION (vendored source; ~6 min cold)..."
    unpack_vendor "$n"; unpack_vendor pulumi-yaml-294c561f47f4; unpack_vendor pulumi-language-dotnet-6a2eb2585b50
    local dir=$SRC/vendor/$n/provider
    # refused by the proxy: terraform-provider-tls at upstream v4.3.0 (the proxy's
    # v4.2.1 stands in: internal/ differs only in copyright headers), and two
    # pseudo-versions whose sources are vendored
    go_step tls-mod "$dir" "$GO" mod edit \
        -replace=github.com/hashicorp/terraform-provider-tls=github.com/hashicorp/terraform-provider-tls@v1.2.1-0.20260130152455-857b38cda3fc \
        -replace=github.com/pulumi/pulumi-yaml=../../pulumi-yaml-294c561f47f4 \
        -replace=github.com/pulumi/pulumi-dotnet/pulumi-language-dotnet/v3=../../pulumi-language-dotnet-6a2eb2585b50/pulumi-language-dotnet
    go_step tls-generate "$dir" env VERSION="$PULUMI_TLS_VERSION" "$GO" generate cmd/pulumi-resource-tls/main.go
    go_build pulumi-resource-tls "$dir" ./cmd/pulumi-resource-tls \
        "-X github.com/pulumi/pulumi-tls/provider/v5/pkg/version.Version=$PULUMI_TLS_VERSION"
    stamp pulumi-resource-tls "$PULUMI_TLS_VERSION"
}

build_command() {
    stamped pulumi-resource-command "$PULUMI_COMMAND_VERSION" && return
    need_go
    local n=pulumi-command-v$PULUMI_COMMAND_VERSION
    say "building pulumi-resource-command v$PULUMI_COMMAND_VERSION (vendored source, go.mod as upstream)..."
    unpack_vendor "$n"
    go_build pulumi-resource-command "$SRC/vendor/$n/provider" ./cmd/pulumi-resource-command \
        "-X github.com/pulumi/pulumi-command/provider/pkg/version.Version=$PULUMI_COMMAND_VERSION"
    stamp pulumi-resource-command "$PULUMI_COMMAND_VERSION"
}

build_kubernetes_provider() {
    stamped pulumi-resource-kubernetes "$PULUMI_KUBERNETES_VERSION" && return
    need_go
    local n=pulumi-kubernetes-v$PULUMI_KUBERNETES_VERSION
    say "building pulumi-resource-kubernetes v$PULUMI_KUBERNETES_VERSION (vendored source; ~15 min cold, ~4.6 GiB peak)..."
    unpack_vendor "$n"; unpack_vendor pulumi-pkg-v3.243.0; unpack_vendor fluxcd-pkg-ssa-4f94dc680419
    local dir=$SRC/vendor/$n/provider cmd
    cmd=$dir/cmd/pulumi-resource-kubernetes
    # the v4.32.0 schema.json is not in the snapshot: v4.25.0's stands in (read only
    # for GetSchema and import; CRUD, diff and await are v4.32.0 code)
    [[ -f $cmd/schema.json ]] || tar --zstd -xf "$VENDOR/pulumi-kubernetes-schema-v4.25.0.tar.zst" -C "$SRC/vendor"
    go_step kubernetes-mod "$dir" "$GO" mod edit \
        -dropreplace=github.com/pulumi/pulumi-kubernetes/sdk/v4 \
        -require=github.com/pulumi/pulumi-kubernetes/sdk/v4@v$PULUMI_KUBERNETES_VERSION \
        -replace=github.com/pulumi/pulumi/pkg/v3=../../pulumi-pkg-v3.243.0/pkg \
        -replace=github.com/fluxcd/pkg/ssa=../../fluxcd-pkg-ssa-4f94dc680419/ssa
    go_step kubernetes-generate "$dir" env VERSION="$PULUMI_KUBERNETES_VERSION" "$GO" generate cmd/pulumi-resource-kubernetes/main.go
    go_build pulumi-resource-kubernetes "$dir" ./cmd/pulumi-resource-kubernetes \
        "-X github.com/pulumi/pulumi-kubernetes/provider/v4/pkg/version.Version=$PULUMI_KUBERNETES_VERSION"
    stamp pulumi-resource-kubernetes "$PULUMI_KUBERNETES_VERSION"
}

pulumi_cmd() { if [[ -n $(foreign_pulumi) ]]; then foreign_pulumi; else printf '%s' "$BIN/pulumi"; fi; }

# Plugins go into the toolchain's own PULUMI_HOME, at exactly the versions
# requirements.txt pins, so the engine never looks for them anywhere else.
install_plugin() {
    local name=$1 ver=$2 file=$PLUGIN_BIN/pulumi-resource-$1
    local home=$PULUMI_HOME_DIR dest=$PULUMI_HOME_DIR/plugins/resource-$1-v$2
    if [[ -x $dest/pulumi-resource-$name ]] && cmp -s "$file" "$dest/pulumi-resource-$name"; then
        return
    fi
    say "installing plugin resource $name v$ver into $home"
    PULUMI_HOME=$home PULUMI_SKIP_UPDATE_CHECK=true "$(pulumi_cmd)" plugin install resource "$name" "v$ver" \
        --file "$file" --reinstall >>"$LOGS/plugin-install.log" 2>&1 \
        || { tail -n 20 "$LOGS/plugin-install.log" >&2; die "pulumi plugin install resource $name $ver failed (log: $LOGS/plugin-install.log)"; }
}

check_pins() {
    # requirements.txt is the one place the Python SDK versions are written; the
    # plugins must be the same versions or the engine would fetch others.
    local req pkg want
    req=$(dirname "${BASH_SOURCE[0]}")/../requirements.txt
    for pkg in kubernetes:"$PULUMI_KUBERNETES_VERSION" tls:"$PULUMI_TLS_VERSION" command:"$PULUMI_COMMAND_VERSION"; do
        want=${pkg#*:}
        grep -qx "pulumi-${pkg%%:*}==$want" "$req" \
            || die "requirements.txt does not pin pulumi-${pkg%%:*}==$want (the plugin this script builds); keep the two in step"
    done
}

build_engine() {
    check_pins
    if [[ -n $(foreign_pulumi) ]]; then
        say "using the pulumi already on PATH: $(foreign_pulumi) (it fetches its own plugins)"
        return
    fi
    build_language_host
    build_command
    build_tls
    build_pulumi_cli
    build_kubernetes_provider
    mkdir -p "$PULUMI_HOME_DIR"
    install_plugin kubernetes "$PULUMI_KUBERNETES_VERSION"
    install_plugin tls "$PULUMI_TLS_VERSION"
    install_plugin command "$PULUMI_COMMAND_VERSION"
}

print_env() {
    # shellcheck disable=SC2016  # $PATH is expanded by the shell that evals this
    printf 'export PATH=%q:"$PATH"\n' "$BIN"
    printf 'export CLASSROOM_TOOLCHAIN_DIR=%q\n' "$TOOLCHAIN_DIR"
    printf 'export PULUMI_SKIP_UPDATE_CHECK=true\n'
    # Our engine uses our plugins only: its own PULUMI_HOME, and never a
    # download. A user's own pulumi keeps its home and fetches its plugins.
    if [[ -z $(foreign_pulumi) ]] && stamped pulumi "$PULUMI_CLI_VERSION"; then
        printf 'export PULUMI_HOME=%q\n' "$PULUMI_HOME_DIR"
        printf 'export PULUMI_DISABLE_AUTOMATIC_PLUGIN_ACQUISITION=true\n'
    fi
}

main() {
    local target=${1:-all} t0
    t0=$(date +%s)
    case $target in
        env) print_env; return ;;
        dir) printf '%s\n' "$TOOLCHAIN_DIR"; return ;;
        cluster) build_etcd; build_kubernetes; build_kwok ;;
        engine) build_engine ;;
        lint) build_actionlint ;;
        traefik) build_traefik ;;
        helm) build_helm ;;
        k3d) build_k3d ;;
        all)
            # Two builds at once: `go build -p 2` leaves a core idle in its long
            # single-threaded link steps, so the engine (the longest, ~35 min
            # cold) runs beside the rest; peak memory together stays under 8 GiB.
            local engine_rc=0 engine_pid
            bash "${BASH_SOURCE[0]}" engine &
            engine_pid=$!
            # a failure here must not leave the engine build running on its own
            trap 'kill "$engine_pid" 2>/dev/null || true' EXIT
            build_etcd; build_kubernetes; build_kwok; build_actionlint; build_traefik; build_k3d
            wait "$engine_pid" || engine_rc=$?
            trap - EXIT
            [[ $engine_rc -eq 0 ]] || die "the engine build failed (exit $engine_rc); see the messages above and $LOGS"
            ;;
        -h|--help|help) sed -n "2,14p" "$0" | sed 's/^# \{0,1\}//'; return ;;
        *) die "unknown target '$target'; accepted: all, engine, cluster, lint, traefik, k3d, helm, env, dir" ;;
    esac
    mkdir -p "$TOOLCHAIN_DIR"
    say "$target ready in $(( $(date +%s) - t0 ))s under $TOOLCHAIN_DIR"
}

# `exit` on the same line: bash reads a script as it runs, so an edit of this
# file during a long build must not make it execute whatever follows.
main "$@"; exit
