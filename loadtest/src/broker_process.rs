//! Lifecycle of a broker process the load test starts itself (`--broker-bin`).
//!
//! Invariants:
//! - the broker listens on a loopback port found by binding `127.0.0.1:0`, reading the port and
//!   dropping the listener (`free_loopback_port`); the port stays the same across restarts;
//! - start-up is only considered done when `GET /healthz` answers 200, polled every 50 ms up to a
//!   bounded deadline; if the child exits meanwhile, the error carries the tail of its log;
//! - a crash is `Child::kill` (SIGKILL) followed by reaping; a restart reuses the same binary,
//!   config and data directory; the broker's stdout/stderr are appended to one log file;
//! - the child never outlives us: it is killed on `Drop`, and on Linux it also gets
//!   `PR_SET_PDEATHSIG = SIGKILL` (children are spawned from runtime threads that live as long as
//!   the run). The normal end of a run is SIGTERM, a bounded wait, then SIGKILL.

use std::fs::OpenOptions;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use anyhow::{bail, Context};
use tokio::time::{sleep, Instant};

/// A free TCP port on 127.0.0.1 (bound, read, released).
pub fn free_loopback_port() -> anyhow::Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").context("binding 127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}

/// On Linux, the child started from `cmd` gets SIGKILL when the thread that spawned it ends, so
/// a child of ours never outlives the load test (the `Drop` kill covers orderly exits only).
pub fn die_with_parent(cmd: &mut Command) {
    #[cfg(target_os = "linux")]
    {
        use std::os::unix::process::CommandExt;
        // SAFETY: prctl is async-signal-safe and touches no memory of the parent.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = cmd;
}

/// How the broker ended at the end of the run.
#[derive(Debug, Clone)]
pub enum Shutdown {
    /// Exited by itself after SIGTERM, with this status.
    Graceful(String),
    /// Did not exit within the grace period and was SIGKILLed.
    Killed,
    /// Was not running.
    NotRunning,
}

/// A broker child process.
pub struct BrokerProcess {
    bin: PathBuf,
    config: PathBuf,
    log: PathBuf,
    pub base_url: String,
    child: Option<Child>,
    /// How many times it was started.
    pub starts: u32,
}

impl BrokerProcess {
    pub fn new(bin: &Path, config: &Path, log: &Path, base_url: String) -> Self {
        BrokerProcess {
            bin: bin.to_path_buf(),
            config: config.to_path_buf(),
            log: log.to_path_buf(),
            base_url,
            child: None,
            starts: 0,
        }
    }

    /// The running child's pid.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Spawns `bin --config CONFIG` (does not wait for health).
    pub fn start(&mut self) -> anyhow::Result<()> {
        if self.child.is_some() {
            bail!("broker already running");
        }
        let mut log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .with_context(|| format!("opening {}", self.log.display()))?;
        self.starts += 1;
        let _ = writeln!(log, "=== switchboard-loadtest: start #{} ===", self.starts);
        let mut cmd = Command::new(&self.bin);
        cmd.arg("--config")
            .arg(&self.config)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        die_with_parent(&mut cmd);
        let child = cmd
            .spawn()
            .with_context(|| format!("starting broker {}", self.bin.display()))?;
        self.child = Some(child);
        Ok(())
    }

    /// Polls `GET /healthz` until 200; fails if the child exits or the deadline passes.
    pub async fn wait_healthy(
        &mut self,
        client: &reqwest::Client,
        timeout: Duration,
    ) -> anyhow::Result<Duration> {
        let t0 = Instant::now();
        let deadline = t0 + timeout;
        let url = format!("{}/healthz", self.base_url);
        loop {
            match self.child.as_mut() {
                None => bail!("broker is not running"),
                Some(c) => {
                    if let Some(status) = c.try_wait()? {
                        self.child = None;
                        bail!(
                            "broker exited during start-up ({}); last log lines of {}:\n{}",
                            describe(status),
                            self.log.display(),
                            self.log_tail(20)
                        );
                    }
                }
            }
            let ok = client
                .get(&url)
                .timeout(Duration::from_secs(1))
                .send()
                .await
                .map(|r| r.status() == reqwest::StatusCode::OK)
                .unwrap_or(false);
            if ok {
                return Ok(t0.elapsed());
            }
            if Instant::now() >= deadline {
                bail!(
                    "broker did not answer GET /healthz with 200 within {:.1}s; last log lines of {}:\n{}",
                    timeout.as_secs_f64(),
                    self.log.display(),
                    self.log_tail(20)
                );
            }
            sleep(Duration::from_millis(50)).await;
        }
    }

    /// SIGKILL and reap.
    pub fn kill(&mut self) -> anyhow::Result<()> {
        if let Some(mut c) = self.child.take() {
            if c.try_wait()?.is_none() {
                c.kill()?;
            }
            c.wait()?;
        }
        Ok(())
    }

    /// SIGTERM, wait up to `grace`, then SIGKILL.
    pub async fn shutdown(&mut self, grace: Duration) -> Shutdown {
        let Some(mut c) = self.child.take() else {
            return Shutdown::NotRunning;
        };
        if let Ok(Some(status)) = c.try_wait() {
            return Shutdown::Graceful(format!("already exited: {}", describe(status)));
        }
        if let Ok(pid) = libc::pid_t::try_from(c.id()) {
            // SAFETY: plain kill(2) on our own child's pid, which has not been reaped yet.
            unsafe {
                libc::kill(pid, libc::SIGTERM);
            }
        }
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = c.try_wait() {
                return Shutdown::Graceful(describe(status));
            }
            sleep(Duration::from_millis(25)).await;
        }
        let _ = c.kill();
        let _ = c.wait();
        Shutdown::Killed
    }

    /// The last `n` lines of the broker's log.
    pub fn log_tail(&self, n: usize) -> String {
        match std::fs::read(&self.log) {
            Ok(bytes) => {
                let text = String::from_utf8_lossy(&bytes);
                let lines: Vec<&str> = text.lines().collect();
                lines[lines.len().saturating_sub(n)..].join("\n")
            }
            Err(e) => format!("(cannot read log: {e})"),
        }
    }
}

