//! Fuzz target `sandbox_policy`: see `codex::fuzzing::sandbox_policy` and docs/fuzzing.md.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| codex::fuzzing::sandbox_policy(data));
