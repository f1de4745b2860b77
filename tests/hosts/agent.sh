#!/bin/bash
# SPDX-License-Identifier: Apache-2.0
# The launcher agent of the emulated hosts (README.md), in ssh's place:
#   agent.sh [SSH OPTIONS] [USER@]HOST COMMAND...
# Open MPI runs it as its rsh agent (--mca plm_rsh_agent agent.sh), MPICH's Hydra through
# -launcher ssh -launcher-exec agent.sh. HOST is a host's address (hosts.sh). Like sshd, it runs
# COMMAND (its words joined by spaces) with /bin/sh -c in a fresh environment, here inside the
# host: its network namespace, a UTS namespace with its hostname, and a mount namespace in which
# /tmp is the host's own directory and /etc/hosts the set's (the hosts and the launching node).
set -u
base=${GHOST_HOSTS_ROOT:-/var/tmp/ghost-hosts}
while [ $# -gt 0 ]; do
  case $1 in
  -[BbcDEeFIiJLlmOopQRSWw]) shift 2 ;; # ssh options that take a value
  --) shift; break ;;
  -*) shift ;;
  *) break ;;
  esac
done
[ $# -ge 1 ] || { echo "agent.sh: no host" >&2; exit 255; }
host=${1#*@}
shift
file=""
for f in "$base"/*/host-"$host"; do [ -f "$f" ] && file=$f && break; done
[ -n "$file" ] || { echo "agent.sh: $host: no such emulated host" >&2; exit 255; }
read -r ns name tmp <"$file"
# A host that hangs (hosts_hang): nothing starts.
[ -e "${file%/*}/h${name##*-h}/hang" ] && exec sleep 100000
# A slow host (hosts_slow): what runs on it shares its CPU cgroup's quota.
cgfile=${file%/*}/h${name##*-h}/cgroup
if [ -f "$cgfile" ]; then
  echo $$ >"$(cat "$cgfile")/cgroup.procs" || { echo "agent.sh: $host: cannot enter its CPU cgroup" >&2; exit 255; }
fi
# `ip netns exec` enters the network namespace in a mount namespace of its own (a slave of the
# root's): the bind of /tmp stays inside.
# Paths under /tmp that every host keeps seeing (hosts.sh: the project's and build trees) are bound
# into the host's /tmp directory first, and come along with it (--rbind).
exec ip netns exec "$ns" unshare --uts /bin/sh -c '
  hostname "$1" || exit 255
  while read -r keep; do
    [ -d "$keep" ] || continue
    mkdir -p "$2/${keep#/tmp/}" && mount --bind "$keep" "$2/${keep#/tmp/}" || exit 255
  done <"$4"
  mount --rbind "$2" /tmp && mount --bind "$3" /etc/hosts || exit 255
  shift 4
  cd "$HOME" 2>/dev/null
  exec env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME="$HOME" \
    USER="$(id -un)" LOGNAME="$(id -un)" SHELL=/bin/sh /bin/sh -c "$*"' agent "$name" "$tmp" "${file%/*}/etc-hosts" "${file%/*}/keep" "$@"
