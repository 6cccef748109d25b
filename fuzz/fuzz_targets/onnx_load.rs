#![no_main]

include!("../targets/onnx_load_body.rs");

libfuzzer_sys::fuzz_target!(|data: &[u8]| run(data));