fn describe(status: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(c), _) => format!("exit code {c}"),
        (None, Some(s)) => format!("signal {s}"),
        _ => status.to_string(),
    }
}

impl Drop for BrokerProcess {
    fn drop(&mut self) {
        let _ = self.kill();
    }
}

/// CPU time (user + system) process `pid` has used so far, from `/proc/PID/stat`; None where
/// that is not readable (not Linux, process gone).
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    cpu_seconds_from_stat(&stat, clock_ticks_per_second()?)
}

/// utime + stime (fields 14 and 15) in seconds. The command name (field 2) is in parentheses and
/// may itself hold spaces or parentheses, so fields are counted from the last `)`.
fn cpu_seconds_from_stat(stat: &str, ticks_per_s: f64) -> Option<f64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace().skip(11);
    let utime: f64 = fields.next()?.parse().ok()?;
    let stime: f64 = fields.next()?.parse().ok()?;
    Some((utime + stime) / ticks_per_s)
}

fn clock_ticks_per_second() -> Option<f64> {
    // SAFETY: sysconf only reads a configuration value.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    (t > 0).then_some(t as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_port_is_usable() {
        let p = free_loopback_port().unwrap_or(0);
        assert!(p > 0);
        assert!(std::net::TcpListener::bind(("127.0.0.1", p)).is_ok());
    }

    #[test]
    fn cpu_seconds_counts_from_the_last_parenthesis() {
        // A command name with a space and a parenthesis; utime 250, stime 50 ticks.
        let stat = "4242 (we (ird) name) S 1 2 3 4 5 6 7 8 9 10 250 50 0 0 20 0 4 0 100";
        assert_eq!(cpu_seconds_from_stat(stat, 100.0), Some(3.0));
        assert_eq!(cpu_seconds_from_stat("4242 (short) S 1 2", 100.0), None);
    }

    #[test]
    fn cpu_seconds_of_this_process_grows_with_work() {
        let pid = std::process::id();
        let Some(before) = cpu_seconds(pid) else {
            panic!("/proc/{pid}/stat not readable");
        };
        let start = std::time::Instant::now();
        let mut x = 0u64;
        while cpu_seconds(pid).unwrap_or(before) <= before
            && start.elapsed() < Duration::from_secs(10)
        {
            for i in 0..1_000_000u64 {
                x = x.wrapping_mul(31).wrapping_add(i);
            }
            std::hint::black_box(x);
        }
        assert!(cpu_seconds(pid).unwrap_or(before) > before);
    }

    #[tokio::test]
    async fn reports_early_exit_with_log() {
        let dir = match tempfile::tempdir() {
            Ok(d) => d,
            Err(e) => panic!("{e}"),
        };
        // `false` exits 1 immediately, whatever its arguments.
        let mut b = BrokerProcess::new(
            Path::new("false"),
            &dir.path().join("c.toml"),
            &dir.path().join("broker.log"),
            "http://127.0.0.1:1".into(),
        );
        if let Err(e) = b.start() {
            panic!("{e}");
        }
        let client = reqwest::Client::builder()
            .no_proxy()
            .build()
            .unwrap_or_default();
        let r = b.wait_healthy(&client, Duration::from_secs(5)).await;
        let msg = match r {
            Ok(_) => panic!("should fail"),
            Err(e) => e.to_string(),
        };
        assert!(msg.contains("exit code 1"), "{msg}");
        assert!(matches!(
            b.shutdown(Duration::from_millis(10)).await,
            Shutdown::NotRunning
        ));
    }
}
