//! The routes of the admin JSON API (see [`super`]).
//!
//! | path | method | answer |
//! |---|---|---|
//! | `/admin/api/subscriptions` | GET | every subscription: enabled, pending, failing, dead, lag |
//! | `/admin/api/subscriptions/{name}/enable`, `.../disable` | POST | `{"status":"ok"}` |
//! | `/admin/api/events?state=&subscription=&entity=&object_id=&partition=&event_id=&from_ms=&until_ms=&before=&limit=` | GET | events, newest first, and `next_before` for the next page |
//! | `/admin/api/events/count?...` (the same filters) | GET | `{"count": n}` |
//! | `/admin/api/events/{seq}` | GET | the event and its attempts, newest first |
//! | `/admin/api/events/{seq}/redrive`, `.../skip` | POST | `{"redriven": n}`, `{"skipped": n}` |
//! | `/admin/api/redrive` | POST `{"seqs": [...]}` or `{"filter": {...}}` | `{"redriven": n}` |
//! | `/admin/api/skip` | POST `{"seqs": [...]}` | `{"skipped": n}` |
//! | `/admin/api/audit?limit=` | GET | the audit log, newest first |

use actix_web::{HttpRequest, HttpResponse, web};
use serde::Deserialize;
use serde_json::{Value, json};
use sync_proto::ErrorCode;

use super::{Access, audit_action};
use crate::auth::Identity;
use crate::error::ApiError;
use crate::state::AppState;
use crate::store::outbox::{EventFilter, EventRow, STATES};

/// Events one page lists at most, and by default.
const MAX_PAGE: usize = 500;
const DEFAULT_PAGE: usize = 50;

/// The admin routes, under `/admin`.
pub fn configure(routes: &mut web::ServiceConfig) {
    // Each path is a resource of its own, so that another method on it is a `405` with `Allow`,
    // as on every other path of the server, rather than the `404` of a path that names nothing.
    let get = |path, handler| web::resource(path).route(handler).default_service(web::to(get_only));
    let post = |path, handler| web::resource(path).route(handler).default_service(web::to(post_only));
    routes.service(
        web::scope("/admin")
            .service(get("/api/subscriptions", web::get().to(subscriptions)))
            .service(post("/api/subscriptions/{name}/{action}", web::post().to(set_enabled)))
            .service(get("/api/events", web::get().to(events)))
            .service(get("/api/events/count", web::get().to(count)))
            .service(get("/api/events/{seq}", web::get().to(event)))
            .service(post("/api/events/{seq}/{action}", web::post().to(act_on_one)))
            .service(post("/api/redrive", web::post().to(redrive)))
            .service(post("/api/skip", web::post().to(skip)))
            .service(get("/api/audit", web::get().to(audit)))
            // The console's HTML pages share the scope: one `/admin` prefix, one authentication.
            .configure(super::console::configure)
            .default_service(web::to(not_found)),
    );
}

/// A path of the admin scope that names nothing: a JSON error under `/admin/api`, a page elsewhere.
async fn not_found(req: HttpRequest, state: web::Data<AppState>) -> Result<HttpResponse, actix_web::Error> {
    if !(req.path() == "/admin/api" || req.path().starts_with("/admin/api/")) {
        return Ok(super::console::not_found(req, state).await?);
    }
    operator(&req, &state, false).await?;
    Err(ApiError::NotFound(format!("no admin resource at {} {}", req.method(), req.path())).into())
}

/// Another method on a resource that only reads; told only to operators, like a missing path.
async fn get_only(req: HttpRequest, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    operator(&req, &state, false).await?;
    Err(ApiError::MethodNotAllowed { method: req.method().to_string(), allow: "GET" })
}

/// Another method on a resource that only acts.
async fn post_only(req: HttpRequest, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    operator(&req, &state, false).await?;
    Err(ApiError::MethodNotAllowed { method: req.method().to_string(), allow: "POST" })
}

/// The operator of a request ([`super::operator`]); a change must also be JSON.
async fn operator(req: &HttpRequest, state: &AppState, change: bool) -> Result<Identity, ApiError> {
    let who = super::operator(req, state, if change { Access::Change } else { Access::Look }).await?;
    let json = || {
        req.headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|t| t.trim_start().starts_with("application/json"))
    };
    if change && !json() {
        return Err(ApiError::Invalid(ErrorCode::InvalidHeader, "changes take Content-Type: application/json".into()));
    }
    Ok(who)
}

