#!/usr/bin/env bash
# Builds the real tools the e2e tier runs (Pulumi engine + provider plugins,
# etcd / kube-apiserver / controller-manager / scheduler / kubectl, kwok,
# actionlint, traefik) from the Go module proxy with the machine's Go, and
# caches them under one versioned directory so a warm run costs seconds.
#
#   tools/toolchain.sh [all|engine|cluster|lint|traefik]   build what is missing
#       cluster: etcd kube-apiserver kube-controller-manager kube-scheduler kubectl kwok
#       engine:  pulumi pulumi-language-python + kubernetes/tls/command plugins (installed)
#       lint: actionlint   traefik: traefik   all: every one (a proxy refusal of the
#       engine is a warning there; `engine` alone exits 3)
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

# ---- versions (changing any of them changes the cache key => rebuild) -------
PULUMI_VERSION=3.272.0            # matches pulumi==3.272.0 in requirements.txt
PULUMI_KUBERNETES_VERSION=4.34.2  # pulumi-kubernetes==4.34.2
PULUMI_TLS_VERSION=5.6.2          # pulumi-tls==5.6.2
PULUMI_COMMAND_VERSION=1.2.1      # pulumi-command==1.2.1
KUBERNETES_VERSION=1.34.4
ETCD_VERSION=3.6.16
KWOK_VERSION=0.8.0
ACTIONLINT_VERSION=1.7.12
TRAEFIK_VERSION=3.6.12           # 3.7.x needs modules the proxy here refuses

GO=${GO:-/usr/local/go/bin/go}
[[ -x $GO ]] || GO=$(command -v go || true)
JOBS=${TOOLCHAIN_JOBS:-2}

versions_string="pulumi=$PULUMI_VERSION k8s-provider=$PULUMI_KUBERNETES_VERSION tls=$PULUMI_TLS_VERSION \
command=$PULUMI_COMMAND_VERSION kubernetes=$KUBERNETES_VERSION etcd=$ETCD_VERSION kwok=$KWOK_VERSION \
actionlint=$ACTIONLINT_VERSION traefik=$TRAEFIK_VERSION"
KEY=$(printf '%s' "$versions_string" | sha256sum | cut -c1-12)
CACHE_ROOT=${CLASSROOM_CACHE:-$HOME/.cache/classroom}
TOOLCHAIN_DIR=$CACHE_ROOT/toolchain-$KEY
BIN=$TOOLCHAIN_DIR/bin
SRC=$TOOLCHAIN_DIR/src
LOGS=$TOOLCHAIN_DIR/logs
STAMPS=$TOOLCHAIN_DIR/stamps
TIMES=$TOOLCHAIN_DIR/build-times.tsv
KWOK_STAGES=$TOOLCHAIN_DIR/share/kwok-stages.yaml

REFUSED=3   # exit status when the module proxy refuses a module (nothing to retry)

say() { printf '[toolchain] %s\n' "$*" >&2; }
die() { printf '[toolchain] ERROR: %s\n' "$*" >&2; exit 1; }

need_go() {
    [[ -n $GO && -x $GO ]] || die "no Go toolchain found (looked for /usr/local/go/bin/go and go on PATH); install Go >= 1.24"
    export GOTOOLCHAIN=local      # never let go.mod's toolchain line download another Go
    export GOFLAGS="-trimpath -mod=mod -buildvcs=false"
    export CGO_ENABLED=0          # static binaries; no C toolchain needed
    export GOWORK=off             # k8s.io/kubernetes ships a go.work naming staging/, absent here
    mkdir -p "$BIN" "$SRC" "$LOGS" "$STAMPS"
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
        case $name in
            pulumi*) hint+="; install the Pulumi CLI ${PULUMI_VERSION} yourself (https://www.pulumi.com/docs/install/):
a pulumi on PATH is used as is, and it fetches its provider plugins itself" ;;
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

# go_build NAME DIR PKG LDFLAGS -> $BIN/NAME, log in $LOGS/NAME.log
go_build() {
    local name=$1 dir=$2 pkg=$3 ldflags=$4 start rc
    local log=$LOGS/$name.log
    start=$(date +%s)
    rc=0
    (cd "$dir" && nice -n 10 /usr/bin/time -f 'maxrss_kb=%M' -o "$LOGS/$name.rss" \
        "$GO" build -p "$JOBS" -ldflags="-s -w $ldflags" -o "$BIN/$name" "$pkg") >"$log" 2>&1 || rc=$?
    if [[ $rc -ne 0 ]]; then
        say "build of $name FAILED (exit $rc); last lines of $log:"
        tail -n 25 "$log" >&2
        die "$name did not build"
    fi
    record_time "$name" "$(( $(date +%s) - start ))" build "$(sed -n 's/maxrss_kb=//p' "$LOGS/$name.rss" 2>/dev/null)"
}

