//! The server under test: this program re-run as `syncbench serve` in a child process, so its
//! memory is measured alone (peak RSS from `/proc`, reset before each workload).

use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::io::{AsyncBufReadExt, BufReader};

/// A server to send requests to.
pub struct Server {
    /// `http://127.0.0.1:PORT`.
    pub base_url: String,
    child: Option<tokio::process::Child>,
}

impl Server {
    /// A server started elsewhere; its memory is not measured.
    pub fn external(base_url: String) -> Self {
        Self { base_url: base_url.trim_end_matches('/').to_owned(), child: None }
    }

    /// Starts the server on port 0 over `db` and waits until it listens.
    pub async fn spawn(db: &str) -> anyhow::Result<Self> {
        Self::spawn_with(db, &[]).await
    }

    /// As [`Server::spawn`], with more arguments for `syncbench serve`.
    pub async fn spawn_with(db: &str, extra: &[&str]) -> anyhow::Result<Self> {
        let mut child = tokio::process::Command::new(std::env::current_exe()?)
            .args(["serve", "--db", db])
            .args(extra)
            .env("RUST_LOG", "warn,sync_server::startup=info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .context("starting the server")?;
        let mut lines = BufReader::new(child.stderr.take().context("server stderr")?).lines();
        let addr = tokio::time::timeout(Duration::from_secs(60), async {
            while let Some(line) = lines.next_line().await? {
                if let Some(addr) = sync_server::telemetry::listening_address(&line) {
                    return Ok(addr);
                }
                eprintln!("server: {line}");
            }
            bail!("the server exited before listening")
        })
        .await
        .context("the server did not listen within 60 s")??;
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Ok(Self { base_url: format!("http://{addr}"), child: Some(child) })
    }

    /// Resets the server's peak RSS, so the next [`Server::peak_rss_mb`] covers what follows.
    pub fn reset_peak_rss(&self) {
        if let Some(pid) = self.pid() {
            let _ = std::fs::write(format!("/proc/{pid}/clear_refs"), "5");
        }
    }

    /// The server's peak resident memory since the last reset, in MiB.
    pub fn peak_rss_mb(&self) -> Option<f64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()?)).ok()?;
        let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
        let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kb / 1024.0)
    }

    /// The server's resident memory now, in MiB.
    pub fn rss_mb(&self) -> Option<f64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()?)).ok()?;
        let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
        let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kb / 1024.0)
    }

    fn pid(&self) -> Option<u32> {
        self.child.as_ref().and_then(|c| c.id())
    }

    /// Stops the server.
    pub fn stop(&self) {
        if let Some(pid) = self.pid() {
            let _ = std::process::Command::new("kill").arg(pid.to_string()).status();
        }
    }

    /// Stops the server and waits until its process has exited (at most 30 s), so that nothing
    /// of it runs during what follows.
    pub async fn stop_and_wait(mut self) {
        self.stop();
        if let Some(child) = self.child.as_mut() {
            let _ = tokio::time::timeout(Duration::from_secs(30), child.wait()).await;
        }
    }
}
