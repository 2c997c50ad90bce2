//! `/metrics` in the Prometheus text format: request counts and durations by method and status,
//! pushes by outcome, objects pushed, store failures, and the outbox's deliveries, lag and dead
//! events by subscription. Labels never carry paths, entity names or users, so no request can
//! grow the number of series (subscriptions come from the configuration).

use prometheus::{
    Encoder, GaugeVec, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
    TextEncoder,
};

/// The kinds of store failure `sync_store_errors_total` counts.
pub const STORE_ERROR_KINDS: [&str; 2] = ["unavailable", "internal"];

/// The outcomes `sync_outbox_deliveries_total` counts: delivered; failed (tried again later);
/// dead (out of attempts).
pub const DELIVERY_OUTCOMES: [&str; 3] = ["delivered", "failed", "dead"];

/// The server's metrics, registered in their own registry.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    requests: IntCounterVec,
    durations: HistogramVec,
    pushes: IntCounterVec,
    pushed_objects: IntCounter,
    store_errors: IntCounterVec,
    deliveries: IntCounterVec,
    outbox_lag: GaugeVec,
    outbox_pending: IntGaugeVec,
    outbox_dead: IntGaugeVec,
    long_polls_waiting: IntGauge,
    long_polls_refused: IntCounter,
    body_bytes: IntGauge,
}

