// Shared by the `signature_decode` fuzz target and
// runtime/tests/fuzz_corpus.rs, so that every saved input is replayed by
// `cargo test` exactly as it was fuzzed.

use mpinfer_collectives::check::{checksum, Signature, WIRE_BYTES};

/// Decodes `data` as received, then again with its checksum made valid so
/// that the field decoding behind the checksum is reached too.
pub fn run(data: &[u8]) {
    round_trip(data);
    if data.len() >= WIRE_BYTES - 8 {
        let mut w = [0u8; WIRE_BYTES];
        w[..WIRE_BYTES - 8].copy_from_slice(&data[..WIRE_BYTES - 8]);
        let sum = checksum(&w[..WIRE_BYTES - 8]);
        w[WIRE_BYTES - 8..].copy_from_slice(&sum.to_le_bytes());
        round_trip(&w);
    }
}

/// Whatever decodes must encode back to the same bytes: two ranks compare
/// signatures by their decoded fields, so a lossy decode could make
/// different calls look equal.
fn round_trip(w: &[u8]) {
    if let Some(s) = Signature::decode(w) {
        assert_eq!(
            &s.encode()[..],
            w,
            "{s:?} does not encode back to its bytes"
        );
        let _ = s.to_string();
    }
}
