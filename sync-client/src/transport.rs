//! The exchange with the server: the [`Transport`] trait the sync engine talks through, the
//! parsing of the protocol's answers, and [`HttpTransport`], its blocking HTTP implementation.
//!
//! [`HttpTransport`] sends `GET <path>?since=S[&limit=N]` and `POST <path>` (with an
//! `Idempotency-Key` when the engine gives one), with a timeout per request, and retries
//! connection failures, timeouts, `408`, `429` and `5xx` answers with exponential backoff and
//! jitter ([`RetryPolicy`]). A retried push is safe: it carries the same idempotency key, so a
//! server with the extension applies it once; a base-protocol server applies the same values again.
//!
//! It uses `reqwest::blocking`, which runs its own small runtime on a thread of its own. Building
//! and dropping one inside an async task would block that task's runtime, so [`HttpTransport`]
//! does both on a helper thread: it can be created and dropped anywhere. Its requests block the
//! calling thread; from async code, run the sync on a blocking thread (see the crate docs).

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use reqwest::header::{HeaderName, HeaderValue};
use serde_json::Value;
use serde_json::value::RawValue;
use sync_proto::capabilities::Extensions;
use sync_proto::{CAPABILITIES_PATH, Capabilities, Cursor, ErrorBody, IdempotencyKey, PRECONDITIONS_HEADER};

use crate::error::TransportError;
use crate::schema::Fields;
use crate::store::SetAside;

/// One object of a pull answer.
#[derive(Debug, Clone, PartialEq)]
pub struct RemoteObject {
    /// The object's id.
    pub id: String,
    /// The server's `_lastChange`; a base-protocol server may leave it out of a tombstone.
    pub last_change: Option<i64>,
    /// Whether this is a tombstone (`_removed: true`).
    pub removed: bool,
    /// Every property but `id`, `_lastChange` and `_removed`, as sent.
    pub fields: Fields,
}

impl RemoteObject {
    /// The object as the server sent it, as JSON text.
    pub fn to_json(&self) -> String {
        let mut object = self.fields.clone();
        object.insert("id".into(), Value::String(self.id.clone()));
        if let Some(last_change) = self.last_change {
            object.insert("_lastChange".into(), Value::from(last_change));
        }
        if self.removed {
            object.insert("_removed".into(), Value::Bool(true));
        }
        Value::Object(object).to_string()
    }
}

/// One pull answer.
#[derive(Debug, Clone, PartialEq)]
pub struct PullPage {
    /// The changed objects, as sent (an id may appear twice from a base-protocol server).
    pub updates: Vec<RemoteObject>,
    /// The cursor to pull from next.
    pub now: Cursor,
    /// Whether the server left changes for a next page (`false` when it did not say: a server
    /// without paging always answers the whole delta).
    pub more: bool,
    /// Updates that could not be read as objects (a number beyond any float, no string `id`,
    /// ...), as received; the rest of the page is applied without them.
    pub unreadable: Vec<SetAside>,
    /// The answer is the whole scope, because the cursor was older than the server's purge
    /// horizon (`"reset": true`): objects it does not hold are gone from the server.
    pub reset: bool,
}

/// The server's acknowledgement of a push.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PushAck {
    /// The `_lastChange` the server gave every object of the push.
    pub now: Cursor,
    /// Whether the server answered from an earlier application of the same idempotency key
    /// (`Idempotency-Replayed: true`), having applied nothing this time.
    pub replayed: bool,
}

/// How the sync engine reaches a server. Implementations must be usable from any thread.
pub trait Transport: Send + Sync {
    /// `GET path?since=since[&limit=limit]`: the changes after `since`.
    fn pull(&self, path: &str, since: Cursor, limit: Option<usize>) -> Result<PullPage, TransportError>;

    /// `POST path` with `body` (a JSON array of objects), under `key` when given. Sending the same
    /// body under the same key again must be safe.
    fn push(&self, path: &str, body: &str, key: Option<&IdempotencyKey>) -> Result<PushAck, TransportError>;

    /// Whether pushes may ask the server to check each item's `_lastChange` against the version
    /// it holds ([`Transport::push_checked`]). The default, for transports and servers without
    /// preconditions, is no.
    fn preconditions(&self) -> bool {
        false
    }

