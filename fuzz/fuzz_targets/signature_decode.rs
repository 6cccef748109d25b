#![no_main]

include!("../targets/signature_decode_body.rs");

libfuzzer_sys::fuzz_target!(|data: &[u8]| run(data));
