//! Fuzz target `frames`: see `codex::fuzzing::frames` and docs/fuzzing.md.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| codex::fuzzing::frames(data));
