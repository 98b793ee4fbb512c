//! Any bytes as a capture file: reading stops with a typed error or yields frames, never panics.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(cap) = pktio::Capture::from_bytes(data.to_vec(), "fuzz.pcap") {
        for frame in cap.frames() {
            match frame {
                Ok(f) => {
                    let _ = pktio::parse_frame(f.link, f.data, f.wire_len);
                }
                Err(_) => break,
            }
        }
    }
});
