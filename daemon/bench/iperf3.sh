#!/usr/bin/env bash
# iperf3 TCP between two network namespaces, three ways, in one run (issue 7's benchmark):
#   1. through `dfw run` (taps with virtio-net headers, allow rule + established tracking),
#   2. through kernel routing with an nftables stateful filter (veth pairs, a router namespace),
#   3. through Open vSwitch's userspace datapath (datapath_type=netdev, AF_PACKET on veth) with ct() flows:
#      a private ovsdb-server + ovs-vswitchd (own database and run directory under $DIR) started in
#      namespace dfwb-o, never the host's OVS; transmit checksum offload off in the two end namespaces.
# Needs root, iperf3, nft, ethtool and Open vSwitch (ovsdb-server, ovs-vswitchd, ovs-vsctl, ovs-ofctl);
# missing ones are installed with apt-get when it is there. Everything lives in namespaces named dfwb-*
# and is removed on exit, with the OVS daemons the script started.
# Usage: daemon/bench/iperf3.sh [SECONDS]   (DFW=path/to/dfw to skip the release build)
set -euo pipefail
T=${1:-10}
cd "$(dirname "$0")/../.."
if [ -z "${DFW:-}" ]; then
  cargo build --release -q -p dfw
  DFW=${CARGO_TARGET_DIR:-target}/release/dfw
fi
NEED=
command -v iperf3 >/dev/null || NEED="$NEED iperf3"
command -v nft >/dev/null || NEED="$NEED nftables"
command -v ethtool >/dev/null || NEED="$NEED ethtool"
command -v ovs-vswitchd >/dev/null || NEED="$NEED openvswitch-switch"
if [ -n "$NEED" ] && command -v apt-get >/dev/null; then
  apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q $NEED >/dev/null || true
