//! The config loaders: a `run` table config and a `sync` tables file.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    tributary::fuzzing::config(data);
});
