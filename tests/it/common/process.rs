//! The broker as a real process (`switchboard --config …`), for signals, exit codes and limits.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::api::Api;

pub fn bin_path() -> &'static str {
    env!("CARGO_BIN_EXE_switchboard")
}

pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

pub struct BinProc {
    pub child: Child,
    pub api: Api,
    pub log: PathBuf,
}

impl BinProc {
    /// Spawns `switchboard --config <config>` (stderr to `log`) and waits for /healthz 200.
    pub async fn spawn(config: &Path, port: u16, log: &Path) -> BinProc {
        let logf = std::fs::File::create(log).unwrap();
        let child = Command::new(bin_path())
            .arg("--config")
            .arg(config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(logf))
            .spawn()
            .expect("spawn switchboard");
        let mut p = BinProc {
            child,
            api: Api::from_base(format!("http://127.0.0.1:{port}")),
            log: log.to_path_buf(),
        };
        p.wait_healthy(Duration::from_secs(30)).await;
        p
    }

    /// As [`BinProc::spawn`], with the child's soft limit on open files set to `soft`.
    pub async fn spawn_with_nofile(config: &Path, port: u16, log: &Path, soft: u64) -> BinProc {
        use std::os::unix::process::CommandExt;
        let logf = std::fs::File::create(log).unwrap();
        let mut cmd = Command::new(bin_path());
        cmd.arg("--config")
            .arg(config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(logf));
        // SAFETY: only async-signal-safe calls (getrlimit/setrlimit) between fork and exec.
        unsafe {
            cmd.pre_exec(move || {
                let mut lim = libc::rlimit {
                    rlim_cur: 0,
                    rlim_max: 0,
                };
                if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                lim.rlim_cur = soft;
                if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd.spawn().expect("spawn switchboard");
        let mut p = BinProc {
            child,
            api: Api::from_base(format!("http://127.0.0.1:{port}")),
            log: log.to_path_buf(),
        };
        p.wait_healthy(Duration::from_secs(30)).await;
        p
    }

    pub async fn wait_healthy(&mut self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(st)) = self.child.try_wait() {
                panic!(
                    "switchboard exited early with {st}; log:\n{}",
                    self.log_text()
                );
            }
            if self.api.healthz().await == 200 {
                return;
            }
            if Instant::now() > deadline {
                panic!(
                    "switchboard not healthy within {timeout:?}; log:\n{}",
                    self.log_text()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGKILL and reap.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Sends a signal with kill(1) (e.g. "TERM") and waits for exit with a deadline.
    pub async fn signal_and_wait(
        &mut self,
        sig: &str,
        timeout: Duration,
    ) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        let st = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(&pid)
            .status()
            .unwrap();
        assert!(st.success(), "kill -{sig} {pid} failed");
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                return st;
            }
            if Instant::now() > deadline {
                self.kill9();
                panic!(
                    "switchboard did not exit within {timeout:?} after SIG{sig}; log:\n{}",
                    self.log_text()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for BinProc {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
