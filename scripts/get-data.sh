#!/usr/bin/env bash
# Make Fashion-MNIST available: Debian's dataset-fashion-mnist package where apt-get exists,
# else (or if that fails) the verified download into the user cache.
set -uo pipefail
fr=${1:-fittingroom}
if command -v apt-get >/dev/null 2>&1; then
  sudo=""
  [ "$(id -u)" = 0 ] || sudo="sudo -n"
  apt-cache show dataset-fashion-mnist >/dev/null 2>&1 || $sudo apt-get update -qq
  echo "Installing Debian's dataset-fashion-mnist package" >&2
  if $sudo apt-get install -y -q dataset-fashion-mnist >/dev/null && "$fr" data info >/dev/null; then
    exit 0
  fi
  echo "Could not install the Debian package; downloading instead" >&2
fi
exec "$fr" data download --dataset fashion-mnist