fi
DIR=$(mktemp -d /tmp/dfwb.XXXXXX)
OVSD=$DIR/ovs
DFW_PID=
cleanup() {
  [ -n "$DFW_PID" ] && kill "$DFW_PID" 2>/dev/null && wait "$DFW_PID" 2>/dev/null || true
  if [ -S "$OVSD/db.sock" ] && [ -f "$OVSD/ovs-vswitchd.pid" ]; then
    timeout 10 ovs-vsctl --db="unix:$OVSD/db.sock" --timeout=5 --if-exists del-br dfwb-obr 2>/dev/null || true
  fi
  for d in ovs-vswitchd ovsdb-server; do # only the daemons this script started (their pidfiles)
    [ -f "$OVSD/$d.pid" ] && kill "$(cat "$OVSD/$d.pid")" 2>/dev/null || true
  done
  for ns in dfwb-c dfwb-s dfwb-r dfwb-nc dfwb-ns dfwb-o dfwb-oc dfwb-os; do
    ip netns pids "$ns" 2>/dev/null | xargs -r kill 2>/dev/null || true # e.g. an iperf3 -s left waiting
    ip netns del "$ns" 2>/dev/null || true
  done
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

# 3. OVS userspace datapath (netdev) + ct(). Runs in a background subshell so that a failure here is
# reported instead of losing the two figures above; the trap above tears down whatever it left.
ovs_leg() {
  set -euo pipefail
  mkdir -p "$OVSD"
  # Everything OVS opens (db, control sockets, br.mgmt, logs) goes under $OVSD, not /var/run/openvswitch.
  export OVS_RUNDIR=$OVSD OVS_DBDIR=$OVSD OVS_LOGDIR=$OVSD OVS_SYSCONFDIR=$OVSD
  ip netns add dfwb-o; ip -n dfwb-o link set lo up
  ovsdb-tool create "$OVSD/conf.db" /usr/share/openvswitch/vswitch.ovsschema
  ip netns exec dfwb-o ovsdb-server "$OVSD/conf.db" --remote="punix:$OVSD/db.sock" \
    --pidfile="$OVSD/ovsdb-server.pid" --detach --log-file="$OVSD/ovsdb-server.log"
  ovs-vsctl --no-wait init
  ip netns exec dfwb-o ovs-vswitchd "unix:$OVSD/db.sock" \
    --pidfile="$OVSD/ovs-vswitchd.pid" --detach --log-file="$OVSD/ovs-vswitchd.log"
  ovs-vsctl --timeout=20 add-br dfwb-obr -- set bridge dfwb-obr datapath_type=netdev fail_mode=secure
  local i ns
  for i in c s; do
    ns=dfwb-o$i
    ip netns add $ns; ip -n $ns link set lo up
    ip link add dfwb-o${i}a type veth peer name dfwb-o${i}b
    ip link set dfwb-o${i}a netns $ns; ip link set dfwb-o${i}b netns dfwb-o
    ip -n dfwb-o link set dfwb-o${i}b up
    ip netns exec $ns ethtool -K dfwb-o${i}a tx off >/dev/null # CHECKSUM_PARTIAL would leave over AF_PACKET unfilled
    ovs-vsctl --timeout=20 add-port dfwb-obr dfwb-o${i}b
  done
  ip -n dfwb-oc link set dfwb-oca address 02:fb:00:00:01:01
  ip -n dfwb-os link set dfwb-osa address 02:fb:00:00:01:02
  ip -n dfwb-oc addr add 10.251.0.1/24 dev dfwb-oca; ip -n dfwb-oc link set dfwb-oca up
  ip -n dfwb-os addr add 10.251.0.2/24 dev dfwb-osa; ip -n dfwb-os link set dfwb-osa up
  # Same policy as the other legs: new connections only from the client to port 5201, committed to
  # conntrack; established traffic both ways; ARP switched; everything else dropped.
  ovs-ofctl add-flows dfwb-obr - <<'F'
table=0,priority=100,arp,actions=NORMAL
table=0,priority=90,ip,ct_state=-trk,actions=ct(table=1)
table=1,priority=100,ct_state=+trk+new,tcp,in_port=dfwb-ocb,nw_dst=10.251.0.2,tp_dst=5201,actions=ct(commit),NORMAL
table=1,priority=90,ct_state=+trk+est,ip,actions=NORMAL
table=1,priority=0,actions=drop
F
  run_iperf dfwb-oc dfwb-os 10.251.0.2 > "$DIR/ovs.gbps"
  ovs-ofctl dump-flows dfwb-obr | sed -n 's/^ *cookie=[^,]*, duration=[^,]*, \(table=.*\)$/  \1/p' >&2
  ip netns exec dfwb-o ovs-appctl -t "$OVSD/ovs-vswitchd.$(cat "$OVSD/ovs-vswitchd.pid").ctl" \
    dpctl/dump-conntrack | grep -c 5201 | sed 's/^/  OVS conntrack entries for port 5201 after the run: /' >&2 || true
}
if command -v ovs-vswitchd >/dev/null && command -v ethtool >/dev/null; then
  ( ovs_leg ) 2> "$DIR/ovs.err" & OVS_JOB=$!
  if wait "$OVS_JOB"; then
    OVS_G="$(cat "$DIR/ovs.gbps") Gbit/s"
    grep '^  ' "$DIR/ovs.err" >&2 || true # flow counters, conntrack entries (not OVS's start-up log lines)
  else
    OVS_G="failed: $(grep -v '^ *$' "$DIR/ovs.err" | tail -1)"
    sed 's/^/  ovs: /' "$DIR/ovs.err" >&2
  fi
else
  OVS_G="not measured (ovs-vswitchd or ethtool missing and could not be installed)"
fi

echo "iperf3 TCP, ${T}s, one stream:"
echo "  dfw run (taps, vnet_hdr, allow + established): ${DFW_G} Gbit/s"
echo "  kernel routing + nftables ct filter (veth):   ${NFT_G} Gbit/s"
echo "  OVS userspace datapath (netdev) + ct() (veth): ${OVS_G}"
