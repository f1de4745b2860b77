#!/usr/bin/env bash
# Installs every Debian 12 package ghost needs to build, test and benchmark. Idempotent; needs root.
set -euo pipefail
packages=(
  build-essential gfortran cmake ninja-build pkg-config git
  libgtest-dev libgmock-dev
  libzstd-dev liblz4-dev libxxhash-dev libcli11-dev nlohmann-json3-dev libfmt-dev
  libopenmpi-dev openmpi-bin libmpich-dev mpich
  libucx-dev ucx-utils libssl-dev libfabric-dev libhwloc-dev libboost-dev
  python3 python3-matplotlib clang-format iproute2 procps
  python3-mpi4py python3-numpy python3-venv
  slurm-wlm munge util-linux  # tests/slurm: a private Slurm, in a PID namespace (unshare)
)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if ((${#missing[@]})); then
  if [[ $(id -u) -ne 0 ]]; then
    echo "install-deps: missing packages (${missing[*]}); run this script as root" >&2
    exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
