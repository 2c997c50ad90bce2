//! The admin console: HTML pages under `/admin`, for people, beside the JSON API of [`super::api`].
//!
//! | path | method | page or action |
//! |---|---|---|
//! | `/admin` | GET | the overview: entities, store health, subscriptions, stream leases, long-polls |
//! | `/admin/failures?subscription=&entity=&object_id=&partition=&event_id=&error=&state=&from=&until=&before=` | GET | the events of a filter (dead and failing by default), newest first |
//! | `/admin/events/{seq}` | GET | one event: its fields, last error, payload, attempts newest first |
//! | `/admin/events/{seq}/redrive`, `.../skip` | POST | redrive or skip it |
//! | `/admin/redrive` | POST `seq=...` (a selection) or `all=1` and a filter | redrive them; a filter first gets a confirmation page with the count |
//! | `/admin/skip` | POST `seq=...` | skip them |
//! | `/admin/subscriptions/{name}/enable`, `.../disable` | POST (`reason=`) | enable or disable a subscription |
//! | `/admin/search?q=` | GET | events by event id, object id, user or partition, or event number |
//! | `/admin/audit` | GET | the audit log of operators' actions |
//!
//! Every page authenticates through [`super::operator`]; every form that changes something is a
//! `POST` that must pass its change checks (read-only mode, the origin) and carry the operator's
//! CSRF token ([`super::Admins::csrf_token`]) in its `csrf` field. An action answers `303` back to
//! the page it came from, whose next rendering shows what was done (a flash message carried by a
//! short-lived cookie). The overview and the failure searches run under `[admin]
//! statement_timeout_ms` ([`crate::store::dashboard`]). Bad input is an error page with the status
//! the JSON API would answer, and changes nothing.

use actix_web::cookie::{Cookie, SameSite};
use actix_web::http::StatusCode;
use actix_web::http::header::{self, ContentType};
use actix_web::{HttpRequest, HttpResponse, ResponseError, web};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use minijinja::context;
use minijinja::value::{Serde, Value};
use serde::Serialize;
use sync_proto::ErrorCode;

use super::text::{first_line, parse_time, span, time};
use super::{Access, audit_action, operator, templates};
use crate::auth::{AuthError, Identity};
use crate::error::ApiError;
use crate::state::AppState;
use crate::store::StoreError;
use crate::store::outbox::{EventFilter, EventRow, STATES};

/// Events one page of failures lists.
const PAGE: usize = 50;
/// Events a search lists at most for each way it matches.
const SEARCH_LIMIT: usize = 50;
/// Audit entries the audit page lists.
const AUDIT_LIMIT: usize = 200;
/// The longest value of a filter field or a search, in bytes: longer ones are refused (`400`)
/// rather than sent to the store.
const MAX_VALUE: usize = 1024;
/// The most `seq` values a selection may hold (more than a page ever shows).
const MAX_SELECTION: usize = 1000;
/// The cookie carrying the message of the last action to the next page.
const FLASH: &str = "sync_admin_flash";
/// What the failures page shows without a `state`: what needs an operator.
const FAILURES: &str = "dead,failed";

/// The console's routes, inside the `/admin` scope of [`super::api::configure`].
pub fn configure(routes: &mut web::ServiceConfig) {
    let get = |path, handler| web::resource(path).route(handler).default_service(web::to(get_only));
    let post = |path, handler| web::resource(path).route(handler).default_service(web::to(post_only));
    routes
        .service(get(vec!["", "/"], web::get().to(overview)))
        .service(get(vec!["/failures"], web::get().to(failures)))
        .service(get(vec!["/events/{seq}"], web::get().to(event)))
        .service(post(vec!["/events/{seq}/{action}"], web::post().to(act_on_one)))
        .service(post(vec!["/redrive"], web::post().to(redrive)))
        .service(post(vec!["/skip"], web::post().to(skip)))
        .service(post(vec!["/subscriptions/{name}/{action}"], web::post().to(set_enabled)))
        .service(get(vec!["/search"], web::get().to(search)))
        .service(get(vec!["/audit"], web::get().to(audit)));
}

/// An error as an HTML page: the status and headers of [`ApiError::answer`], the message of its
/// JSON body (which never carries a database's own text).
#[derive(Debug)]
pub struct PageError(ApiError);

