#!/usr/bin/env bash
# Build the programs the tests exercise for real (issue 9, part 1) from their
# source modules, with the ordinary `go` client (and cargo for InfluxDB's Flux
# engine), into a cache outside the repository:
#
#   ${SLOWCTL_TOOLS_DIR:-~/.cache/slowctl/tools}/<name>-<version>/bin/<program>
#
# A tool whose directory holds its program and a matching build-info (the
# recipe below) is skipped, so a second run costs seconds. Builds go to a
# staging directory first and are moved into place only when they succeeded
# and the program answers its version command: an interrupted build never
# looks finished.
#
#   scripts/build-test-tools.sh                 build (or reuse) every tool
#   scripts/build-test-tools.sh telegraf ferretdb   only those
#   scripts/build-test-tools.sh --paths         print name=path of built programs, build nothing
#
# Needs: Go >= 1.26 (`go` on PATH or /usr/local/go/bin), the Go module proxy;
# for influxd also a C compiler, pkg-config, rustup's stable toolchain and
# crates.io. Go's own caches (GOMODCACHE, GOCACHE) and cargo's registry are
# used as configured; they make a rebuild faster but are not needed once the
# programs are built.
set -euo pipefail

# --- every pinned version, in one place -----------------------------------------
TELEGRAF_VERSION=v1.39.3
# Only the plugins telegraf/telegraf.conf uses (inputs, processors, outputs and
# the input data formats): a plugin missing here makes Telegraf refuse the config.
TELEGRAF_TAGS=custom,inputs.mqtt_consumer,inputs.internal,processors.enum,outputs.influxdb_v2,outputs.health,parsers.influx,parsers.value,parsers.json_v2
INFLUXDB_VERSION=v2.8.0
# InfluxData's pkg-config wrapper: builds Flux's Rust library (libflux) with cargo
# when cgo asks for `flux`.
PKG_CONFIG_WRAPPER_VERSION=v0.2.7
# libflux pins Rust 1.72 (rust-toolchain.toml), which rustup cannot fetch here;
# build it with this installed toolchain instead, lints capped to warnings.
INFLUXDB_RUST_TOOLCHAIN=${SLOWCTL_RUST_TOOLCHAIN:-stable}
COMPOSE_VERSION=v2.40.3
FERRETDB_VERSION=v1.24.2
# -------------------------------------------------------------------------------

ALL_TOOLS=(telegraf influxd compose ferretdb)
FAILED=()

REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TOOLS_DIR=${SLOWCTL_TOOLS_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/slowctl/tools}
PATH=$PATH:/usr/local/go/bin:$HOME/.cargo/bin
export GOTOOLCHAIN=local      # never download a Go toolchain behind our back
export GOFLAGS="${GOFLAGS:+$GOFLAGS }-buildvcs=false"

log() { printf 'build-test-tools: %s\n' "$*"; }
die() { printf 'build-test-tools: ERROR: %s\n' "$*" >&2; exit 1; }

# name -> version, program, version command (arguments after the program)
tool_version() {
    case $1 in
        telegraf) echo "$TELEGRAF_VERSION" ;;
        influxd) echo "$INFLUXDB_VERSION" ;;
        compose) echo "$COMPOSE_VERSION" ;;
        ferretdb) echo "$FERRETDB_VERSION" ;;
        *) die "unknown tool '$1' (known: ${ALL_TOOLS[*]})" ;;
    esac
}
tool_program() {
    case $1 in
        compose) echo docker-compose ;;
        *) echo "$1" ;;
    esac
}
tool_check() {   # prints the program's version; fails if it does not run
    local prog=$1/bin/$(tool_program "$2")
    case $2 in
        telegraf)
            "$prog" --version
            # the build has every plugin the project's config asks for: `config check`
            # exits 0 even when it fails, so look for its error lines
            if [[ -f $REPO_ROOT/telegraf/telegraf.conf ]]; then
                local out
                out=$("$prog" config check --config "$REPO_ROOT/telegraf/telegraf.conf" 2>&1)
                if grep -q ' E! ' <<<"$out"; then
                    echo "$out"
                    echo "telegraf lacks a plugin telegraf/telegraf.conf uses: add its tag to TELEGRAF_TAGS"
                    return 1
                fi
            fi
            ;;
        influxd) "$prog" version ;;
        compose) "$prog" version && "$prog" config --help >/dev/null ;;
        ferretdb) "$prog" --version | grep '^version: ' ;;
    esac
}
# Everything that changes what gets built: a different recipe means rebuild.
tool_recipe() {
    case $1 in
        telegraf) echo "telegraf $TELEGRAF_VERSION tags=$TELEGRAF_TAGS" ;;
        influxd) echo "influxd $INFLUXDB_VERSION tags=sqlite_foreign_keys,sqlite_json pkg-config=$PKG_CONFIG_WRAPPER_VERSION rust=$INFLUXDB_RUST_TOOLCHAIN" ;;
        compose) echo "compose $COMPOSE_VERSION" ;;
        ferretdb) echo "ferretdb $FERRETDB_VERSION" ;;
    esac
}
tool_dir() { echo "$TOOLS_DIR/$1-$(tool_version "$1")"; }

