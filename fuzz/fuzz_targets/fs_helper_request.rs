//! Fuzz target `fs_helper_request`: see `codex::fuzzing::fs_helper_request` and docs/fuzzing.md.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| codex::fuzzing::fs_helper_request(data));
