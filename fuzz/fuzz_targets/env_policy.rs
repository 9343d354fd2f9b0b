//! Fuzz target `env_policy`: see `codex::fuzzing::env_policy` and docs/fuzzing.md.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| codex::fuzzing::env_policy(data));