    /// As [`Transport::push`], asking the server to apply nothing unless every item's
    /// `_lastChange` is the version it holds (`409 conflict` otherwise). The default sends a plain
    /// push: a server without preconditions ignores `_lastChange`.
    fn push_checked(&self, path: &str, body: &str, key: Option<&IdempotencyKey>) -> Result<PushAck, TransportError> {
        self.push(path, body, key)
    }

    /// Waits up to about `wait` for the server to hold changes after `since` at `path`
    /// (long-poll). The default, for transports and servers without it, is
    /// [`Waited::Unsupported`] at once.
    fn wait_for_changes(&self, path: &str, since: Cursor, wait: Duration) -> Result<Waited, TransportError> {
        let _ = (path, since, wait);
        Ok(Waited::Unsupported)
    }
}

/// How a [`Transport::wait_for_changes`] ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Waited {
    /// The server holds changes after the cursor.
    Changed,
    /// The wait ended with none.
    Unchanged,
    /// The server (or the transport) cannot wait: poll instead.
    Unsupported,
}

impl<T: Transport + ?Sized> Transport for Arc<T> {
    fn pull(&self, path: &str, since: Cursor, limit: Option<usize>) -> Result<PullPage, TransportError> {
        (**self).pull(path, since, limit)
    }

    fn push(&self, path: &str, body: &str, key: Option<&IdempotencyKey>) -> Result<PushAck, TransportError> {
        (**self).push(path, body, key)
    }

    fn wait_for_changes(&self, path: &str, since: Cursor, wait: Duration) -> Result<Waited, TransportError> {
        (**self).wait_for_changes(path, since, wait)
    }

    fn preconditions(&self) -> bool {
        (**self).preconditions()
    }

    fn push_checked(&self, path: &str, body: &str, key: Option<&IdempotencyKey>) -> Result<PushAck, TransportError> {
        (**self).push_checked(path, body, key)
    }
}

impl<T: Transport + ?Sized> Transport for Box<T> {
    fn pull(&self, path: &str, since: Cursor, limit: Option<usize>) -> Result<PullPage, TransportError> {
        (**self).pull(path, since, limit)
    }

    fn push(&self, path: &str, body: &str, key: Option<&IdempotencyKey>) -> Result<PushAck, TransportError> {
        (**self).push(path, body, key)
    }

    fn wait_for_changes(&self, path: &str, since: Cursor, wait: Duration) -> Result<Waited, TransportError> {
        (**self).wait_for_changes(path, since, wait)
    }

    fn preconditions(&self) -> bool {
        (**self).preconditions()
    }

    fn push_checked(&self, path: &str, body: &str, key: Option<&IdempotencyKey>) -> Result<PushAck, TransportError> {
        (**self).push_checked(path, body, key)
    }
}

/// Parses a pull answer: `{"updates": [...], "now": N}` plus `"more"` when paged. Each update is
/// read on its own: one that cannot be read is returned in [`PullPage::unreadable`], so that one
/// bad object never stops a sync.
pub fn parse_pull_answer(text: &str) -> Result<PullPage, String> {
    #[derive(serde::Deserialize)]
    struct Answer<'a> {
        #[serde(borrow)]
        updates: Option<Vec<&'a RawValue>>,
        now: Option<Value>,
        more: Option<Value>,
        reset: Option<Value>,
    }
    let repaired;
    let answer: Answer<'_> = match serde_json::from_str(text) {
        Ok(answer) => answer,
        // A string cut in the middle of a surrogate pair (which `JSON.stringify` writes as a lone
        // `\ud83d`) is valid JSON but cannot be a Rust string: read it as U+FFFD rather than
        // failing every later sync of the entity.
        Err(e) if e.is_syntax() => {
            repaired = replace_lone_surrogates(text);
            serde_json::from_str(&repaired).map_err(|_| format!("not JSON: {e}"))?
        }
        Err(e) => return Err(format!("not a pull answer: {e}")),
    };
    let now = answer.now.as_ref().and_then(as_millis).ok_or("no integer \"now\"")?;
    let updates = answer.updates.ok_or("no \"updates\" array")?;
    let more = match answer.more {
        None | Some(Value::Null) => false,
        Some(Value::Bool(more)) => more,
        Some(_) => return Err("\"more\" is not a boolean".into()),
    };
    let reset = match answer.reset {
        None | Some(Value::Null) => false,
        Some(Value::Bool(reset)) => reset,
        Some(_) => return Err("\"reset\" is not a boolean".into()),
    };
    let mut page = PullPage {
        updates: Vec::with_capacity(updates.len()),
        now: Cursor::from_millis(now),
        more,
        unreadable: Vec::new(),
        reset,
    };
    for raw in updates {
        let read = match serde_json::from_str::<Value>(raw.get()) {
            Err(e) if e.is_syntax() => serde_json::from_str(&replace_lone_surrogates(raw.get())),
            read => read,
        };
        let read = read.map_err(|e| format!("not readable JSON: {e}")).and_then(parse_update);
        match read {
            Ok(update) => page.updates.push(update),
            Err(reason) => page.unreadable.push(SetAside { id: id_of(raw), raw: raw.get().to_owned(), reason }),
        }
    }
    Ok(page)
}

