//! The DMS CSV change-file reader (`Op`, commit timestamp, typed columns).
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    tributary::fuzzing::dms_csv(data);
});