async fn subscriptions(req: HttpRequest, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    operator(&req, &state, false).await?;
    let now = state.clock.now_ms();
    let stats = state.store.subscriptions(&state.subscriptions).await?;
    let list: Vec<Value> = stats
        .into_iter()
        .map(|s| {
            let lag = s.oldest_pending_ms.map_or(0.0, |oldest| (now - oldest).max(0) as f64 / 1000.0);
            json!({
                "name": s.name,
                "configured": state.subscriptions.contains(&s.name),
                "enabled": s.enabled,
                "disabled_reason": s.disabled_reason,
                "pending": s.pending,
                "failing": s.failing,
                "dead": s.dead,
                "lag_seconds": lag,
            })
        })
        .collect();
    Ok(HttpResponse::Ok().json(json!({ "subscriptions": list })))
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Reason {
    reason: Option<String>,
}

async fn set_enabled(
    req: HttpRequest,
    path: web::Path<(String, String)>,
    body: web::Bytes,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let who = operator(&req, &state, true).await?;
    let (name, action) = path.into_inner();
    let enabled = match action.as_str() {
        "enable" => true,
        "disable" => false,
        _ => return Err(ApiError::NotFound(format!("no admin action {action:?}: enable or disable"))),
    };
    if !state.subscriptions.contains(&name) {
        return Err(ApiError::NotFound(format!("no subscription {name:?} is configured")));
    }
    let reason: Reason = json_body(&body)?;
    let reason = (!enabled).then(|| reason.reason.unwrap_or_else(|| format!("disabled by {}", who.subject)));
    state.store.set_enabled(&name, enabled, reason.as_deref(), state.clock.now_ms()).await?;
    audit_action(&state, &who, &action, format!("subscription {name}")).await?;
    if enabled {
        state.outbox_wake.wake();
    }
    Ok(HttpResponse::Ok().json(json!({"status": "ok"})))
}

/// Which events an operator asks for: the filters of a query string, or of a JSON body.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct Filter {
    state: Option<String>,
    subscription: Option<String>,
    entity: Option<String>,
    object_id: Option<String>,
    partition: Option<String>,
    event_id: Option<String>,
    from_ms: Option<Whole>,
    until_ms: Option<Whole>,
}

/// An integer of a request, also when a JSON body writes it with a zero fraction (`5.0`): JSON
/// Schema, in which docs/openapi.yaml describes the API, counts that as an integer, and so do
/// clients generated from it.
#[derive(Debug, Clone, Copy)]
struct Whole(i64);

impl<'de> Deserialize<'de> for Whole {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = Whole;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an integer of 64 bits")
            }
            fn visit_i64<E: serde::de::Error>(self, n: i64) -> Result<Whole, E> {
                Ok(Whole(n))
            }
            fn visit_u64<E: serde::de::Error>(self, n: u64) -> Result<Whole, E> {
                i64::try_from(n).map(Whole).map_err(|_| E::custom(format!("{n} is too large for 64 bits")))
            }
            fn visit_f64<E: serde::de::Error>(self, n: f64) -> Result<Whole, E> {
                // Up to 2^53 a float holds every integer exactly, so a whole one was written as that
                // integer; beyond, `-9223372036854775809` would round into range and pass as another.
                const EXACT: f64 = 9_007_199_254_740_992.0;
                if n.fract() == 0.0 && n.abs() <= EXACT {
                    Ok(Whole(n as i64))
                } else {
                    Err(E::custom(format!("{n} is not an integer of 64 bits")))
                }
            }
        }
        deserializer.deserialize_i64(Visitor)
    }
}

/// Where a page of events starts, and how long it is.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct Page {
    before: Option<i64>,
    limit: Option<usize>,
}

impl Filter {
    /// The filter and the page of a query string.
    fn of_query(req: &HttpRequest) -> Result<(Self, Page), ApiError> {
        let (mut filter, mut page) =
            (form_urlencoded::Serializer::new(String::new()), form_urlencoded::Serializer::new(String::new()));
        for (key, value) in form_urlencoded::parse(req.query_string().as_bytes()) {
            let half = if key == "before" || key == "limit" { &mut page } else { &mut filter };
            half.append_pair(&key, &value);
        }
        Ok((query_of(&filter.finish())?, query_of(&page.finish())?))
    }