/// The string `id` of an update, if it has one, however unreadable its other members are.
fn id_of(raw: &RawValue) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Id {
        id: String,
    }
    serde_json::from_str::<Id>(raw.get()).ok().map(|i| i.id).filter(|id| !id.is_empty())
}

fn parse_update(update: Value) -> Result<RemoteObject, String> {
    let Value::Object(mut fields) = update else { return Err("not an object".into()) };
    let id = match fields.remove("id") {
        Some(Value::String(id)) if !id.is_empty() => id,
        _ => return Err("no string \"id\"".into()),
    };
    let last_change = match fields.remove("_lastChange") {
        None | Some(Value::Null) => None,
        Some(v) => Some(as_millis(&v).ok_or("\"_lastChange\" is not an integer")?),
    };
    let removed = match fields.remove("_removed") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => b,
        Some(Value::Number(n)) => n.as_u64() == Some(1),
        Some(_) => return Err("\"_removed\" is not a boolean".into()),
    };
    Ok(RemoteObject { id, last_change, removed, fields })
}

/// Parses a push answer: `{"status": "ok", "now": N}`.
pub fn parse_push_answer(text: &str) -> Result<Cursor, String> {
    let answer: Value = serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
    match answer.get("status").and_then(Value::as_str) {
        None | Some("ok") => {}
        Some(other) => return Err(format!("status is {other:?}")),
    }
    answer.get("now").and_then(as_millis).map(Cursor::from_millis).ok_or_else(|| "no integer \"now\"".into())
}

/// A millisecond timestamp, written as an integer (or, by some servers, a float without fraction).
/// `text` with every `\uXXXX` escape of a lone surrogate replaced by `\ufffd`; escapes of
/// complete pairs, and everything else, are kept.
fn replace_lone_surrogates(text: &str) -> String {
    fn unit_at(bytes: &[u8], i: usize) -> Option<u16> {
        let hex = bytes.get(i..i + 6)?;
        if &hex[..2] != b"\\u" {
            return None;
        }
        u16::from_str_radix(std::str::from_utf8(&hex[2..]).ok()?, 16).ok()
    }
    let bytes = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let (mut i, mut copied) = (0, 0);
    while i < bytes.len() {
        if bytes[i] != b'\\' {
            i += 1;
            continue;
        }
        match unit_at(bytes, i) {
            Some(high @ 0xD800..=0xDBFF) if matches!(unit_at(bytes, i + 6), Some(0xDC00..=0xDFFF)) => {
                let _ = high;
                i += 12;
            }
            Some(0xD800..=0xDFFF) => {
                out.push_str(&text[copied..i]);
                out.push_str("\\ufffd");
                i += 6;
                copied = i;
            }
            _ => i += 2, // any other escape, including an escaped backslash
        }
    }
    out.push_str(&text[copied..]);
    out
}

/// A timestamp as servers write it: an integer, an integral float, or (some base servers read it
/// back from a database driver as text) a string of decimal digits.
fn as_millis(v: &Value) -> Option<i64> {
    match v {
        Value::String(s) if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) => s.parse().ok(),
        _ => v.as_i64().or_else(|| v.as_f64().filter(|f| f.fract() == 0.0 && f.abs() < 9.0e15).map(|f| f as i64)),
    }
}