is_built() {
    local dir
    dir=$(tool_dir "$1")
    [[ -x $dir/bin/$(tool_program "$1") && -f $dir/build-info ]] &&
        [[ $(head -n 1 "$dir/build-info") == "$(tool_recipe "$1")" ]]
}

# Fetch a module's source into the module cache and print its directory.
module_dir() {
    local json dir
    json=$(go mod download -json "$1") || { echo "go mod download $1 failed: $json" >&2; return 1; }
    dir=$(sed -n 's/^\t"Dir": "\(.*\)",$/\1/p' <<<"$json")
    [[ -n $dir ]] || { echo "go mod download $1: no source directory in $json" >&2; return 1; }
    echo "$dir"
}
# A writable copy of a module's source (the module cache is read-only).
module_copy() {
    local src
    src=$(module_dir "$1")
    [[ -n $src ]] || return 1
    cp -r "$src" "$2"
    chmod -R u+w "$2"
}

# --- the builds; each runs in a subshell with errexit, cwd = staging dir, output -> log

build_telegraf() {
    local out=$1
    # Telegraf's go.mod has no replace directives, so `go install pkg@version` works.
    GOBIN=$out/bin go install -trimpath -tags "$TELEGRAF_TAGS" \
        -ldflags "-s -w -X github.com/influxdata/telegraf/internal.Version=${TELEGRAF_VERSION#v}" \
        "github.com/influxdata/telegraf/cmd/telegraf@$TELEGRAF_VERSION"
}

build_influxd() {
    local out=$1 src wrapper
    command -v cc >/dev/null || { echo "influxd needs a C compiler (cc) for cgo"; return 1; }
    command -v pkg-config >/dev/null || { echo "influxd needs the system pkg-config (apt install pkg-config)"; return 1; }
    command -v cargo >/dev/null || { echo "influxd needs cargo (rustup) for Flux's libflux"; return 1; }
    # The wrapper, first on PATH: cgo's `pkg-config flux` makes it run
    # `cargo build --release --target <triple>` on libflux (Flux's module, copied into
    # $GOCACHE/pkgconfig); other packages go to the system pkg-config (the wrapper
    # drops its own directory from PATH to find it).
    wrapper=$out/build-wrappers
    GOBIN=$wrapper go install "github.com/influxdata/pkg-config@$PKG_CONFIG_WRAPPER_VERSION"
    # libflux denies all warnings (`#![deny(warnings)]` under its default `strict`
    # feature) and newer Rust has new warnings. RUSTFLAGS="--cap-lints warn" is not
    # enough: with --target, cargo does not apply RUSTFLAGS to host crates, and
    # flux-core is also built for the host (a build-dependency). A RUSTC_WRAPPER
    # caps lints for every crate cargo itself does not already cap.
    cat >"$wrapper/rustc-cap-lints" <<'WRAPPER'
#!/bin/sh
rustc=$1; shift
case " $* " in
    *" --crate-name "*) case " $* " in *" --cap-lints "*) ;; *) set -- "$@" --cap-lints warn ;; esac ;;
esac
exec "$rustc" "$@"
WRAPPER
    chmod +x "$wrapper/rustc-cap-lints"
    export PATH=$wrapper:$PATH PKG_CONFIG=$wrapper/pkg-config RUSTC_WRAPPER=$wrapper/rustc-cap-lints
    # libflux's rust-toolchain.toml asks for Rust 1.72, which rustup cannot fetch here.
    export RUSTUP_TOOLCHAIN=$INFLUXDB_RUST_TOOLCHAIN
    echo "rust: $(rustc --version), $(cargo --version)"
    # go.mod has replace directives, so `go install pkg@version` refuses: build in
    # the module's own directory (as its Makefile does). No `assets` tag: the API
    # works without the UI.
    src=$(module_dir "github.com/influxdata/influxdb/v2@$INFLUXDB_VERSION")
    [[ -n $src ]]
    cd "$src"
    CGO_ENABLED=1 go build -trimpath -tags sqlite_foreign_keys,sqlite_json \
        -ldflags "-s -w -X main.version=$INFLUXDB_VERSION -X main.commit=module" \
        -o "$out/bin/influxd" ./cmd/influxd
    cd "$out"
    rm -rf "$wrapper"
}

