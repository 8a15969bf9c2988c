//! The `gateway` binary: everything lives in the library; this only hands over the process.

// The proxy path allocates per request; mimalloc measured well ahead of glibc malloc for it.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    gateway::cli::main()
}
