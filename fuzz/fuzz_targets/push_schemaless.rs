#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| sync_fuzz_checks::push::schemaless(data));