stamped() { [[ -f $STAMPS/$1 && -x $BIN/$1 ]]; }
stamp() { touch "$STAMPS/$1"; }

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
    for c in kube-apiserver kube-controller-manager kube-scheduler kubectl; do
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

# ----------------------------------------------------------------- engine ---
# The user's own pulumi wins: a developer machine with Pulumi installed keeps it.
foreign_pulumi() {
    local p
    p=$(command -v pulumi 2>/dev/null || true)
    [[ -n $p && $p != "$BIN/pulumi" ]] && printf '%s' "$p"
}

build_pulumi_cli() {
    if [[ -n $(foreign_pulumi) ]]; then
        say "using the pulumi already on PATH: $(foreign_pulumi)"
        return
    fi
    need_go
    local sdk="github.com/pulumi/pulumi/sdk/v3"
    local vflag="-X $sdk/go/common/version.Version=v$PULUMI_VERSION"
    if ! stamped pulumi; then
        say "building pulumi (github.com/pulumi/pulumi/pkg/v3 v$PULUMI_VERSION)..."
        local dir
        dir=$(fetch_module github.com/pulumi/pulumi/pkg/v3 "v$PULUMI_VERSION" pulumi-pkg)
        if [[ ! -f $dir/.rewritten ]]; then
            rewrite_relative_replaces "$dir" "github.com/pulumi/pulumi/*=v$PULUMI_VERSION"
            touch "$dir/.rewritten"
        fi
        go_build pulumi "$dir" ./cmd/pulumi "$vflag"
        stamp pulumi
    fi
    if ! stamped pulumi-language-python; then
        say "building pulumi-language-python (v$PULUMI_VERSION)..."
        local dir
        dir=$(fetch_module github.com/pulumi/pulumi/sdk/python/cmd/pulumi-language-python/v3 \
            "v$PULUMI_VERSION" pulumi-language-python)
        if [[ ! -f $dir/.rewritten ]]; then
            rewrite_relative_replaces "$dir" "github.com/pulumi/pulumi/*=v$PULUMI_VERSION"
            touch "$dir/.rewritten"
        fi
        go_build pulumi-language-python "$dir" . "$vflag"
        # The host runs these helper scripts from PATH when they ship with it.
        local f
        for f in "$dir"/pulumi-language-python-exec "$dir"/../../dist/pulumi-language-python-exec; do
            [[ -f $f ]] && install -m 0755 "$f" "$BIN/"
        done
        stamp pulumi-language-python
    fi
}

# build_provider NAME MODULE VERSION CMDDIR VERSIONPKG
build_provider() {
    local name=$1 mod=$2 ver=$3 cmddir=$4 vpkg=$5 bin=pulumi-resource-$1
    if ! stamped "$bin"; then
        need_go
        say "building $bin ($mod v$ver)..."
        local dir
        dir=$(fetch_module "$mod" "v$ver" "$bin")
        if [[ ! -f $dir/.rewritten ]]; then
            rewrite_relative_replaces "$dir" "*=v$ver"
            touch "$dir/.rewritten"
        fi
        generate_embedded_files "$name" "$dir" "$cmddir" "$ver" "$vpkg"
        go_build "$bin" "$dir" "./$cmddir" "-X $vpkg.Version=v$ver"
        stamp "$bin"
    fi
    install_plugin "$name" "$ver" "$BIN/$bin"
}

