//! Entry point: dispatch on the name the binary was started under, before any flag is parsed.

fn main() -> std::process::ExitCode {
    codex::arg0::dispatch()
}