impl Metrics {
    /// A fresh set of metrics, all at zero.
    pub fn new() -> Self {
        let registry = Registry::new();
        let requests = IntCounterVec::new(
            Opts::new("sync_http_requests_total", "HTTP requests answered, by method and status"),
            &["method", "status"],
        )
        .expect("valid metric");
        let durations = HistogramVec::new(
            HistogramOpts::new("sync_http_request_duration_seconds", "Time to answer a request, by method and status")
                .buckets(vec![0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0]),
            &["method", "status"],
        )
        .expect("valid metric");
        let pushes = IntCounterVec::new(
            Opts::new("sync_pushes_total", "Pushes acknowledged: applied, or replayed for a known idempotency key"),
            &["outcome"],
        )
        .expect("valid metric");
        let pushed_objects =
            IntCounter::new("sync_pushed_objects_total", "Objects of applied pushes").expect("valid metric");
        let store_errors = IntCounterVec::new(
            Opts::new("sync_store_errors_total", "Store operations that failed, by kind"),
            &["kind"],
        )
        .expect("valid metric");
        let deliveries = IntCounterVec::new(
            Opts::new("sync_outbox_deliveries_total", "Outbox delivery attempts, by subscription and outcome"),
            &["subscription", "outcome"],
        )
        .expect("valid metric");
        let outbox_lag = GaugeVec::new(
            Opts::new("sync_outbox_lag_seconds", "Age of the oldest event not yet delivered, by subscription"),
            &["subscription"],
        )
        .expect("valid metric");
        let outbox_pending = IntGaugeVec::new(
            Opts::new("sync_outbox_pending_events", "Events waiting for delivery, by subscription"),
            &["subscription"],
        )
        .expect("valid metric");
        let outbox_dead = IntGaugeVec::new(
            Opts::new("sync_outbox_dead_events", "Events out of attempts, by subscription"),
            &["subscription"],
        )
        .expect("valid metric");
        let long_polls_waiting =
            IntGauge::new("sync_long_polls_waiting", "Pulls waiting for a change (long-poll)").expect("valid metric");
        let long_polls_refused = IntCounter::new(
            "sync_long_polls_refused_total",
            "Long-polls answered 503 because the most allowed were waiting",
        )
        .expect("valid metric");
        let body_bytes = IntGauge::new(
            "sync_push_body_bytes",
            "Bytes of push bodies held from the body budget (limits.max_inflight_body_bytes)",
        )
        .expect("valid metric");
        for metric in [
            Box::new(requests.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(durations.clone()),
            Box::new(pushes.clone()),
            Box::new(pushed_objects.clone()),
            Box::new(store_errors.clone()),
            Box::new(deliveries.clone()),
            Box::new(outbox_lag.clone()),
            Box::new(outbox_pending.clone()),
            Box::new(outbox_dead.clone()),
            Box::new(long_polls_waiting.clone()),
            Box::new(long_polls_refused.clone()),
            Box::new(body_bytes.clone()),
        ] {
            registry.register(metric).expect("metric names are unique");
        }
        // Series that exist from the start, at zero, so that dashboards and alerts see them before
        // the first event.
        for kind in STORE_ERROR_KINDS {
            store_errors.with_label_values(&[kind]);
        }
        for outcome in ["applied", "replayed"] {
            pushes.with_label_values(&[outcome]);
        }
        Self {
            registry,
            requests,
            durations,
            pushes,
            pushed_objects,
            store_errors,
            deliveries,
            outbox_lag,
            outbox_pending,
            outbox_dead,
            long_polls_waiting,
            long_polls_refused,
            body_bytes,
        }
    }

    /// Sets how many bytes of push bodies the body budget holds.
    pub fn push_body_bytes(&self, bytes: usize) {
        self.body_bytes.set(i64::try_from(bytes).unwrap_or(i64::MAX));
    }

    /// Sets how many pulls are waiting.
    pub fn long_polls_waiting(&self, waiting: i64) {
        self.long_polls_waiting.set(waiting);
    }

    /// Counts one long-poll refused for want of a place.
    pub fn long_poll_refused(&self) {
        self.long_polls_refused.inc();
    }

    /// Creates the outbox series of `subscription` at zero.
    pub fn subscription(&self, subscription: &str) {
        for outcome in DELIVERY_OUTCOMES {
            self.deliveries.with_label_values(&[subscription, outcome]);
        }
        self.outbox_state(subscription, 0.0, 0, 0);
    }

    /// Counts one delivery attempt of `subscription` (`delivered`, `failed` or `dead`).
    pub fn delivery(&self, subscription: &str, outcome: &str) {
        self.deliveries.with_label_values(&[subscription, outcome]).inc();
    }

    /// Sets what the outbox holds for `subscription`: the age of its oldest waiting event, and how
    /// many are waiting and dead.
    pub fn outbox_state(&self, subscription: &str, lag_seconds: f64, pending: i64, dead: i64) {
        self.outbox_lag.with_label_values(&[subscription]).set(lag_seconds);
        self.outbox_pending.with_label_values(&[subscription]).set(pending);
        self.outbox_dead.with_label_values(&[subscription]).set(dead);
    }

    /// Counts one answered request.
    /// A method outside the standard ones is counted as `OTHER`, so clients cannot add series.
    pub fn request(&self, method: &str, status: u16, seconds: f64) {
        const STANDARD: [&str; 7] = ["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"];
        let method = STANDARD.into_iter().find(|m| *m == method).unwrap_or("OTHER");
        let status = status.to_string();
        self.requests.with_label_values(&[method, &status]).inc();
        self.durations.with_label_values(&[method, &status]).observe(seconds);
    }

    /// Counts one acknowledged push of `objects` objects.
    pub fn push(&self, objects: usize, replayed: bool) {
        self.pushes.with_label_values(&[if replayed { "replayed" } else { "applied" }]).inc();
        if !replayed {
            self.pushed_objects.inc_by(objects as u64);
        }
    }

    /// Counts one failed store operation (`unavailable`, `internal`, ...).
    pub fn store_error(&self, kind: &str) {
        self.store_errors.with_label_values(&[kind]).inc();
    }

    /// Every metric in the Prometheus text format.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        // Encoding registered, valid metrics into memory cannot fail.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        String::from_utf8_lossy(&out).into_owned()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_what_was_counted() {
        let m = Metrics::new();
        m.request("POST", 200, 0.002);
        m.request("BREW", 405, 0.001);
        m.push(3, false);
        m.push(3, true);
        m.store_error("unavailable");
        let text = m.render();
        for line in [
            r#"sync_http_requests_total{method="POST",status="200"} 1"#,
            r#"sync_pushes_total{outcome="applied"} 1"#,
            r#"sync_pushes_total{outcome="replayed"} 1"#,
            "sync_pushed_objects_total 3",
            r#"sync_store_errors_total{kind="unavailable"} 1"#,
            r#"sync_http_request_duration_seconds_count{method="POST",status="200"} 1"#,
            r#"sync_store_errors_total{kind="internal"} 0"#,
            r#"sync_http_requests_total{method="OTHER",status="405"} 1"#,
        ] {
            assert!(text.contains(line), "{line} missing from\n{text}");
        }
        assert!(!text.contains("BREW"));
    }
}
