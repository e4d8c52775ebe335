//! The Debezium JSON-lines event reader (envelopes, flattened events, typed values).
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    tributary::fuzzing::debezium_json(data);
});
