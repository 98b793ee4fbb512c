//! Times the pass `FilterState::advance_generation` makes over a filter's connections when the policy
//! generation enters a new quarter of the 16-bit range: a table of 1,000,000 UDP connections, the same
//! per-entry arithmetic through `FlowTable::for_each_value_mut`, five times
//! (`cargo run --release -p dfw-engine --example generation_sweep`).

use engine::conntrack::{Conn, ProtoState};
use engine::flow::{Endpoint, FlowKey};
use engine::table::FlowTable;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let t = engine::config::Timeouts::default();
    let mut table: FlowTable<Conn> = FlowTable::new(1 << 20);
    let ep = |a: u32, port: u16| Endpoint::new(std::net::Ipv4Addr::from(a).into(), port);
    let datagram = ProtoState::Datagram { replied: false, repeated: false };
    for i in 0..1_000_000u32 {
        let key = FlowKey::new(17, ep(0x0a00_0000 | i >> 8, i as u16), ep(0x0b00_0001, 53)).0;
        let (c, _) = Conn::open(datagram, true, 1, u64::from(i), false, false, 0, &t);
        table.insert(key, c, u32::MAX).map_err(|_| "table full")?;
    }
    // From generation 7 to 20,000 (a new quarter): entries 2^15 or more behind are marked 2^15 behind.
    let (was16, now16, moved) = (7u16, 20_000u16, 19_993u64);
    for _ in 0..5 {
        let start = std::time::Instant::now();
        table.for_each_value_mut(|conn| {
            let behind = u64::from(was16.wrapping_sub(conn.generation())) + moved;
            if behind >= 1 << 15 {
                conn.set_generation(now16.wrapping_sub(1 << 15));
            }
        });
        println!("{:.2} ms for {} connections", start.elapsed().as_secs_f64() * 1e3, table.len());
    }
    Ok(())
}
