//! Any bytes on any link type: frame parsing returns a summary or a typed error, never panics.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pktio::LinkType;

fuzz_target!(|data: &[u8]| {
    let Some((&which, frame)) = data.split_first() else { return };
    let link = [
        LinkType::Ethernet,
        LinkType::LinuxSll,
        LinkType::LinuxSll2,
        LinkType::Raw,
        LinkType::Ipv4,
        LinkType::Ipv6,
    ][usize::from(which) % 6];
    let _ = pktio::parse_frame(link, frame, frame.len() as u32);
});
