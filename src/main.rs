//! Entry point: dispatch on the name the binary was started under, before any flag is parsed.

// Measurement builds only (issue 15, Cargo.toml [features]): an allocator that returns memory by
// itself. jemalloc's background purge needs `_RJEM_MALLOC_CONF=background_thread:true`.
#[cfg(feature = "alloc-mimalloc")]
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;
#[cfg(all(feature = "alloc-jemalloc", not(feature = "alloc-mimalloc")))]
#[global_allocator]
static ALLOC: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> std::process::ExitCode {
    codex::arg0::dispatch()
}