/// When and how often a failed request is tried again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Tries after the first one; 0 never retries.
    pub max_retries: u32,
    /// The wait before the first retry; each further retry waits twice as long.
    pub initial_backoff: Duration,
    /// The longest wait between two tries.
    pub max_backoff: Duration,
}

impl Default for RetryPolicy {
    /// 4 retries, waiting about 0.2 s, 0.4 s, 0.8 s and 1.6 s.
    fn default() -> Self {
        Self { max_retries: 4, initial_backoff: Duration::from_millis(200), max_backoff: Duration::from_secs(5) }
    }
}

impl RetryPolicy {
    /// Never retry: every failure is returned at once.
    pub fn none() -> Self {
        Self { max_retries: 0, ..Self::default() }
    }

    /// The wait before retry number `retry` (0 for the first), given `jitter` in `[0, 1)`: the
    /// exponential backoff capped at `max_backoff`, of which a random half is kept ("equal
    /// jitter"), so that clients that failed together do not retry together, yet each waits at
    /// least half the backoff.
    pub fn delay(&self, retry: u32, jitter: f64) -> Duration {
        let exp = self.initial_backoff.saturating_mul(1u32.checked_shl(retry).unwrap_or(u32::MAX));
        let capped = exp.min(self.max_backoff);
        capped.mul_f64(0.5 + 0.5 * jitter.clamp(0.0, 1.0))
    }
}

/// How [`HttpTransport`] waits between retries; tests give one that does not sleep.
pub type Sleep = Arc<dyn Fn(Duration) + Send + Sync>;

/// Where an [`HttpTransport`] gets its bearer token: asked before every request, and once more
/// with `refresh = true` after the server answered `401`, so that a long-running app survives the
/// expiry of its token (the provider refreshes it, typically with a refresh token of its identity
/// provider). A closure `Fn(bool) -> Result<String, String>` is one.
pub trait TokenProvider: Send + Sync {
    /// The token to send as `Authorization: Bearer`; `refresh` says the last one was refused.
    /// An error stops the request (the message says why, for the sync report).
    fn token(&self, refresh: bool) -> Result<String, String>;
}

impl<F: Fn(bool) -> Result<String, String> + Send + Sync> TokenProvider for F {
    fn token(&self, refresh: bool) -> Result<String, String> {
        self(refresh)
    }
}

/// Builds an [`HttpTransport`].
pub struct HttpTransportBuilder {
    base_url: String,
    timeout: Duration,
    connect_timeout: Duration,
    retry: RetryPolicy,
    headers: Vec<(String, String)>,
    sleep: Sleep,
    tokens: Option<Arc<dyn TokenProvider>>,
}

impl HttpTransportBuilder {
    /// The whole time one request may take, from connecting to the last byte of the answer
    /// (default 30 s).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The time connecting may take (default 10 s).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// When failed requests are retried (default [`RetryPolicy::default`]).
    pub fn retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    /// Sends this header with every request, e.g. `Authorization`. Its value is kept out of
    /// logs and `Debug` output.
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// Sends `Authorization: Bearer <token>` with every request.
    pub fn bearer_token(self, token: impl AsRef<str>) -> Self {
        let value = format!("Bearer {}", token.as_ref());
        self.header("Authorization", value)
    }

    /// Asks `provider` for the bearer token of every request, and for a fresh one after a `401`
    /// (the request is then sent once more). Tokens are kept out of logs and `Debug` output.
    pub fn token_provider(mut self, provider: impl TokenProvider + 'static) -> Self {
        self.tokens = Some(Arc::new(provider));
        self
    }

    /// Waits between retries with `sleep` instead of sleeping the thread.
    pub fn sleep_with(mut self, sleep: Sleep) -> Self {
        self.sleep = sleep;
        self
    }

