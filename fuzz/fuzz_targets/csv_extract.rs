//! The CSV extract reader: record splitter, strict quoting, typed parse and hashing, with and
//! without quoted line breaks (the first input byte chooses).
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Some((first, rest)) = data.split_first() {
        tributary::fuzzing::csv_extract(rest, first & 1 == 1);
    }
});
