#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| coi_proxy::fuzzing::peer_frames(data));
