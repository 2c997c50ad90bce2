//! Background tasks, started and stopped by the [`crate::startup::Application`] and watched by
//! `/healthz`.
//!
//! Every task runs under a supervisor: a task that panics or ends before the server stops is
//! logged and recorded in [`TaskHealth`], which makes `/healthz` answer `503` until the instance
//! is restarted (a half-working instance should leave the load balancer). Periodic work (the
//! janitors) is a [`Tasks::every`] job: a failed run is logged and tried again at the next
//! period; only a panic stops it.
//!
//! To add a task, spawn it from [`crate::startup::Application::build`] with [`Tasks::spawn`] or
//! [`Tasks::every`]; it gets a [`Shutdown`] to watch.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Tells a task that the server is stopping. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Shutdown(watch::Receiver<bool>);

impl Shutdown {
    /// Resolves once the server is stopping (at once if it already is).
    pub async fn requested(&mut self) {
        // An error means the sender is gone, which also means stop.
        let _ = self.0.wait_for(|stop| *stop).await;
    }

    /// Whether the server is stopping.
    pub fn is_requested(&self) -> bool {
        *self.0.borrow()
    }
}

/// Which background tasks have died, and why. Shared with `/healthz`.
#[derive(Debug, Clone, Default)]
pub struct TaskHealth(Arc<Mutex<BTreeMap<&'static str, String>>>);

impl TaskHealth {
    /// Every dead task with the reason it died; empty while all run.
    pub fn dead(&self) -> BTreeMap<&'static str, String> {
        self.0.lock().map(|dead| dead.clone()).unwrap_or_default()
    }

    fn record(&self, task: &'static str, why: String) {
        if let Ok(mut dead) = self.0.lock() {
            dead.insert(task, why);
        }
    }
}

/// The background tasks of one server, in the order they were started.
#[derive(Debug)]
pub struct Tasks {
    stop: watch::Sender<bool>,
    health: TaskHealth,
    running: Vec<(&'static str, JoinHandle<()>)>,
}

impl Default for Tasks {
    fn default() -> Self {
        Self::new()
    }
}

impl Tasks {
    /// No tasks yet.
    pub fn new() -> Self {
        Self { stop: watch::channel(false).0, health: TaskHealth::default(), running: Vec::new() }
    }

    /// What `/healthz` reads.
    pub fn health(&self) -> TaskHealth {
        self.health.clone()
    }

    /// Starts `task` under supervision. It should return when its [`Shutdown`] fires; returning
    /// earlier, with an error or not, or panicking, marks it dead.
    pub fn spawn<F, Fut>(&mut self, name: &'static str, task: F)
    where
        F: FnOnce(Shutdown) -> Fut,
        Fut: Future<Output = Result<(), String>> + Send + 'static,
    {
        let shutdown = Shutdown(self.stop.subscribe());
        let work = tokio::spawn(task(shutdown.clone()));
        let health = self.health.clone();
        let supervisor = tokio::spawn(async move {
            let why = match work.await {
                Ok(Ok(())) if shutdown.is_requested() => return,
                Ok(Ok(())) => "it ended before the server stopped".to_owned(),
                Ok(Err(e)) => e,
                Err(e) if e.is_panic() => format!("it panicked: {}", panic_message(e.into_panic())),
                Err(e) => e.to_string(),
            };
            tracing::error!(task = name, why = %why, "a background task died; /healthz now answers 503");
            health.record(name, why);
        });
        self.running.push((name, supervisor));
    }

    /// Runs `job` every `period` (the first run one period after start) until the server stops.
    /// A run that fails is logged and tried again at the next period.
    pub fn every<F, Fut>(&mut self, name: &'static str, period: Duration, mut job: F)
    where
        F: FnMut() -> Fut + Send + 'static,
        Fut: Future<Output = Result<(), String>> + Send,
    {
        self.spawn(name, move |mut shutdown| async move {
            let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = shutdown.requested() => return Ok(()),
                    _ = ticks.tick() => {}
                }
                if let Err(e) = job().await {
                    tracing::warn!(task = name, error = %e, "a periodic task failed; it runs again at its next period");
                }
            }
        });
    }

    /// Asks every task to stop and waits for each, in the order they were started.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        for (name, task) in self.running {
            if task.await.is_err() {
                tracing::warn!(task = name, "a background task's supervisor failed while stopping");
            }
        }
    }
}

fn panic_message(payload: Box<dyn std::any::Any + Send>) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_task_that_dies_is_recorded_and_one_that_stops_is_not() {
        let mut tasks = Tasks::new();
        let health = tasks.health();
        let (done_tx, done_rx) = tokio::sync::oneshot::channel::<()>();
        tasks.spawn("well-behaved", |mut shutdown| async move {
            shutdown.requested().await;
            Ok(())
        });
        tasks.spawn("panics", |_| async move {
            let _ = done_rx.await;
            panic!("boom")
        });
        tasks.spawn("fails", |_| async move { Err("the database is gone".to_owned()) });
        done_tx.send(()).unwrap();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while health.dead().len() < 2 && tokio::time::Instant::now() < deadline {
            tokio::task::yield_now().await;
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let dead = health.dead();
        assert_eq!(dead.get("panics").map(String::as_str), Some("it panicked: boom"));
        assert_eq!(dead.get("fails").map(String::as_str), Some("the database is gone"));
        tasks.stop().await;
        assert!(!health.dead().contains_key("well-behaved"));
    }

    #[tokio::test(start_paused = true)]
    async fn a_periodic_job_runs_every_period_and_survives_its_failures() {
        let mut tasks = Tasks::new();
        let runs = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = Arc::clone(&runs);
        tasks.every("janitor", Duration::from_secs(60), move || {
            let n = counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            async move { if n.is_multiple_of(2) { Err("transient".to_owned()) } else { Ok(()) } }
        });
        tokio::time::sleep(Duration::from_secs(60 * 3 + 1)).await;
        assert_eq!(runs.load(std::sync::atomic::Ordering::SeqCst), 3);
        let health = tasks.health();
        tasks.stop().await;
        assert!(health.dead().is_empty());
    }
}