    /// Checks the configuration and builds the transport (safe inside an async runtime).
    pub fn build(self) -> Result<HttpTransport, TransportError> {
        let base_url = self.base_url.trim_end_matches('/').to_owned();
        let parsed = reqwest::Url::parse(&base_url)
            .map_err(|e| TransportError::Config(format!("invalid server URL {base_url:?}: {e}")))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(TransportError::Config(format!("the server URL must be http or https: {base_url:?}")));
        }
        let mut headers = reqwest::header::HeaderMap::new();
        for (name, value) in &self.headers {
            let name = HeaderName::from_bytes(name.as_bytes())
                .map_err(|e| TransportError::Config(format!("invalid header name {name:?}: {e}")))?;
            let mut value = HeaderValue::from_str(value)
                .map_err(|_| TransportError::Config(format!("invalid value for header {name}")))?;
            value.set_sensitive(true);
            headers.insert(name, value);
        }
        let builder = reqwest::blocking::Client::builder()
            .timeout(self.timeout)
            .connect_timeout(self.connect_timeout)
            .default_headers(headers)
            .user_agent(concat!("sync-client/", env!("CARGO_PKG_VERSION")));
        // reqwest::blocking starts (and on drop joins) a runtime thread, which panics or blocks
        // when done on a thread that drives async tasks; a helper thread is always safe.
        let client = std::thread::spawn(move || builder.build())
            .join()
            .map_err(|_| TransportError::Config("building the HTTP client panicked".into()))?
            .map_err(|e| TransportError::Config(format!("cannot build the HTTP client: {e}")))?;
        Ok(HttpTransport {
            base_url,
            client: Some(client),
            timeout: self.timeout,
            retry: self.retry,
            sleep: self.sleep,
            tokens: self.tokens,
            extensions: OnceLock::new(),
        })
    }
}

/// The blocking HTTP implementation of [`Transport`], with timeouts and retries.
pub struct HttpTransport {
    base_url: String,
    /// Always `Some` until dropped; taken by `Drop` to be dropped on a helper thread.
    client: Option<reqwest::blocking::Client>,
    /// The timeout of every request; a long-poll gets its wait on top.
    timeout: Duration,
    retry: RetryPolicy,
    sleep: Sleep,
    tokens: Option<Arc<dyn TokenProvider>>,
    /// The server's extensions, once read (`None`: a base server, or one that does not say).
    extensions: OnceLock<Option<Extensions>>,
}

impl std::fmt::Debug for HttpTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpTransport").field("base_url", &self.base_url).field("retry", &self.retry).finish()
    }
}

impl HttpTransport {
    /// A transport to the server at `base_url` (`http://host:port`, paths are appended to it),
    /// with the default timeouts and retries.
    pub fn new(base_url: impl Into<String>) -> Result<Self, TransportError> {
        Self::builder(base_url).build()
    }

    /// A builder for a transport to the server at `base_url`.
    pub fn builder(base_url: impl Into<String>) -> HttpTransportBuilder {
        HttpTransportBuilder {
            base_url: base_url.into(),
            timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(10),
            retry: RetryPolicy::default(),
            headers: Vec::new(),
            sleep: Arc::new(std::thread::sleep),
            tokens: None,
        }
    }

    /// The server's base URL, without a trailing `/`.
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    fn client(&self) -> Result<&reqwest::blocking::Client, TransportError> {
        self.client.as_ref().ok_or_else(|| TransportError::Config("the HTTP client was dropped".into()))
    }

    /// Sends the request `build` makes, retrying transient failures; returns the status, the
    /// `Idempotency-Replayed` flag and the body of a `200` answer.
    fn exchange(
        &self,
        url: &str,
        build: impl Fn(&reqwest::blocking::Client) -> reqwest::blocking::RequestBuilder,
    ) -> Result<(bool, String), TransportError> {
        let client = self.client()?;
        let mut retry = 0;
        let mut refreshed = false;
        loop {
            let request = match &self.tokens {
                Some(tokens) => {
                    let token = tokens.token(refreshed).map_err(TransportError::Token)?;
                    let mut value = HeaderValue::from_str(&format!("Bearer {token}"))
                        .map_err(|_| TransportError::Token("the token is not a valid header value".into()))?;
                    value.set_sensitive(true);
                    build(client).header(reqwest::header::AUTHORIZATION, value)
                }
                None => build(client),
            };
            match self.once(url, request) {
                Err(TransportError::Status { status: 401, .. }) if self.tokens.is_some() && !refreshed => {
                    tracing::info!(%url, "the server refused the token; asking for a fresh one");
                    refreshed = true;
                }
                Err(e) if e.is_retryable() && retry < self.retry.max_retries => {
                    let wait = self.retry.delay(retry, rand::random::<f64>());
                    tracing::warn!(%url, error = %e, retry = retry + 1, wait_ms = wait.as_millis() as u64, "retrying");
                    (self.sleep)(wait);
                    retry += 1;
                }
                other => return other,
            }
        }
    }

