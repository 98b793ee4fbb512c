//! Any bytes as a capture file: reading stops with a typed error or yields frames, never panics; and a
//! loop that reads whole pcap records itself (`Frames::next_from`) gets
//! exactly the items `next` alone gives.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(cap) = pktio::Capture::from_bytes(data.to_vec(), "fuzz.pcap") {
        let mut slow = Vec::new();
        for frame in cap.frames() {
            match frame {
                Ok(f) => {
                    let _ = pktio::parse_frame(f.link, f.data, f.wire_len);
                    slow.push(Ok(f));
                }
                Err(e) => {
                    slow.push(Err(e.to_string()));
                    break;
                }
            }
        }
        let mut it = cap.frames();
        let pcap = it.pcap_reader();
        let fast: Vec<_> = std::iter::from_fn(|| it.next_from(pcap)).map(|f| f.map_err(|e| e.to_string())).collect();
        assert_eq!(fast, slow);
    }
});