impl<E: Into<ApiError>> From<E> for PageError {
    fn from(e: E) -> Self {
        Self(e.into())
    }
}

impl std::fmt::Display for PageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl ResponseError for PageError {
    fn status_code(&self) -> StatusCode {
        self.0.status_code()
    }

    fn error_response(&self) -> HttpResponse {
        let status = self.0.status_code();
        let chrome =
            Chrome { operator: String::new(), csrf: String::new(), read_only: false, flash: None, section: "" };
        let message = match &self.0 {
            ApiError::Store(e) => store_message(e),
            other => other.body().message,
        };
        let context = context! { chrome => Serde(chrome), status => status.as_u16(), message };
        let page = templates::render("error.html", context)
            .unwrap_or_else(|e| format!("error {status}; the error page failed: {e}"));
        let mut answer = self.0.answer();
        secure(&mut answer);
        answer.content_type(ContentType::html()).body(page)
    }
}

type Page = Result<HttpResponse, PageError>;

/// What a page says of a store failure: a transient one in the store's own words (which never
/// hold the database's text: that is the error's cause, logged), a fault as the API says it.
fn store_message(e: &StoreError) -> String {
    match e {
        StoreError::Unavailable { .. } => format!("{e}; retry shortly"),
        other => ApiError::Store(other.clone()).body().message,
    }
}

fn bad_query(why: impl Into<String>) -> PageError {
    PageError(ApiError::Invalid(ErrorCode::InvalidQuery, why.into()))
}

fn bad_form(why: impl Into<String>) -> PageError {
    PageError(ApiError::Invalid(ErrorCode::InvalidBody, why.into()))
}

/// Headers of every console answer: never cached (pages show live state and carry the CSRF token),
/// never framed, no script, forms only to this server.
fn secure(answer: &mut actix_web::HttpResponseBuilder) {
    answer
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .insert_header((
            header::CONTENT_SECURITY_POLICY,
            "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ))
        .insert_header((header::REFERRER_POLICY, "same-origin"))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"));
}

/// What every page shows around its content.
#[derive(Debug, Serialize)]
struct Chrome {
    operator: String,
    csrf: String,
    read_only: bool,
    flash: Option<String>,
    section: &'static str,
}

/// A page's operator and chrome, from a `GET`.
async fn look(req: &HttpRequest, state: &AppState, section: &'static str) -> Result<(Identity, Chrome), PageError> {
    let who = operator(req, state, Access::Look).await?;
    let flash = req
        .cookie(FLASH)
        .and_then(|c| URL_SAFE_NO_PAD.decode(c.value()).ok())
        .and_then(|bytes| String::from_utf8(bytes).ok())
        .map(|text| first_line(&text, 300));
    let chrome = chrome(state, &who, section, flash);
    Ok((who, chrome))
}

fn chrome(state: &AppState, who: &Identity, section: &'static str, flash: Option<String>) -> Chrome {
    let admins = state.admins.as_deref();
    Chrome {
        operator: who.subject.clone(),
        csrf: admins.map(|a| a.csrf_token(&who.subject)).unwrap_or_default(),
        read_only: admins.is_some_and(|a| a.read_only),
        flash,
        section,
    }
}

/// `template` rendered with the chrome and `page`; clears a flash message once shown.
fn render(template: &str, chrome: Chrome, page: Value) -> Page {
    let shown_flash = chrome.flash.is_some();
    let html = templates::render(template, context! { chrome => Serde(chrome), ..page })
        .map_err(|e| ApiError::Internal(format!("the console page {template} failed to render: {e}")))?;
    let mut answer = HttpResponse::Ok();
    secure(&mut answer);
    if shown_flash {
        let mut gone = flash_cookie(String::new());
        gone.make_removal();
        answer.cookie(gone);
    }
    Ok(answer.content_type(ContentType::html()).body(html))
}

fn flash_cookie(value: String) -> Cookie<'static> {
    Cookie::build(FLASH, value).path("/admin").http_only(true).same_site(SameSite::Strict).finish()
}

/// `303 See Other` to `to`, whose page then shows `message`.
fn done(to: &str, message: String) -> HttpResponse {
    let mut cookie = flash_cookie(URL_SAFE_NO_PAD.encode(message.as_bytes()));
    cookie.set_max_age(actix_web::cookie::time::Duration::seconds(60));
    HttpResponse::SeeOther().insert_header((header::LOCATION, to)).cookie(cookie).finish()
}

/// The `name=value` pairs of a query string or a form body, each value bounded.
fn pairs(encoded: &[u8]) -> Result<Vec<(String, String)>, PageError> {
    let pairs: Vec<(String, String)> =
        form_urlencoded::parse(encoded).map(|(k, v)| (k.into_owned(), v.into_owned())).collect();
    if let Some((key, _)) = pairs.iter().find(|(k, v)| k.len() > MAX_VALUE || v.len() > MAX_VALUE) {
        return Err(bad_query(format!("the value of {:?} is longer than {MAX_VALUE} bytes", first_line(key, 40))));
    }
    Ok(pairs)
}

/// The values of `name` among `pairs`.
fn values<'p>(pairs: &'p [(String, String)], name: &'p str) -> impl Iterator<Item = &'p str> + 'p {
    pairs.iter().filter(move |(k, _)| k == name).map(|(_, v)| v.as_str())
}

