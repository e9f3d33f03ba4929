#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| coi_proxy::fuzzing::coi_contacts(data));