build_compose() {
    local out=$1 src
    # go.mod has exclude directives, so `go install pkg@version` refuses: build in
    # the module's own directory, as its Makefile does (without its `e2e` tag).
    src=$(module_dir "github.com/docker/compose/v2@$COMPOSE_VERSION")
    [[ -n $src ]]
    cd "$src"
    CGO_ENABLED=0 go build -trimpath \
        -ldflags "-s -w -X github.com/docker/compose/v2/internal.Version=$COMPOSE_VERSION" \
        -o "$out/bin/docker-compose" ./cmd
    cd "$out"
}

build_ferretdb() {
    local out=$1
    # FerretDB embeds build/version/version.txt (written by its `task gen-version`)
    # and panics without it, so build a copy of the module with that file.
    module_copy "github.com/FerretDB/FerretDB@$FERRETDB_VERSION" "$out/src"
    echo "$FERRETDB_VERSION" >"$out/src/build/version/version.txt"
    echo "source-module" >"$out/src/build/version/package.txt"
    cd "$out/src"
    # SQLite backend: modernc.org/sqlite, pure Go.
    CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$out/bin/ferretdb" ./cmd/ferretdb
    cd "$out"
    rm -rf "$out/src"
}

# --- driver ------------------------------------------------------------------------

build_one() {
    local name=$1 version dir staging logf start rc secs
    version=$(tool_version "$name")
    dir=$(tool_dir "$name")
    if is_built "$name"; then
        log "$name $version: cached in $dir"
        return 0
    fi
    mkdir -p "$TOOLS_DIR/.logs"
    logf=$TOOLS_DIR/.logs/$name-$version.log
    staging=$(mktemp -d "$TOOLS_DIR/.staging-$name-XXXXXX")
    chmod 755 "$staging"
    log "$name $version: building (log: $logf) ..."
    start=$SECONDS
    set +e
    (
        set -euo pipefail
        cd "$staging"
        "build_$name" "$staging"
        tool_recipe "$name" >"$staging/build-info"
        { echo "built $(date -u +%FT%TZ) in $((SECONDS - start)) s with $(go version)"; } >>"$staging/build-info"
        tool_check "$staging" "$name"
    ) >"$logf" 2>&1
    rc=$?
    set -e
    secs=$((SECONDS - start))
    if ((rc != 0)); then
        rm -rf "$staging"
        printf 'build-test-tools: FAILED: %s %s (exit %d after %d s); last lines of %s:\n' \
            "$name" "$version" "$rc" "$secs" "$logf" >&2
        tail -n 30 "$logf" | sed 's/^/    /' >&2
        FAILED+=("$name")
        return 0
    fi
    rm -rf "$dir"
    mv "$staging" "$dir"
    log "$name $version: built in $((secs / 60))m$((secs % 60))s -> $dir/bin/$(tool_program "$name") ($(tail -n 1 "$logf"))"
}

main() {
    local tools=() t
    if [[ ${1:-} == --paths ]]; then
        for t in "${ALL_TOOLS[@]}"; do
            is_built "$t" && echo "$t=$(tool_dir "$t")/bin/$(tool_program "$t")"
        done
        return 0
    fi
    (($#)) && tools=("$@") || tools=("${ALL_TOOLS[@]}")
    for t in "${tools[@]}"; do tool_version "$t" >/dev/null; done   # reject unknown names early

    command -v go >/dev/null || die "go not found (need Go >= 1.26: /usr/local/go/bin or PATH)"
    mkdir -p "$TOOLS_DIR"
    local total=$SECONDS
    log "tools dir $TOOLS_DIR; $(go version)"
    for t in "${tools[@]}"; do
        # never `build_one ... || ...`: errexit would be off inside the build
        build_one "$t"
    done
    log "done in $(((SECONDS - total) / 60))m$(((SECONDS - total) % 60))s"
    if ((${#FAILED[@]})); then
        die "could not build: ${FAILED[*]}"
    fi
}

main "$@"