    fn filter(&self) -> Result<EventFilter, ApiError> {
        let states: Vec<String> = self
            .state
            .iter()
            .flat_map(|s| s.split(','))
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(String::from)
            .collect();
        if let Some(bad) = states.iter().find(|s| !STATES.contains(&s.as_str())) {
            return Err(ApiError::Invalid(
                ErrorCode::InvalidQuery,
                format!("state {bad:?} is not one of {}", STATES.join(", ")),
            ));
        }
        Ok(EventFilter {
            subscription: self.subscription.clone(),
            states,
            entity: self.entity.clone(),
            object_id: self.object_id.clone(),
            partition: self.partition.clone(),
            event_id: self.event_id.clone(),
            from_ms: self.from_ms.map(|w| w.0),
            until_ms: self.until_ms.map(|w| w.0),
            error_contains: None,
        })
    }
}

/// Parses a query string into `T`, as a `400 invalid_query` when it does not fit.
fn query_of<T: serde::de::DeserializeOwned>(query: &str) -> Result<T, ApiError> {
    web::Query::<T>::from_query(query)
        .map(web::Query::into_inner)
        .map_err(|e| ApiError::Invalid(ErrorCode::InvalidQuery, e.to_string()))
}

/// A JSON object body (an empty one is `{}`), as a `400 malformed_json` when it does not fit.
/// serde would also read a struct from an array of its fields in order, so `[]` would pass as
/// `{}`: every body of the admin API is an object, and anything else is refused first.
fn json_body<T: serde::de::DeserializeOwned + Default>(body: &[u8]) -> Result<T, ApiError> {
    // JSON's own whitespace only: ASCII's also has the form feed, which no JSON text may hold.
    if body.iter().all(|b| matches!(b, b' ' | b'\t' | b'\n' | b'\r')) {
        return Ok(T::default());
    }
    let malformed = |why: String| ApiError::Invalid(ErrorCode::MalformedJson, why);
    match serde_json::from_slice(body).map_err(|e| malformed(e.to_string()))? {
        object @ Value::Object(_) => serde_json::from_value(object).map_err(|e| malformed(e.to_string())),
        _ => Err(malformed("the body must be a JSON object".into())),
    }
}

/// An optional struct read only from a JSON object, never from an array of its fields (which
/// serde accepts, and would make `"filter": [null]` a filter that matches every event).
fn object_only<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: serde::de::DeserializeOwned,
{
    match Option::<serde_json::Map<String, Value>>::deserialize(deserializer)? {
        None => Ok(None),
        Some(map) => serde_json::from_value(Value::Object(map)).map(Some).map_err(serde::de::Error::custom),
    }
}

/// An event row as the API shows it: its object as JSON, not as text.
fn row_json(row: EventRow) -> Value {
    let object = row.event.object.as_deref().and_then(|o| serde_json::from_str::<Value>(o).ok());
    let mut value = serde_json::to_value(&row).unwrap_or(Value::Null);
    value["object"] = object.unwrap_or(Value::Null);
    value
}

async fn events(req: HttpRequest, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    operator(&req, &state, false).await?;
    let (filter, page) = Filter::of_query(&req)?;
    let limit = page.limit.unwrap_or(DEFAULT_PAGE).clamp(1, MAX_PAGE);
    let rows = state.store.events(&filter.filter()?, page.before, limit).await?;
    let next_before = (rows.len() == limit).then(|| rows.last().map(|r| r.seq)).flatten();
    let rows: Vec<Value> = rows.into_iter().map(row_json).collect();
    Ok(HttpResponse::Ok().json(json!({ "events": rows, "next_before": next_before })))
}

async fn count(req: HttpRequest, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    operator(&req, &state, false).await?;
    let (filter, _) = Filter::of_query(&req)?;
    let n = state.store.count(&filter.filter()?).await?;
    Ok(HttpResponse::Ok().json(json!({ "count": n })))
}

fn seq_of(raw: &str) -> Result<i64, ApiError> {
    raw.parse().map_err(|_| ApiError::NotFound(format!("no event {raw:?}: events are numbered")))
}

async fn event(
    req: HttpRequest,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    operator(&req, &state, false).await?;
    let seq = seq_of(&path)?;
    let Some((row, attempts)) = state.store.event(seq).await? else {
        return Err(ApiError::NotFound(format!("no event {seq}")));
    };
    Ok(HttpResponse::Ok().json(json!({ "event": row_json(row), "attempts": attempts })))
}

