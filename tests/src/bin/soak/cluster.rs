//! The server instances: the shipped binary as child processes over one store, killed with
//! SIGKILL and started again on the same port so that the proxies' next connections find it.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, bail};
use rand::Rng;
use sync_tests::with_dbname;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::Mutex;

/// One instance: its port stays the same across restarts.
pub struct Instance {
    /// Its loopback port.
    pub port: u16,
    up: AtomicBool,
    child: Mutex<Option<Child>>,
    log: PathBuf,
}

/// Every instance, and how to start one.
pub struct Cluster {
    /// The instances, in the order they were started.
    pub instances: Vec<Arc<Instance>>,
    server_bin: PathBuf,
    db_url: String,
    config: PathBuf,
    /// SIGKILLs sent.
    pub kills: AtomicU64,
}

impl Cluster {
    /// Starts `count` instances over `db_url` with the configuration file `config`; each one's
    /// log goes to `log_dir/instance-N.log`.
    pub async fn start(
        server_bin: &Path,
        db_url: &str,
        config: &Path,
        count: usize,
        log_dir: &Path,
    ) -> anyhow::Result<Self> {
        let mut instances = Vec::with_capacity(count);
        for n in 0..count {
            let log = log_dir.join(format!("instance-{n}.log"));
            let (child, port) = spawn(server_bin, db_url, config, 0, &log).await?;
            instances.push(Arc::new(Instance { port, up: AtomicBool::new(true), child: Mutex::new(Some(child)), log }));
        }
        Ok(Self {
            instances,
            server_bin: server_bin.to_owned(),
            db_url: db_url.to_owned(),
            config: config.to_owned(),
            kills: AtomicU64::new(0),
        })
    }

    /// A random instance that is up, for a new connection.
    pub fn pick_up(&self) -> Option<u16> {
        let up: Vec<u16> = self.instances.iter().filter(|i| i.up.load(Ordering::Relaxed)).map(|i| i.port).collect();
        (!up.is_empty()).then(|| up[rand::rng().random_range(0..up.len())])
    }

    /// Kills instance `n` with SIGKILL, waits `down` and starts it again on its port.
    pub async fn kill_and_restart(&self, n: usize, down: Duration) -> anyhow::Result<()> {
        let instance = &self.instances[n];
        instance.up.store(false, Ordering::Relaxed);
        {
            let mut child = instance.child.lock().await;
            if let Some(mut running) = child.take() {
                // `start_kill` is SIGKILL on Unix: no shutdown, no drain, as a crash.
                running.start_kill().context("SIGKILL")?;
                running.wait().await.context("waiting for a killed instance")?;
                self.kills.fetch_add(1, Ordering::Relaxed);
            }
        }
        tokio::time::sleep(down).await;
        self.restart(n).await
    }

    /// Starts instance `n` again on its port if it is not running. The port may be held for a
    /// moment by the killed process's sockets, so binding is tried a few times.
    pub async fn restart(&self, n: usize) -> anyhow::Result<()> {
        let instance = &self.instances[n];
        let mut child = instance.child.lock().await;
        if child.is_some() {
            return Ok(());
        }
        let mut last = None;
        for _ in 0..50 {
            match spawn(&self.server_bin, &self.db_url, &self.config, instance.port, &instance.log).await {
                Ok((started, _)) => {
                    *child = Some(started);
                    instance.up.store(true, Ordering::Relaxed);
                    return Ok(());
                }
                Err(e) => last = Some(e),
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        Err(last.expect("tried at least once")).context(format!("restarting instance {n}"))
    }

    /// Kills every instance (the run is over).
    pub async fn stop(&self) {
        for instance in &self.instances {
            instance.up.store(false, Ordering::Relaxed);
            if let Some(mut child) = instance.child.lock().await.take() {
                let _ = child.start_kill();
                let _ = child.wait().await;
            }
        }
    }
}

/// Starts the binary on `port` (0: any) and waits until it logs that it listens; returns the
/// child and its port. Its log is appended to `log`, and kept draining so it never blocks.
async fn spawn(bin: &Path, db_url: &str, config: &Path, port: u16, log: &Path) -> anyhow::Result<(Child, u16)> {
    let mut child = Command::new(bin)
        .arg("--bind")
        .arg(format!("127.0.0.1:{port}"))
        .arg("--db")
        .arg(db_url)
        .arg("--config")
        .arg(config)
        .args(["--log-format", "json"])
        .env("RUST_LOG", "warn,sync_server::startup=info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting {}", bin.display()))?;
    let mut file = tokio::fs::OpenOptions::new().create(true).append(true).open(log).await?;
    let mut lines = BufReader::new(child.stderr.take().expect("piped")).lines();
    let listening = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(line) = lines.next_line().await? {
            file.write_all(line.as_bytes()).await?;
            file.write_all(b"\n").await?;
            if let Some(addr) = sync_server::telemetry::listening_address(&line) {
                return Ok::<_, std::io::Error>(Some(addr));
            }
        }
        Ok(None)
    })
    .await;
    let addr = match listening {
        Ok(Ok(Some(addr))) => addr,
        Ok(Ok(None)) => bail!("the server exited before listening (see {})", log.display()),
        Ok(Err(e)) => return Err(e.into()),
        Err(_) => bail!("the server did not listen within 30 s (see {})", log.display()),
    };
    tokio::spawn(async move {
        while let Ok(Some(line)) = lines.next_line().await {
            let _ = file.write_all(line.as_bytes()).await;
            let _ = file.write_all(b"\n").await;
        }
    });
    let port = addr.rsplit(':').next().and_then(|p| p.parse().ok()).context("listening address without a port")?;
    Ok((child, port))
}

/// A PostgreSQL database made for one run and dropped after it.
pub struct PgDatabase {
    /// The server's URL (its own database, for administration).
    pub admin_url: String,
    /// The run's database.
    pub name: String,
    /// The run's database's URL.
    pub url: String,
}

impl PgDatabase {
    /// Creates a fresh database on the server at `admin_url`.
    pub async fn create(admin_url: &str) -> anyhow::Result<Self> {
        let admin = admin_connection(admin_url).await?;
        let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_secs();
        let name = format!("sync_soak_{secs}_{:08x}", rand::random::<u32>());
        admin.batch_execute(&format!("CREATE DATABASE {name}")).await.context("CREATE DATABASE")?;
        Ok(Self { admin_url: admin_url.to_owned(), url: with_dbname(admin_url, &name), name })
    }

    /// Terminates up to `at_most` of the servers' connections to the run's database, as a
    /// database failover or a network fault would; returns how many were terminated.
    pub async fn terminate_backends(&self, at_most: i64) -> anyhow::Result<u64> {
        let admin = admin_connection(&self.admin_url).await?;
        let rows = admin
            .query(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
                 WHERE datname = $1 AND pid <> pg_backend_pid() ORDER BY random() LIMIT $2",
                &[&self.name, &at_most],
            )
            .await
            .context("pg_terminate_backend")?;
        Ok(rows.iter().filter(|r| r.get::<_, bool>(0)).count() as u64)
    }

    /// Drops the run's database, ending any connection left to it.
    pub async fn drop_database(&self) -> anyhow::Result<()> {
        let admin = admin_connection(&self.admin_url).await?;
        admin.batch_execute(&format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name)).await?;
        Ok(())
    }
}

async fn admin_connection(url: &str) -> anyhow::Result<tokio_postgres::Client> {
    let (client, connection) =
        tokio_postgres::connect(url, tokio_postgres::NoTls).await.with_context(|| format!("connecting to {url}"))?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(client)
}
