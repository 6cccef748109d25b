#![no_main]

include!("../targets/npy_read_body.rs");

libfuzzer_sys::fuzz_target!(|data: &[u8]| run(data));
