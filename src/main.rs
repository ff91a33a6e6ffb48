//! The `switchboard` binary: parse flags, load config, run until SIGTERM/SIGINT.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use switchboard::{Config, Supervisor};

/// jemalloc for Rust and, unprefixed, for RocksDB's C++ too: the ingest path allocates and frees
/// many small buffers across threads, where glibc's malloc spent ~13 % of the machine in the
/// ingest profile (`_int_malloc`, `malloc_consolidate`); stop 11, in `git log -p -- BENCHMARKS.md`.
#[cfg(not(target_env = "msvc"))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

// jemalloc purges idle memory on a background thread within about a second (`switchboard::alloc`).
switchboard::jemalloc_conf!();

/// Durable WhatsApp Business API broker for teams of agents.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    /// Config file (TOML).
    #[arg(long, default_value = "config/default.toml")]
    config: PathBuf,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let config = match Config::load(&cli.config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("cannot start runtime: {e}");
            return ExitCode::from(1);
        }
    };
    runtime.block_on(async move {
        // Handlers go in before the listeners serve: once `/healthz` answers, a SIGINT or SIGTERM
        // must mean a clean shutdown, never the default action (death without a flush).
        let shutdown = match ShutdownSignals::install() {
            Ok(s) => s,
            Err(e) => {
                eprintln!("cannot install signal handlers: {e}");
                return ExitCode::from(1);
            }
        };
        let supervisor = match Supervisor::start(config).await {
            Ok(s) => s,
            Err(e) => {
                // One line, whatever the error's source (RocksDB's messages included) printed.
                let line = e.to_string();
                eprintln!("{}", line.split_whitespace().collect::<Vec<_>>().join(" "));
                // What only a config change can fix is a config error (exit 2, as the contract
                // asks: `storage.path` unusable included); anything else (a store that will not
                // open, threads) is a start-up failure (exit 1).
                return ExitCode::from(if e.is_config() { 2 } else { 1 });
            }
        };
        // Once started, so a config error stays the one line on stderr.
        switchboard::alloc::log_settings();
        supervisor
            .run(async {
                shutdown.recv().await;
                tracing::info!("shutting down");
            })
            .await;
        ExitCode::SUCCESS
    })
}

/// SIGTERM and SIGINT, registered with the OS when installed rather than when first awaited.
struct ShutdownSignals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl ShutdownSignals {
    fn install() -> std::io::Result<Self> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(Self {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
        })
    }

    async fn recv(mut self) {
        tokio::select! {
            _ = self.term.recv() => {}
            _ = self.int.recv() => {}
        }
    }
}
