//! Fuzz target `path_uri`: see `codex::fuzzing::path_uri` and docs/fuzzing.md.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| codex::fuzzing::path_uri(data));