/// The last non-empty value of `name`, trimmed.
fn value(pairs: &[(String, String)], name: &str) -> Option<String> {
    values(pairs, name).map(str::trim).filter(|v| !v.is_empty()).last().map(String::from)
}

/// A form's operator: the change checks of [`super::operator`], then its CSRF token.
async fn act(req: &HttpRequest, state: &AppState, form: &[(String, String)]) -> Result<Identity, PageError> {
    let who = operator(req, state, Access::Change).await?;
    let token = values(form, "csrf").last().unwrap_or_default();
    let admins = state.admins.as_deref().ok_or_else(|| ApiError::Internal("no operators".into()))?;
    if !admins.csrf_matches(&who.subject, token) {
        let why = AuthError::Forbidden(
            "the form's CSRF token is missing or is not this operator's: reload the page and send it again".into(),
        );
        return Err(ApiError::Auth { why, challenge: super::CHALLENGE.into() }.into());
    }
    Ok(who)
}

/// A path under `/admin` outside the API that names no page.
pub(super) async fn not_found(req: HttpRequest, state: web::Data<AppState>) -> Page {
    operator(&req, &state, Access::Look).await?;
    let path = first_line(req.path(), 200);
    Err(ApiError::NotFound(format!("no admin page at {} {path}", req.method())).into())
}

async fn get_only(req: HttpRequest, state: web::Data<AppState>) -> Page {
    operator(&req, &state, Access::Look).await?;
    Err(ApiError::MethodNotAllowed { method: req.method().to_string(), allow: "GET" }.into())
}

async fn post_only(req: HttpRequest, state: web::Data<AppState>) -> Page {
    operator(&req, &state, Access::Look).await?;
    Err(ApiError::MethodNotAllowed { method: req.method().to_string(), allow: "POST" }.into())
}

/// The filter of the failures page, as typed (empty: not filtered on).
#[derive(Debug, Clone, Default, Serialize)]
struct Filters {
    subscription: String,
    entity: String,
    object_id: String,
    partition: String,
    event_id: String,
    error: String,
    /// `dead,failed` (the default), a state of [`STATES`], or `all`.
    state: String,
    from: String,
    until: String,
}

/// The states the filter offers, with their labels.
const STATE_CHOICES: [(&str, &str); 8] = [
    (FAILURES, "dead or failing"),
    ("dead", "dead"),
    ("failed", "failing (pending after a failure)"),
    ("pending", "pending"),
    ("delivering", "delivering"),
    ("delivered", "delivered"),
    ("skipped", "skipped"),
    ("all", "any state"),
];

impl Filters {
    fn of(pairs: &[(String, String)]) -> Self {
        let get = |name| value(pairs, name).unwrap_or_default();
        let state = get("state");
        Self {
            subscription: get("subscription"),
            entity: get("entity"),
            object_id: get("object_id"),
            partition: get("partition"),
            event_id: get("event_id"),
            error: get("error"),
            state: if state.is_empty() { FAILURES.into() } else { state },
            from: get("from"),
            until: get("until"),
        }
    }