async fn act_on_one(
    req: HttpRequest,
    path: web::Path<(String, String)>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let who = operator(&req, &state, true).await?;
    let (seq, action) = path.into_inner();
    let seq = seq_of(&seq)?;
    if state.store.event(seq).await?.is_none() {
        return Err(ApiError::NotFound(format!("no event {seq}")));
    }
    let now = state.clock.now_ms();
    let answer = match action.as_str() {
        "redrive" => {
            let n = state.store.redrive(&EventFilter::default(), Some(&[seq]), now).await?;
            state.outbox_wake.wake();
            json!({ "redriven": n })
        }
        "skip" => json!({ "skipped": state.store.skip(&[seq], now).await? }),
        _ => return Err(ApiError::NotFound(format!("no admin action {action:?}: redrive or skip"))),
    };
    audit_action(&state, &who, &action, format!("event {seq}: {answer}")).await?;
    Ok(HttpResponse::Ok().json(answer))
}

/// Which events a redrive or a skip is about: listed, or matching a filter.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct Selection {
    seqs: Option<Vec<Whole>>,
    #[serde(deserialize_with = "object_only")]
    filter: Option<Filter>,
}

async fn redrive(req: HttpRequest, body: web::Bytes, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let who = operator(&req, &state, true).await?;
    let selection: Selection = json_body(&body)?;
    let now = state.clock.now_ms();
    let (n, detail) = match selection {
        Selection { seqs: Some(seqs), filter: None } => {
            let seqs: Vec<i64> = seqs.iter().map(|w| w.0).collect();
            (state.store.redrive(&EventFilter::default(), Some(&seqs), now).await?, format!("events {seqs:?}"))
        }
        Selection { seqs: None, filter: Some(filter) } => {
            let filter = filter.filter()?;
            (state.store.redrive(&filter, None, now).await?, format!("filter {filter:?}"))
        }
        _ => {
            return Err(ApiError::Invalid(
                ErrorCode::InvalidBody,
                "send either {\"seqs\": [...]} or {\"filter\": {...}}".into(),
            ));
        }
    };
    state.outbox_wake.wake();
    audit_action(&state, &who, "redrive", format!("{detail}: {n} redriven")).await?;
    Ok(HttpResponse::Ok().json(json!({ "redriven": n })))
}

async fn skip(req: HttpRequest, body: web::Bytes, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let who = operator(&req, &state, true).await?;
    let Selection { seqs: Some(seqs), filter: None } = json_body(&body)? else {
        return Err(ApiError::Invalid(ErrorCode::InvalidBody, "send {\"seqs\": [...]}".into()));
    };
    let seqs: Vec<i64> = seqs.iter().map(|w| w.0).collect();
    let n = state.store.skip(&seqs, state.clock.now_ms()).await?;
    audit_action(&state, &who, "skip", format!("events {seqs:?}: {n} skipped")).await?;
    Ok(HttpResponse::Ok().json(json!({ "skipped": n })))
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct AuditQuery {
    limit: Option<usize>,
}

async fn audit(req: HttpRequest, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    operator(&req, &state, false).await?;
    let query: AuditQuery = query_of(req.query_string())?;
    let entries = state.store.audit_log(query.limit.unwrap_or(100).clamp(1, 1000)).await?;
    let entries: Vec<Value> = entries
        .into_iter()
        .map(|(at_ms, user, action, detail)| json!({"at_ms": at_ms, "user": user, "action": action, "detail": detail}))
        .collect();
    Ok(HttpResponse::Ok().json(json!({ "entries": entries })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_are_empty_json_or_objects() {
        assert_eq!(json_body::<Reason>(b"").unwrap().reason, None);
        assert_eq!(json_body::<Reason>(b" \r\n\t").unwrap().reason, None);
        assert_eq!(json_body::<Reason>(br#"{"reason":"gone"}"#).unwrap().reason.as_deref(), Some("gone"));
        // A form feed is whitespace to ASCII, not to JSON: such a body is no JSON text at all.
        for bad in [&b"\x0c"[..], b" \x0c ", b"[]", b"null", b"\"x\""] {
            assert!(json_body::<Reason>(bad).is_err(), "{bad:?}");
        }
    }
}
