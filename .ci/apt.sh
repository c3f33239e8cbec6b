# Sourced by the scripts that install what the tests and benchmarks need
# (.ci/*.sh, bench/run.sh).
#
#   apt_install [--no-start] TAG PACKAGE...
#
# installs Debian packages with apt-get when run as root, as on CI's fresh
# machine; anyone else is told what to install, and it fails. TAG starts
# its messages. --no-start keeps the packages' services from starting
# (a policy-rc.d that says no, for the install only, unless the machine
# has a policy of its own): the tests run their own Prometheus, nginx and
# HAProxy on free ports, and a service would hold its package's port.
apt_install() {
  local no_start=
  if [[ ${1:-} == --no-start ]]; then
    no_start=1
    shift
  fi
  local tag=$1
  shift
  if [[ $(id -u) -ne 0 ]]; then
    echo "$tag: $* missing; install it (apt-get install $*)" >&2
    return 1
  fi
  echo "$tag: installing $*" >&2
  local policy=/usr/sbin/policy-rc.d own_policy= rc=0
  if [[ -n $no_start && ! -e $policy ]]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy"
    chmod 755 "$policy"
    own_policy=1
    trap 'rm -f /usr/sbin/policy-rc.d' EXIT
  fi
  {
    DEBIAN_FRONTEND=noninteractive apt-get update -qq &&
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@"
  } >&2 || rc=$?
  if [[ -n $own_policy ]]; then
    rm -f "$policy"
    trap - EXIT
  fi
  if ((rc != 0)); then
    echo "$tag: apt-get install $* failed (exit $rc)" >&2
  fi
  return "$rc"
}