# Files the upstream Makefiles generate before `go build` and that
# `//go:embed` needs; the module zip carries only what is committed.
# schema-embed.json is the committed schema.json, compact, with "version" set
# (what each provider's `go generate` step writes).
generate_embedded_files() {
    local name=$1 dir=$2 cmddir=$3 ver=$4 vpkg=$5
    local cmd=$dir/$cmddir
    if [[ $name == tls && (! -f $cmd/schema.json || ! -f $cmd/bridge-metadata.json) ]]; then
        # Terraform-bridge provider without committed outputs: run its tfgen, as `make tfgen` does.
        go_build pulumi-tfgen-tls "$dir" ./cmd/pulumi-tfgen-tls "-X $vpkg.Version=v$ver"
        (cd "$dir" && "$BIN/pulumi-tfgen-tls" schema --out "$cmddir") \
            >>"$LOGS/pulumi-tfgen-tls.log" 2>&1 || die "pulumi-tfgen-tls schema failed; see $LOGS/pulumi-tfgen-tls.log"
    fi
    if [[ -f $cmd/schema.json && ! -f $cmd/schema-embed.json ]]; then
        python3 - "$cmd/schema.json" "$cmd/schema-embed.json" "$ver" <<'PY'
import json, sys
schema = json.load(open(sys.argv[1]))
schema["version"] = sys.argv[3]
json.dump(schema, open(sys.argv[2], "w"), separators=(",", ":"))
PY
    fi
}

pulumi_cmd() { if [[ -n $(foreign_pulumi) ]]; then foreign_pulumi; else printf '%s' "$BIN/pulumi"; fi; }

install_plugin() {
    local name=$1 ver=$2 file=$3 home=${PULUMI_HOME:-$HOME/.pulumi}
    if [[ -x $home/plugins/resource-$name-v$ver/pulumi-resource-$name ]] &&
        cmp -s "$file" "$home/plugins/resource-$name-v$ver/pulumi-resource-$name"; then
        return
    fi
    say "registering plugin resource $name v$ver"
    PULUMI_SKIP_UPDATE_CHECK=true "$(pulumi_cmd)" plugin install resource "$name" "v$ver" --file "$file" --reinstall >&2 \
        || die "pulumi plugin install resource $name $ver failed"
}

build_engine() {
    build_pulumi_cli
    build_provider kubernetes github.com/pulumi/pulumi-kubernetes/provider/v4 "$PULUMI_KUBERNETES_VERSION" \
        cmd/pulumi-resource-kubernetes github.com/pulumi/pulumi-kubernetes/provider/v4/pkg/version
    build_provider tls github.com/pulumi/pulumi-tls/provider/v5 "$PULUMI_TLS_VERSION" \
        cmd/pulumi-resource-tls github.com/pulumi/pulumi-tls/provider/v5/pkg/version
    build_provider command github.com/pulumi/pulumi-command/provider "$PULUMI_COMMAND_VERSION" \
        cmd/pulumi-resource-command github.com/pulumi/pulumi-command/provider/pkg/version
}

print_env() {
    # shellcheck disable=SC2016  # $PATH is expanded by the shell that evals this
    printf 'export PATH=%q:"$PATH"\n' "$BIN"
    printf 'export CLASSROOM_TOOLCHAIN_DIR=%q\n' "$TOOLCHAIN_DIR"
    printf 'export PULUMI_SKIP_UPDATE_CHECK=true\n'
    # Never reach out for a plugin once ours are installed; without them a
    # user's own pulumi must stay free to fetch its plugins.
    if stamped pulumi-resource-kubernetes && stamped pulumi-resource-tls && stamped pulumi-resource-command; then
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
        all)
            build_etcd; build_kubernetes; build_kwok; build_actionlint; build_traefik
            # The engine may be refused by the proxy on some machines (see
            # bench/results/toolchain.md); everything else is still usable and
            # the Pulumi e2e tests skip, so that alone does not fail `all`.
            local rc=0
            # a separate process: inside `|| ...` bash would ignore `set -e`
            bash "${BASH_SOURCE[0]}" engine || rc=$?
            if [[ $rc -eq $REFUSED ]]; then
                say "WARNING: no Pulumi engine from this proxy; put a pulumi CLI on PATH for the Pulumi e2e tests"
            elif [[ $rc -ne 0 ]]; then
                exit "$rc"
            fi
            ;;
        -h|--help|help) sed -n "2,13p" "$0" | sed 's/^# \{0,1\}//'; return ;;
        *) die "unknown target '$target'; accepted: all, engine, cluster, lint, traefik, env, dir" ;;
    esac
    mkdir -p "$TOOLCHAIN_DIR"
    say "$target ready in $(( $(date +%s) - t0 ))s under $TOOLCHAIN_DIR"
}

# `exit` on the same line: bash reads a script as it runs, so an edit of this
# file during a long build must not make it execute whatever follows.
main "$@"; exit
