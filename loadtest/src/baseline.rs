//! The `--baseline` target: a trivial HTTP server that reads each request body and answers 200.
//!
//! It is driven by the same generator, in the same mode and for the same duration as the broker,
//! so `broker throughput / baseline throughput` says how much of the machine's HTTP capacity the
//! broker keeps while doing durable work. It binds 127.0.0.1:0 only and holds no state.
//!
//! Where it runs ([`BaselineMode`]): by default in a process of its own (this binary re-executed
//! with `--serve-baseline`, on tokio's default multi-threaded runtime), because that is how the
//! broker runs: its requests cross a process boundary and its threads compete with the
//! generator's. `in-process` serves it from the generator's own runtime, where a request and its
//! answer can be handled by the same worker thread without a wake-up in between; it was the only
//! mode until stop 10 (on the 2-core VM both measured about the same, see BENCHMARKS.md).
//!
//! The child never outlives the run: it is killed when [`Baseline`] is dropped and, on Linux,
//! also when the spawning thread ends (`PR_SET_PDEATHSIG`).

use std::io::{BufRead as _, BufReader, Write as _};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, ChildStdout, Command, ExitCode, Stdio};

use anyhow::{anyhow, Context as _};
use axum::http::StatusCode;
use axum::Router;
use bytes::Bytes;
use clap::ValueEnum;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::broker_process::die_with_parent;

/// The first line a `--serve-baseline` process prints: this prefix, then its address.
const READY_PREFIX: &str = "baseline listening on ";

/// Where the trivial server runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum BaselineMode {
    /// A process of its own, as the broker is.
    Process,
    /// A task on the load generator's own runtime.
    InProcess,
}

impl BaselineMode {
    /// The name `--baseline-mode` takes, for the report.
    pub fn as_str(self) -> &'static str {
        match self {
            BaselineMode::Process => "process",
            BaselineMode::InProcess => "in-process",
        }
    }
}

enum Running {
    Task(JoinHandle<()>),
    Child(Child),
}

/// A running baseline server.
pub struct Baseline {
    pub addr: SocketAddr,
    running: Running,
}

/// Binds 127.0.0.1:0 and serves the trivial router on the current runtime.
async fn serve() -> anyhow::Result<(SocketAddr, JoinHandle<()>)> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let app = Router::new().fallback(|body: Bytes| async move {
        std::hint::black_box(body.len());
        StatusCode::OK
    });
    let task = tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            eprintln!("baseline server stopped: {e}");
        }
    });
    Ok((addr, task))
}

impl Baseline {
    /// Starts the server in `mode`; `exe` is the load generator's binary (for `Process`).
    pub async fn start(mode: BaselineMode, exe: &Path) -> anyhow::Result<Baseline> {
        match mode {
            BaselineMode::InProcess => {
                let (addr, task) = serve().await?;
                Ok(Baseline {
                    addr,
                    running: Running::Task(task),
                })
            }
            BaselineMode::Process => {
                // Spawned from this runtime thread, not from the blocking pool:
                // PR_SET_PDEATHSIG fires when the spawning *thread* ends, and an idle pool thread
                // ends after 10 s, which killed the server halfway through a 20 s run.
                let mut child = spawn_child(exe)?;
                let stdout = child.stdout.take();
                let ready = match tokio::task::spawn_blocking(move || read_ready(stdout)).await {
                    Ok(r) => r,
                    Err(e) => Err(anyhow::Error::from(e)),
                };
                match ready {
                    Ok(addr) => Ok(Baseline {
                        addr,
                        running: Running::Child(child),
                    }),
                    Err(e) => {
                        let _ = child.kill();
                        let _ = child.wait();
                        Err(e)
                    }
                }
            }
        }
    }

    /// Same path as the broker's webhook endpoint.
    pub fn webhook_url(&self) -> String {
        format!("http://{}/webhooks/whatsapp", self.addr)
    }
}

/// Starts `exe --serve-baseline` with its stdout piped (fork and exec: brief).
fn spawn_child(exe: &Path) -> anyhow::Result<Child> {
    let mut cmd = Command::new(exe);
    cmd.arg("--serve-baseline")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    die_with_parent(&mut cmd);
    cmd.spawn()
        .with_context(|| format!("starting the baseline server {}", exe.display()))
}

/// Reads the child's first stdout line: [`READY_PREFIX`] and its address. Blocking.
fn read_ready(out: Option<ChildStdout>) -> anyhow::Result<SocketAddr> {
    let out = out.ok_or_else(|| anyhow!("baseline server has no stdout"))?;
    let mut line = String::new();
    BufReader::new(out).read_line(&mut line)?;
    let addr = line
        .trim()
        .strip_prefix(READY_PREFIX)
        .ok_or_else(|| anyhow!("baseline server did not start (printed {:?})", line.trim()))?;
    addr.parse()
        .with_context(|| format!("baseline server printed a bad address {addr:?}"))
}

impl Drop for Baseline {
    fn drop(&mut self) {
        match &mut self.running {
            Running::Task(t) => t.abort(),
            Running::Child(c) => {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }
}

/// `--serve-baseline`: serve the trivial router on tokio's default runtime, print
/// [`READY_PREFIX`] and the address on stdout, and run until killed.
pub fn serve_forever() -> ExitCode {
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    rt.block_on(async {
        match serve().await {
            Ok((addr, task)) => {
                let mut out = std::io::stdout();
                if writeln!(out, "{READY_PREFIX}{addr}")
                    .and_then(|()| out.flush())
                    .is_err()
                {
                    return ExitCode::from(1);
                }
                let _ = task.await;
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: baseline server: {e:#}");
                ExitCode::from(1)
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn in_process_baseline_answers_200() {
        let bl = Baseline::start(BaselineMode::InProcess, Path::new("unused"))
            .await
            .unwrap();
        let resp = reqwest::Client::new()
            .post(bl.webhook_url())
            .body("{}")
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
    }

    /// PR_SET_PDEATHSIG follows the spawning thread: a child spawned from a blocking-pool thread
    /// died when that thread went idle (10 s), halfway through a 20 s baseline run.
    #[test]
    fn the_child_outlives_the_blocking_thread_that_read_its_address() {
        use std::os::unix::fs::PermissionsExt as _;
        use std::time::Duration;

        let dir = tempfile::tempdir().unwrap();
        let exe = dir.path().join("fake-baseline");
        std::fs::write(
            &exe,
            "#!/bin/sh\necho 'baseline listening on 127.0.0.1:9'\nexec sleep 30\n",
        )
        .unwrap();
        std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).unwrap();
        // Keeps a concurrent fork in another test from holding the script open as we exec it.
        std::thread::sleep(Duration::from_millis(50));
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_keep_alive(Duration::from_millis(10))
            .enable_all()
            .build()
            .unwrap();
        let mut bl = rt
            .block_on(Baseline::start(BaselineMode::Process, &exe))
            .unwrap();
        assert_eq!(bl.addr, "127.0.0.1:9".parse().unwrap());
        // Long after the pool thread that read the address has ended:
        std::thread::sleep(Duration::from_millis(300));
        let Running::Child(child) = &mut bl.running else {
            panic!("a process baseline runs a child");
        };
        assert!(child.try_wait().unwrap().is_none(), "the child still runs");
        drop(bl);
        drop(rt);
    }

    #[tokio::test]
    async fn a_child_that_prints_no_address_is_an_error() {
        // `true` exits at once without printing: the start must fail, not hang.
        let err = Baseline::start(BaselineMode::Process, Path::new("true"))
            .await
            .err()
            .unwrap();
        assert!(err.to_string().contains("did not start"), "{err:#}");
    }
}
