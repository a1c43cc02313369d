#!/usr/bin/env bash
# Installs the system libraries swift-mobilenet links against, from the distribution's
# packages (Debian/Ubuntu): HDF5 (Keras weight files), libjpeg-turbo, libpng, libwebp, giflib
# and stb_image (images: JPEG, PNG, WebP, GIF, BMP),
# SQLite (the embedding cache) and its sqlite3 shell (the store tests inspect databases with it),
# OpenBLAS (similarity search), libzip (the ZIP container of .keras files), pkg-config (to find HDF5, SQLite and OpenBLAS). oneDNN 2.x
# (libdnnl-dev, the fast CPU backend; Debian 12 ships 2.6.3). FAISS 1.7.3 (libfaiss-dev, approximate
# search; a static libfaiss.a that also links OpenBLAS/LAPACK and libgomp — libgomp.so comes with
# libgcc-12-dev, which the Swift toolchain needs anyway). FlatBuffers 2.0.8 (libflatbuffers-dev, header
# only: the Verifier of the C++ flatc generated from TFLite's schema, committed). XNNPACK and pthreadpool
# (libxnnpack-dev, libpthreadpool-dev: the integer kernels of quantized .tflite files). Does nothing when they are
# already installed.
set -euo pipefail

packages=(pkg-config libhdf5-dev libjpeg-dev libpng-dev libwebp-dev libgif-dev libstb-dev libsqlite3-dev sqlite3 libopenblas-dev libdnnl-dev libzip-dev zlib1g-dev libfaiss-dev libflatbuffers-dev libxnnpack-dev libpthreadpool-dev)
missing=()
for package in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
done
if [ ${#missing[@]} -eq 0 ]; then
    exit 0
fi
sudo=""
if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
echo "setup: installing ${missing[*]}" >&2
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
