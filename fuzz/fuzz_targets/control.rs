//! Control requests built from the bytes, in sequence, to a control thread with no dataplane: every
//! request gets an answer that serializes (the ones that need the dataplane say it has stopped), none
//! panics, a refused change leaves the policy in force as it was, and an accepted one moves the
//! generation by one. The raw bytes are tried as a JSON request line too.
#![no_main]

use daemon::control::{Control, Request, Response, WireChange};
use daemon::trace::TraceSpec;
use engine::Engine;
use libfuzzer_sys::fuzz_target;

const SEED: &str = include_str!("../../examples/seed-lab/v1-policy.dfw");
const FILTERS: [&str; 3] =
    ["nic-5739119-eth35-vmware-sfw.1", "nic-5739119-eth33-vmware-sfw.1", "nic-5739001-eth33-vmware-sfw.1"];
const SETS: [&str; 2] = ["105ee703-a9f2-4a5c-bf48-e56338b44a97", "9a0c2b94-3a78-42af-9d38-a2432cc89a00"];

/// Takes pieces of the input: bytes, and strings up to the next 0xff.
struct Input<'a>(&'a [u8]);

impl Input<'_> {
    fn byte(&mut self) -> u8 {
        let (b, rest) = self.0.split_first().map_or((0, &[][..]), |(b, r)| (*b, r));
        self.0 = rest;
        b
    }
    fn text(&mut self) -> String {
        let end = self.0.iter().position(|&b| b == 0xff).unwrap_or(self.0.len());
        let s = String::from_utf8_lossy(&self.0[..end]).into_owned();
        self.0 = self.0.get(end + 1..).unwrap_or(&[]);
        s
    }
    /// A known name most of the time, else anything.
    fn name(&mut self, known: &[&str]) -> String {
        match self.byte() as usize % (known.len() + 1) {
            i if i < known.len() => known[i].to_string(),
            _ => self.text(),
        }
    }
    /// Members: addresses, prefixes and MACs from the bytes, or any text.
    fn addrs(&mut self) -> Vec<String> {
        (0..self.byte() % 4)
            .map(|_| match self.byte() % 5 {
                0 => format!("10.{}.{}.{}", self.byte(), self.byte(), self.byte()),
                1 => format!("172.15.0.{}/{}", self.byte(), self.byte() % 40),
                2 => format!("2001:db8::{:x}/{}", self.byte(), self.byte() % 140),
                3 => format!("00:50:56:00:00:{:02x}", self.byte()),
                _ => self.text(),
            })
            .collect()
    }
    fn request(&mut self) -> Request {
        let filter = |i: &mut Self| i.name(&FILTERS);
        match self.byte() % 14 {
            0 => Request::Summarize,
            1 => Request::Getfilters,
            2 => Request::Getrules { filter: filter(self) },
            3 => Request::Getaddrsets { filter: filter(self) },
            4 => Request::Getflows { filter: filter(self) },
            5 => Request::Getfilterstat { filter: filter(self) },
            6 => Request::Rulestats { filter: filter(self) },
            7 => Request::Gettimeout { filter: filter(self) },
            8 => Request::Load { filter: filter(self), name: "fuzz.dfw".into(), text: self.text() },
            9 => Request::Addrset { op: self.name(&["add", "del"]), set: self.name(&SETS), addrs: self.addrs() },
            10 => Request::FlowsFlush { filter: filter(self) },
            11 => {
                let ip = |i: &mut Self| -> std::net::IpAddr {
                    if i.byte() % 2 == 0 {
                        [172, 15, 0, i.byte()].into()
                    } else {
                        std::net::Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, u16::from(i.byte())).into()
                    }
                };
                let (src, dst) = (ip(self), ip(self));
                let proto = self.name(&["tcp", "udp", "icmp", "ipv6-icmp", "6", "17"]);
                let port = |i: &mut Self| (i.byte() % 2 == 0).then(|| u16::from_be_bytes([i.byte(), i.byte()]));
                Request::Trace(TraceSpec { src, dst, proto, sport: port(self), dport: port(self) })
            }
            _ => {
                let changes = (0..self.byte() % 4)
                    .map(|_| match self.byte() % 3 {
                        0 => WireChange::AddrsetAdd { set: self.name(&SETS), addrs: self.addrs() },
                        1 => WireChange::AddrsetDel { set: self.name(&SETS), addrs: self.addrs() },
                        _ => WireChange::Policy { name: "fuzz.dfw".into(), text: self.text() },
                    })
                    .collect();
                Request::Commit { changes }
            }
        }
    }
}

fn changes(req: &Request) -> bool {
    matches!(
        req,
        Request::Load { .. } | Request::Addrset { .. } | Request::Commit { .. } | Request::FlowsFlush { .. }
    )
}

fn answered(ctl: &mut Control, req: Request) -> Response {
    let change = changes(&req);
    let (before, generation) = (ctl.engine.policy().clone(), ctl.engine.generation());
    let r = ctl.handle(req.clone());
    serde_json::to_vec(&r).expect("an answer serializes");
    assert_eq!(r.ok, r.error.is_none(), "{req:?}: {r:?}");
    if !r.ok {
        assert!(!r.error.as_deref().unwrap_or_default().is_empty(), "{req:?}: an empty error");
    }
    if !change || !r.ok {
        assert_eq!(ctl.engine.generation(), generation, "{req:?} moved the generation: {r:?}");
        assert!(*ctl.engine.policy() == before, "{req:?} changed the policy: {r:?}");
    } else if !matches!(req, Request::FlowsFlush { .. }) {
        assert_eq!(ctl.engine.generation(), generation + 1, "{req:?}: {r:?}");
    }
    r
}

fuzz_target!(|data: &[u8]| {
    let engine = Engine::new(&rules::parse_policy(SEED).expect("seed policy")).expect("seed engine");
    // No dataplane: the receiver is gone, so a request that needs it is answered with an error.
    let (jobs, _) = crossbeam_channel::unbounded();
    let mut ctl = Control { engine, ports: Vec::new(), jobs };
    if let Ok(req) = serde_json::from_slice::<Request>(data) {
        answered(&mut ctl, req);
    }
    let mut input = Input(data);
    for _ in 0..6 {
        if input.0.is_empty() {
            break;
        }
        let req = input.request();
        answered(&mut ctl, req);
    }
});
