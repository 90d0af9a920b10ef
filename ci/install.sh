#!/usr/bin/env bash
# Installs what the test suite needs on a fresh Debian machine (idempotent).
set -euo pipefail
# ci/install.sh [--bench]   (--bench: also what ci/bench-cps.sh needs)
need_apt=()
command -v sipp >/dev/null 2>&1 || need_apt+=(sip-tester)
command -v etcd >/dev/null 2>&1 || need_apt+=(etcd-server)
command -v etcdctl >/dev/null 2>&1 || need_apt+=(etcd-client)
command -v protoc >/dev/null 2>&1 || need_apt+=(protobuf-compiler)
command -v baresip >/dev/null 2>&1 || need_apt+=(baresip)
[ -e /usr/include/google/protobuf/descriptor.proto ] || need_apt+=(libprotobuf-dev)
command -v openssl >/dev/null 2>&1 || need_apt+=(openssl)   # lb_streams: a self-signed certificate
if [ "${1:-}" = "--bench" ]; then
  command -v kamailio >/dev/null 2>&1 || need_apt+=(kamailio)
  command -v bc >/dev/null 2>&1 || need_apt+=(bc)
  command -v curl >/dev/null 2>&1 || need_apt+=(curl)
fi
if [ ${#need_apt[@]} -gt 0 ]; then
  # Do not let package scripts start services; tests start what they need themselves.
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
    chmod +x /usr/sbin/policy-rc.d
  fi
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need_apt[@]}"
fi
if [ "${1:-}" != "--bench" ] && ! cargo fuzz --version >/dev/null 2>&1; then
  cargo install cargo-fuzz --locked
fi