    fn once(&self, url: &str, request: reqwest::blocking::RequestBuilder) -> Result<(bool, String), TransportError> {
        let network = |e: reqwest::Error| {
            if e.is_timeout() {
                TransportError::Timeout { url: url.to_owned() }
            } else if e.is_builder() {
                TransportError::Config(e.to_string())
            } else {
                TransportError::Connect { url: url.to_owned(), reason: causes(&e) }
            }
        };
        let response = request.send().map_err(network)?;
        let status = response.status().as_u16();
        let replayed = response
            .headers()
            .get("Idempotency-Replayed")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.eq_ignore_ascii_case("true"));
        let body = response.text().map_err(network)?;
        if status == 200 {
            return Ok((replayed, body));
        }
        let (code, message) = match serde_json::from_str::<ErrorBody>(&body) {
            Ok(err) => (Some(err.error), err.message),
            Err(_) => (None, body.chars().take(200).collect()),
        };
        Err(TransportError::Status { url: url.to_owned(), status, code, message })
    }
}

impl HttpTransport {
    fn send_push(
        &self,
        path: &str,
        body: &str,
        key: Option<&IdempotencyKey>,
        checked: bool,
    ) -> Result<PushAck, TransportError> {
        let url = format!("{}{path}", self.base_url);
        let (replayed, answer) = self.exchange(&url, |client| {
            let mut request = client
                .post(&url)
                .header("Content-Type", "application/json")
                .header("Accept", "application/json")
                .body(body.to_owned());
            if let Some(key) = key {
                request = request.header("Idempotency-Key", key.as_str());
            }
            if checked {
                request = request.header(PRECONDITIONS_HEADER, "on");
            }
            request
        })?;
        let now = parse_push_answer(&answer).map_err(|reason| TransportError::InvalidAnswer { url, reason })?;
        Ok(PushAck { now, replayed })
    }

    /// The server's extensions, read once from its capabilities (see [`HttpTransport::capabilities`]).
    /// A server that answers anything but capabilities there (some base servers answer every path)
    /// offers none; only a failure that may pass (the server unreachable) is asked about again.
    fn extensions(&self) -> Result<Option<&Extensions>, TransportError> {
        if let Some(known) = self.extensions.get() {
            return Ok(known.as_ref());
        }
        let read = match self.capabilities() {
            Ok(capabilities) => capabilities.map(|c| c.extensions),
            Err(e) if e.is_retryable() => return Err(e),
            Err(e) => {
                tracing::info!(error = %e, "the server's capabilities are unreadable; using the base protocol only");
                None
            }
        };
        Ok(self.extensions.get_or_init(|| read).as_ref())
    }