    fn fields(&self) -> [(&'static str, &str); 9] {
        [
            ("subscription", &self.subscription),
            ("entity", &self.entity),
            ("object_id", &self.object_id),
            ("partition", &self.partition),
            ("event_id", &self.event_id),
            ("error", &self.error),
            ("state", &self.state),
            ("from", &self.from),
            ("until", &self.until),
        ]
    }

    /// Its fields, owned, for hidden inputs.
    fn pairs(&self) -> Vec<(&'static str, String)> {
        self.fields().into_iter().map(|(name, value)| (name, value.to_owned())).collect()
    }

    /// The query string of this filter (its non-empty fields).
    fn query(&self) -> String {
        let mut query = form_urlencoded::Serializer::new(String::new());
        for (name, value) in self.fields() {
            if !value.is_empty() {
                query.append_pair(name, value);
            }
        }
        query.finish()
    }

    /// The store's filter: `400` for a state or a time that means nothing.
    fn filter(&self) -> Result<EventFilter, PageError> {
        let text = |v: &str| (!v.is_empty()).then(|| v.to_owned());
        let states: Vec<String> = match self.state.as_str() {
            "all" => Vec::new(),
            states => states.split(',').map(|s| s.trim().to_owned()).filter(|s| !s.is_empty()).collect(),
        };
        if let Some(bad) = states.iter().find(|s| !STATES.contains(&s.as_str())) {
            return Err(bad_query(format!("state {bad:?} is not one of {}, or all", STATES.join(", "))));
        }
        let when = |name: &str, v: &str| -> Result<Option<i64>, PageError> {
            if v.is_empty() {
                return Ok(None);
            }
            parse_time(v).map(Some).ok_or_else(|| {
                bad_query(format!("{name} {:?} is not a time: write 2026-12-02T03:47 (UTC)", first_line(v, 40)))
            })
        };
        Ok(EventFilter {
            subscription: text(&self.subscription),
            states,
            entity: text(&self.entity),
            object_id: text(&self.object_id),
            partition: text(&self.partition),
            event_id: text(&self.event_id),
            from_ms: when("from", &self.from)?,
            until_ms: when("until", &self.until)?,
            error_contains: text(&self.error),
        })
    }
}

/// What `redrive` can act on among `filter`'s events: the dead and failing ones; `None` when the
/// filter asks only for states no redrive touches.
fn redrivable(mut filter: EventFilter) -> Option<EventFilter> {
    let wanted = ["dead", "failed"];
    filter.states = if filter.states.is_empty() {
        wanted.map(String::from).to_vec()
    } else {
        filter.states.into_iter().filter(|s| wanted.contains(&s.as_str())).collect()
    };
    (!filter.states.is_empty()).then_some(filter)
}

/// An event as the tables and the event page show it.
#[derive(Debug, Serialize)]
struct EventView {
    seq: i64,
    subscription: String,
    event_id: String,
    entity: String,
    object_id: String,
    partition: String,
    operation: String,
    state: String,
    state_text: String,
    attempts: i32,
    last_status: String,
    last_error: String,
    error_line: String,
    next_attempt: String,
    created: String,
    last_change: i64,
    request_id: Option<String>,
    payload: String,
    redrivable: bool,
    skippable: bool,
}

impl EventView {
    fn of(row: EventRow, now_ms: i64) -> Self {
        let failing = row.state == "pending" && row.attempts > 0;
        let state_text = if failing { "failing".to_owned() } else { row.state.clone() };
        let next_attempt = match (row.state.as_str(), row.next_attempt_ms) {
            ("pending", Some(at)) if at <= now_ms => "due now".to_owned(),
            ("pending", Some(at)) => format!("{} (in {})", time(at), span(at - now_ms)),
            _ => "—".to_owned(),
        };
        let payload = match &row.event.object {
            Some(object) => serde_json::from_str::<serde_json::Value>(object)
                .and_then(|v| serde_json::to_string_pretty(&v))
                .unwrap_or_else(|_| object.clone()),
            None => "null (the object was removed)".to_owned(),
        };
        let last_error = row.last_error.unwrap_or_default();
        Self {
            seq: row.seq,
            redrivable: row.state == "dead" || failing,
            skippable: row.state == "pending" || row.state == "dead",
            subscription: row.subscription,
            event_id: row.event.event_id,
            entity: row.event.entity,
            object_id: row.event.object_id,
            partition: row.event.partition,
            operation: row.event.operation,
            state: row.state,
            state_text,
            attempts: row.attempts,
            last_status: row.last_status.map_or_else(|| "—".to_owned(), |s| s.to_string()),
            error_line: first_line(&last_error, 160),
            last_error,
            next_attempt,
            created: time(row.event.created_ms),
            last_change: row.event.last_change,
            request_id: row.event.request_id,
            payload,
        }
    }
}

async fn overview(req: HttpRequest, state: web::Data<AppState>) -> Page {
    let (_, chrome) = look(&req, &state, "overview").await?;
    let timeout = state.admins.as_deref().map(|a| a.statement_timeout).unwrap_or_default();
    let now = state.clock.now_ms();
    let store_health = state.store.health().await;
    // A slow or failing overview query still leaves the health and the long-polls to show.
    let (overview, overview_error) = match state.store.overview(&state.subscriptions, timeout).await {
        Ok(overview) => (Some(overview), None),
        Err(e) => {
            tracing::warn!(error = %crate::error::chain(&e), "the console's overview failed");
            (None, Some(store_message(&e)))
        }
    };
    let (entities, subscriptions, leases) =
        overview.map_or_else(Default::default, |o| (o.entities, o.subscriptions, o.leases));
    let entities: Vec<Value> = entities
        .into_iter()
        .map(|e| {
            let events = format!(
                "/admin/failures?{}",
                Filters { entity: e.entity.clone(), state: "all".into(), ..Filters::default() }.query()
            );
            context! {
                latest => e.latest_change.map_or_else(|| "—".to_owned(), time),
                events,
                ..Value::from(Serde(e))
            }
        })
        .collect();
    let subscriptions: Vec<Value> = subscriptions
        .into_iter()
        .map(|s| {
            let lag = s.oldest_pending_ms.map_or_else(|| "—".to_owned(), |oldest| span(now - oldest));
            let by = |state: &str| {
                format!(
                    "/admin/failures?{}",
                    Filters { subscription: s.name.clone(), state: state.into(), ..Filters::default() }.query()
                )
            };
            let action = format!(
                "/admin/subscriptions/{}",
                form_urlencoded::byte_serialize(s.name.as_bytes()).collect::<String>()
            );
            context! {
                configured => state.subscriptions.contains(&s.name),
                failures => by(FAILURES),
                dead_events => by("dead"),
                action,
                lag,
                ..Value::from(Serde(s))
            }
        })
        .collect();
    let leases: Vec<Value> = leases
        .into_iter()
        .map(|l| {
            let expired = l.until_ms.is_some_and(|until| until < now);
            let holder = match l.holder {
                Some(token) if !expired => format!("{token:016x}"),
                Some(_) => "none (the last lease ran out)".to_owned(),
                None => "none".to_owned(),
            };
            let until = l.until_ms.filter(|_| !expired && l.holder.is_some()).map_or_else(|| "—".to_owned(), time);
            context! { subscription => l.subscription, holder, until }
        })
        .collect();
    let dead_tasks: Vec<Value> =
        state.tasks.dead().into_iter().map(|(name, why)| context! { name, why => first_line(&why, 200) }).collect();
    let (long_polls, max_long_polls) = state.live.waiting();
    render(
        "overview.html",
        chrome,
        context! {
            now => time(now),
            store => state.store.describe(),
            store_ok => store_health.is_ok(),
            store_error => store_health.err().map(|e| store_message(&e)),
            dead_tasks,
            long_polls,
            max_long_polls,
            entities,
            subscriptions,
            leases,
            overview_error,
        },
    )
}

async fn failures(req: HttpRequest, state: web::Data<AppState>) -> Page {
    let (_, chrome) = look(&req, &state, "failures").await?;
    let pairs = pairs(req.query_string().as_bytes())?;
    let filters = Filters::of(&pairs);
    let filter = filters.filter()?;
    let before = match value(&pairs, "before") {
        None => None,
        Some(raw) => Some(
            raw.parse::<i64>()
                .map_err(|_| bad_query(format!("before {:?} is not an event number", first_line(&raw, 40))))?,
        ),
    };
    let timeout = state.admins.as_deref().map(|a| a.statement_timeout).unwrap_or_default();
    let rows = state.store.events_within(&filter, before, PAGE, timeout).await?;
    let matching = state.store.count_within(&filter, timeout).await?;
    let now = state.clock.now_ms();
    let next = (rows.len() == PAGE)
        .then(|| rows.last().map(|r| format!("/admin/failures?{}&before={}", filters.query(), r.seq)))
        .flatten();
    let events: Vec<EventView> = rows.into_iter().map(|r| EventView::of(r, now)).collect();
    let back = format!("/admin/failures?{}", filters.query());
    render(
        "failures.html",
        chrome,
        context! {
            filter_fields => filters.pairs(),
            filter => Serde(&filters),
            states => STATE_CHOICES.to_vec(),
            events => Serde(events),
            matching,
            next,
            back,
        },
    )
}

fn seq_of(raw: &str) -> Result<i64, PageError> {
    raw.parse()
        .map_err(|_| PageError(ApiError::NotFound(format!("no event {:?}: events are numbered", first_line(raw, 40)))))
}

async fn event(req: HttpRequest, path: web::Path<String>, state: web::Data<AppState>) -> Page {
    let (_, chrome) = look(&req, &state, "failures").await?;
    let seq = seq_of(&path)?;
    let Some((row, attempts)) = state.store.event(seq).await? else {
        return Err(ApiError::NotFound(format!("no event {seq}")).into());
    };
    let attempts: Vec<Value> = attempts
        .into_iter()
        .map(|a| {
            context! {
                at => time(a.at_ms),
                duration_ms => a.duration_ms,
                status => a.status.map_or_else(|| "—".to_owned(), |s| s.to_string()),
                error => a.error,
            }
        })
        .collect();
    render("event.html", chrome, context! { e => Serde(EventView::of(row, state.clock.now_ms())), attempts })
}

/// The page an action goes back to: a console page named by the form, else `fallback`.
fn back_to(form: &[(String, String)], fallback: &str) -> String {
    value(form, "back")
        .filter(|to| to.starts_with("/admin") && !to.starts_with("//") && !to.contains(['\r', '\n', '\\']))
        .unwrap_or_else(|| fallback.to_owned())
}

fn counted(n: u64, what: &str) -> String {
    format!("{n} event{} {what}", if n == 1 { "" } else { "s" })
}

async fn act_on_one(
    req: HttpRequest,
    path: web::Path<(String, String)>,
    body: web::Bytes,
    state: web::Data<AppState>,
) -> Page {
    let form = pairs(&body)?;
    let who = act(&req, &state, &form).await?;
    let (seq, action) = path.into_inner();
    let seq = seq_of(&seq)?;
    if state.store.event(seq).await?.is_none() {
        return Err(ApiError::NotFound(format!("no event {seq}")).into());
    }
    let now = state.clock.now_ms();
    let message = match action.as_str() {
        "redrive" => {
            let n = state.store.redrive(&EventFilter::default(), Some(&[seq]), now).await?;
            state.outbox_wake.wake();
            audit_action(&state, &who, "redrive", format!("event {seq}: {n} redriven")).await?;
            if n == 0 {
                "0 events redriven: only dead or failing events can be".to_owned()
            } else {
                counted(n, "redriven")
            }
        }
        "skip" => {
            let n = state.store.skip(&[seq], now).await?;
            audit_action(&state, &who, "skip", format!("event {seq}: {n} skipped")).await?;
            if n == 0 {
                "0 events skipped: only pending or dead events can be".to_owned()
            } else {
                counted(n, "skipped")
            }
        }
        _ => {
            return Err(
                ApiError::NotFound(format!("no admin action {:?}: redrive or skip", first_line(&action, 40))).into()
            );
        }
    };
    Ok(done(&format!("/admin/events/{seq}"), message))
}

/// The `seq` values of a selection: `400` for one that is not a number.
fn selection(form: &[(String, String)]) -> Result<Vec<i64>, PageError> {
    let seqs: Vec<i64> = values(form, "seq")
        .map(|raw| {
            raw.trim().parse().map_err(|_| bad_form(format!("seq {:?} is not an event number", first_line(raw, 40))))
        })
        .collect::<Result<_, _>>()?;
    if seqs.len() > MAX_SELECTION {
        return Err(bad_form(format!("a selection holds at most {MAX_SELECTION} events")));
    }
    Ok(seqs)
}

async fn redrive(req: HttpRequest, body: web::Bytes, state: web::Data<AppState>) -> Page {
    let form = pairs(&body)?;
    let who = act(&req, &state, &form).await?;
    let now = state.clock.now_ms();
    if value(&form, "all").is_none() {
        let seqs = selection(&form)?;
        let back = back_to(&form, "/admin/failures");
        if seqs.is_empty() {
            return Ok(done(&back, "No event was selected: nothing redriven".into()));
        }
        let n = state.store.redrive(&EventFilter::default(), Some(&seqs), now).await?;
        state.outbox_wake.wake();
        audit_action(&state, &who, "redrive", format!("events {seqs:?}: {n} redriven")).await?;
        return Ok(done(&back, counted(n, "redriven")));
    }
    let filters = Filters::of(&form);
    let filter = redrivable(filters.filter()?);
    let back = format!("/admin/failures?{}", filters.query());
    let confirmed = value(&form, "confirmed")
        .map(|c| c.parse::<u64>().map_err(|_| bad_form("confirmed must be the count that was confirmed")))
        .transpose()?;
    let timeout = state.admins.as_deref().map(|a| a.statement_timeout).unwrap_or_default();
    let count = match &filter {
        Some(filter) => state.store.count_within(filter, timeout).await?,
        None => 0,
    };
    // Asked again when more events match than were confirmed (more failed since the question):
    // an operator redrives what they agreed to, not whatever matches by then.
    if confirmed.is_none_or(|confirmed| count > confirmed) {
        let chrome = chrome(&state, &who, "failures", None);
        return render("confirm.html", chrome, context! { count, filter_fields => filters.pairs(), back });
    }
    let confirmed = confirmed.unwrap_or_default();
    let Some(filter) = filter else {
        return Ok(done(&back, counted(0, "redriven")));
    };
    let n = state.store.redrive(&filter, None, now).await?;
    state.outbox_wake.wake();
    audit_action(&state, &who, "redrive", format!("filter {filter:?}: {n} redriven (confirmed {confirmed})")).await?;
    Ok(done(&back, counted(n, "redriven")))
}

async fn skip(req: HttpRequest, body: web::Bytes, state: web::Data<AppState>) -> Page {
    let form = pairs(&body)?;
    let who = act(&req, &state, &form).await?;
    let seqs = selection(&form)?;
    let back = back_to(&form, "/admin/failures");
    if seqs.is_empty() {
        return Ok(done(&back, "No event was selected: nothing skipped".into()));
    }
    let n = state.store.skip(&seqs, state.clock.now_ms()).await?;
    audit_action(&state, &who, "skip", format!("events {seqs:?}: {n} skipped")).await?;
    Ok(done(&back, counted(n, "skipped")))
}

async fn set_enabled(
    req: HttpRequest,
    path: web::Path<(String, String)>,
    body: web::Bytes,
    state: web::Data<AppState>,
) -> Page {
    let form = pairs(&body)?;
    let who = act(&req, &state, &form).await?;
    let (name, action) = path.into_inner();
    let enabled = match action.as_str() {
        "enable" => true,
        "disable" => false,
        _ => {
            return Err(ApiError::NotFound(format!(
                "no admin action {:?}: enable or disable",
                first_line(&action, 40)
            ))
            .into());
        }
    };
    if !state.subscriptions.contains(&name) {
        return Err(ApiError::NotFound(format!("no subscription {:?} is configured", first_line(&name, 60))).into());
    }
    let reason = (!enabled).then(|| value(&form, "reason").unwrap_or_else(|| format!("disabled by {}", who.subject)));
    state.store.set_enabled(&name, enabled, reason.as_deref(), state.clock.now_ms()).await?;
    audit_action(&state, &who, &action, format!("subscription {name}")).await?;
    if enabled {
        state.outbox_wake.wake();
    }
    Ok(done("/admin", format!("Subscription {name} {action}d")))
}

async fn search(req: HttpRequest, state: web::Data<AppState>) -> Page {
    let (_, chrome) = look(&req, &state, "search").await?;
    let pairs = pairs(req.query_string().as_bytes())?;
    let q = value(&pairs, "q").unwrap_or_default();
    let mut events: Vec<EventRow> = Vec::new();
    let mut searched = String::new();
    if !q.is_empty() {
        let timeout = state.admins.as_deref().map(|a| a.statement_timeout).unwrap_or_default();
        let partition = if q.contains(':') { q.clone() } else { format!("user:{q}") };
        searched = format!("event id or object id is {q:?}, or partition is {partition:?}");
        let ways = [
            EventFilter { event_id: Some(q.clone()), ..EventFilter::default() },
            EventFilter { object_id: Some(q.clone()), ..EventFilter::default() },
            EventFilter { partition: Some(partition), ..EventFilter::default() },
        ];
        for filter in &ways {
            events.extend(state.store.events_within(filter, None, SEARCH_LIMIT, timeout).await?);
        }
        if let Ok(seq) = q.parse::<i64>()
            && let Some((row, _)) = state.store.event(seq).await?
        {
            searched.push_str(&format!(", or whose number is {seq}"));
            events.push(row);
        }
        events.sort_by_key(|e| std::cmp::Reverse(e.seq));
        events.dedup_by_key(|e| e.seq);
    }
    let now = state.clock.now_ms();
    let events: Vec<EventView> = events.into_iter().map(|r| EventView::of(r, now)).collect();
    render("search.html", chrome, context! { q, searched, events => Serde(events), limit => SEARCH_LIMIT })
}

async fn audit(req: HttpRequest, state: web::Data<AppState>) -> Page {
    let (_, chrome) = look(&req, &state, "audit").await?;
    let entries: Vec<Value> = state
        .store
        .audit_log(AUDIT_LIMIT)
        .await?
        .into_iter()
        .map(|(at_ms, user, action, detail)| context! { at => time(at_ms), user, action, detail })
        .collect();
    render("audit.html", chrome, context! { entries, limit => AUDIT_LIMIT })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_read_what_operators_type_and_refuse_the_rest() {
        let typed = pairs(b"subscription=erp&state=&from=2026-12-01T11:19&error=+refused+&object_id=").unwrap();
        let filters = Filters::of(&typed);
        assert_eq!(filters.state, FAILURES, "the failures by default");
        let filter = filters.filter().unwrap();
        assert_eq!(filter.subscription.as_deref(), Some("erp"));
        assert_eq!(filter.states, ["dead", "failed"]);
        assert_eq!(filter.from_ms, Some(1_796_123_940_000));
        assert_eq!(filter.error_contains.as_deref(), Some("refused"));
        assert_eq!(filter.object_id, None);
        assert_eq!(Filters::of(&pairs(b"state=all").unwrap()).filter().unwrap().states, Vec::<String>::new());
        assert!(Filters::of(&pairs(b"state=gone").unwrap()).filter().is_err());
        assert!(Filters::of(&pairs(b"until=tomorrow").unwrap()).filter().is_err());
        let huge = format!("entity={}", "x".repeat(MAX_VALUE + 1));
        assert!(pairs(huge.as_bytes()).is_err());
        assert_eq!(Filters::of(&pairs(filters.query().as_bytes()).unwrap()).query(), filters.query(), "round trip");
    }

    #[test]
    fn a_redrive_by_filter_touches_only_dead_and_failing_events() {
        assert_eq!(redrivable(EventFilter::default()).unwrap().states, ["dead", "failed"]);
        let dead = EventFilter { states: vec!["dead".into(), "pending".into()], ..EventFilter::default() };
        assert_eq!(redrivable(dead).unwrap().states, ["dead"]);
        assert_eq!(redrivable(EventFilter { states: vec!["delivered".into()], ..EventFilter::default() }), None);
    }

    #[test]
    fn actions_go_back_only_to_console_pages() {
        let form = |to: &str| vec![("back".to_owned(), to.to_owned())];
        assert_eq!(back_to(&form("/admin/failures?state=dead"), "/admin"), "/admin/failures?state=dead");
        for away in ["https://evil.example/", "//evil.example", "/admin\r\nSet-Cookie: x", "/elsewhere"] {
            assert_eq!(back_to(&form(away), "/admin"), "/admin", "{away:?}");
        }
    }
}