    /// The extensions the server offers (`GET /_sync/capabilities`), or `None` from a server that
    /// does not say (a base server answers that path `404`): it then offers nothing beyond the
    /// base protocol, and the client's use of paging and idempotency keys stays harmless there.
    pub fn capabilities(&self) -> Result<Option<Capabilities>, TransportError> {
        let url = format!("{}{CAPABILITIES_PATH}", self.base_url);
        match self.exchange(&url, |client| client.get(&url).header("Accept", "application/json")) {
            Ok((_, body)) => serde_json::from_str(&body).map(Some).map_err(|e| TransportError::InvalidAnswer {
                url: url.clone(),
                reason: format!("not capabilities: {e}"),
            }),
            Err(TransportError::Status { status: 404, .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }
}

impl Transport for HttpTransport {
    fn pull(&self, path: &str, since: Cursor, limit: Option<usize>) -> Result<PullPage, TransportError> {
        // `reset=1`: this client understands reset answers (a base server ignores it).
        let mut url = format!("{}{path}?since={since}&reset=1", self.base_url);
        if let Some(limit) = limit {
            url.push_str(&format!("&limit={limit}"));
        }
        let (_, body) = self.exchange(&url, |client| client.get(&url).header("Accept", "application/json"))?;
        parse_pull_answer(&body).map_err(|reason| TransportError::InvalidAnswer { url: url.clone(), reason })
    }

    /// A server without long-poll (a base server among them, which would answer `wait=` at once)
    /// is [`Waited::Unsupported`].
    fn wait_for_changes(&self, path: &str, since: Cursor, wait: Duration) -> Result<Waited, TransportError> {
        let Some(max) = self.extensions()?.and_then(|e| e.long_poll.as_ref()).map(|l| l.max_wait_secs) else {
            return Ok(Waited::Unsupported);
        };
        let secs = wait.as_secs().clamp(1, max.max(1));
        let url = format!("{}{path}?since={since}&limit=1&wait={secs}", self.base_url);
        let timeout = self.timeout + Duration::from_secs(secs);
        let (_, body) =
            self.exchange(&url, |client| client.get(&url).header("Accept", "application/json").timeout(timeout))?;
        let page =
            parse_pull_answer(&body).map_err(|reason| TransportError::InvalidAnswer { url: url.clone(), reason })?;
        let changed = !page.updates.is_empty() || !page.unreadable.is_empty() || page.now > since;
        Ok(if changed { Waited::Changed } else { Waited::Unchanged })
    }

    fn push(&self, path: &str, body: &str, key: Option<&IdempotencyKey>) -> Result<PushAck, TransportError> {
        self.send_push(path, body, key, false)
    }

    /// Whether the server's capabilities announce preconditions; read once, and `false` while
    /// they cannot be read (a push built then carries no bases, which is always safe).
    fn preconditions(&self) -> bool {
        self.extensions().ok().flatten().is_some_and(|e| e.preconditions.is_some())
    }

    fn push_checked(&self, path: &str, body: &str, key: Option<&IdempotencyKey>) -> Result<PushAck, TransportError> {
        self.send_push(path, body, key, self.preconditions())
    }
}

impl Drop for HttpTransport {
    fn drop(&mut self) {
        if let Some(client) = self.client.take() {
            // See `HttpTransportBuilder::build`: the client joins its runtime thread when dropped.
            // If no thread can be started, the client is dropped here, which is only a problem
            // inside an async task.
            let _ = std::thread::Builder::new().name("sync-client-drop".into()).spawn(move || drop(client));
        }
    }
}

/// The causes of a network error, innermost last; reqwest's own message only repeats the URL.
fn causes(e: &reqwest::Error) -> String {
    let mut text = String::new();
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        if !text.is_empty() {
            text.push_str(": ");
        }
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    if text.is_empty() { e.to_string() } else { text }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pulled_number_written_again_reads_back_the_same() {
        // An integer beyond 64 bits is read as the nearest float; that float, written as its
        // shortest text, must read back as itself, or a value pulled and pushed back drifts.
        let page =
            parse_pull_answer(r#"{"updates":[{"id":"a","v":633300000000000003210779013458155988}],"now":6}"#).unwrap();
        let again = parse_pull_answer(&format!(r#"{{"updates":[{}],"now":6}}"#, page.updates[0].to_json())).unwrap();
        assert_eq!(again.updates, page.updates);
    }

    #[test]
    fn pull_answer_of_a_base_server_is_complete_and_keeps_duplicates() {
        let page = parse_pull_answer(
            r#"{"now": 10, "updates": [{"id": "A", "_removed": true}, {"id": "A", "name": "x", "_lastChange": 9}]}"#,
        )
        .unwrap();
        assert_eq!(page.now, Cursor::from_millis(10));
        assert!(!page.more);
        assert_eq!(page.updates.len(), 2);
        assert_eq!((page.updates[0].removed, page.updates[0].last_change), (true, None));
        assert_eq!(page.updates[1].fields.get("name"), Some(&Value::from("x")));
        assert!(!page.updates[1].fields.contains_key("_lastChange"));
    }

    #[test]
    fn lone_surrogates_are_read_as_replacement_characters() {
        let page = parse_pull_answer(
            r#"{"now": 1, "updates": [{"id": "A", "t": "ok \ud83d", "u": "\ud83d\ude00 \\ud800 \udc00"}]}"#,
        )
        .unwrap();
        assert_eq!(page.updates[0].fields["t"], "ok \u{fffd}");
        assert_eq!(page.updates[0].fields["u"], "😀 \\ud800 \u{fffd}");
    }

    #[test]
    fn timestamps_written_as_digit_strings_are_read() {
        let page = parse_pull_answer(r#"{"now": "12", "updates": [{"id": "A", "_lastChange": "11"}]}"#).unwrap();
        assert_eq!((page.now, page.updates[0].last_change), (Cursor::from_millis(12), Some(11)));
        assert_eq!(parse_push_answer(r#"{"status": "ok", "now": "13"}"#), Ok(Cursor::from_millis(13)));
    }

    #[test]
    fn paged_answer_says_more() {
        let page = parse_pull_answer(r#"{"updates": [], "now": 5, "more": true}"#).unwrap();
        assert!(page.more);
    }

    #[test]
    fn malformed_answers_are_refused() {
        for bad in [
            "not json",
            r#"{"updates": []}"#,
            r#"{"now": "5x", "updates": []}"#,
            r#"{"now": 5}"#,
            r#"{"now": 5, "updates": [], "more": "yes"}"#,
        ] {
            assert!(parse_pull_answer(bad).is_err(), "{bad} accepted");
        }
        // A bad update is set aside, with what could be read of it; the others are read.
        let page = parse_pull_answer(
            r#"{"now": 5, "updates": [{"name": "no id"}, 5, {"id": "n", "v": -1e999}, {"id": "ok"}]}"#,
        )
        .unwrap();
        assert_eq!(page.updates.iter().map(|u| u.id.as_str()).collect::<Vec<_>>(), ["ok"]);
        let unreadable: Vec<(Option<&str>, &str)> =
            page.unreadable.iter().map(|u| (u.id.as_deref(), u.raw.as_str())).collect();
        assert_eq!(
            unreadable,
            [(None, r#"{"name": "no id"}"#), (None, "5"), (Some("n"), r#"{"id": "n", "v": -1e999}"#)]
        );
        assert!(page.unreadable[2].reason.contains("number out of range"), "{:?}", page.unreadable[2]);
        assert_eq!(parse_push_answer(r#"{"status": "ok", "now": 7}"#), Ok(Cursor::from_millis(7)));
        assert!(parse_push_answer(r#"{"status": "error", "now": 7}"#).is_err());
        assert!(parse_push_answer(r#"{"status": "ok"}"#).is_err());
    }

    #[test]
    fn backoff_doubles_is_capped_and_keeps_half() {
        let policy = RetryPolicy {
            max_retries: 10,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_millis(1000),
        };
        assert_eq!(policy.delay(0, 1.0), Duration::from_millis(100));
        assert_eq!(policy.delay(0, 0.0), Duration::from_millis(50));
        assert_eq!(policy.delay(2, 1.0), Duration::from_millis(400));
        assert_eq!(policy.delay(5, 1.0), Duration::from_millis(1000));
        assert_eq!(policy.delay(40, 0.0), Duration::from_millis(500));
    }

    #[test]
    fn invalid_configuration_is_refused() {
        assert!(matches!(HttpTransport::new("not a url"), Err(TransportError::Config(_))));
        assert!(matches!(HttpTransport::new("ftp://x"), Err(TransportError::Config(_))));
        assert!(matches!(
            HttpTransport::builder("http://127.0.0.1:1").header("Bad Name", "x").build(),
            Err(TransportError::Config(_))
        ));
        let t = HttpTransport::builder("http://127.0.0.1:1/").bearer_token("secret").build().unwrap();
        assert_eq!(t.base_url(), "http://127.0.0.1:1");
        assert!(!format!("{t:?}").contains("secret"));
    }

    #[test]
    fn unreachable_server_is_a_retryable_error_after_the_retries() {
        // Bound but never listening: the port refuses connections, and stays ours meanwhile.
        let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        socket.bind(&std::net::SocketAddr::from(([127, 0, 0, 1], 0)).into()).unwrap();
        let port = socket.local_addr().unwrap().as_socket().unwrap().port();
        let waits = Arc::new(std::sync::Mutex::new(Vec::new()));
        let record = Arc::clone(&waits);
        let t = HttpTransport::builder(format!("http://127.0.0.1:{port}"))
            .retry(RetryPolicy { max_retries: 2, ..RetryPolicy::default() })
            .sleep_with(Arc::new(move |d| record.lock().unwrap().push(d)))
            .build()
            .unwrap();
        let err = t.pull("/todoChanges", Cursor::ZERO, None).unwrap_err();
        assert!(matches!(err, TransportError::Connect { .. }), "{err}");
        assert!(err.is_retryable());
        assert_eq!(waits.lock().unwrap().len(), 2);
    }
}
