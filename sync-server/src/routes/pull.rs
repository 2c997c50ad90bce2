//! `GET <path>?since=S[&limit=N][&wait=W]`: a page, or the whole answer streamed; with `wait`, an
//! answer that would hold no update waits for one first (see [`crate::live`]).

use actix_web::{HttpRequest, HttpResponse};
use futures_util::StreamExt;
use sync_proto::PullQuery;

use super::changes::json_answer;
use crate::config::ResolvedEntity;
use crate::error::ApiError;
use crate::state::AppState;
use crate::store::Scope;

/// Answers a pull. A paged pull (`limit`) is built whole; an unpaged one that fits in one chunk
/// goes out with a `Content-Length`, and a larger one is streamed chunk by chunk as the store
/// reads it, so memory stays bounded whatever the answer's size. A pull from before the scope's
/// purge horizon is answered with the whole scope, unpaged (see [`crate::janitor`]).
#[tracing::instrument(skip_all, fields(entity = %entity.name))]
pub async fn pull(
    req: &HttpRequest,
    entity: &ResolvedEntity,
    scope: &Scope,
    state: &AppState,
) -> Result<HttpResponse, ApiError> {
    let query = PullQuery::parse(req.query_string(), &state.limits).map_err(ApiError::Query)?;
    state.live.wait(state.store.as_ref(), scope, query).await?;
    if query.limit.is_some() {
        let page = state.store.pull(scope, query).await?;
        if !page.reset {
            tracing::debug!(since = %query.since, now = %page.now, updates = page.objects.len(), "pulled a page");
            return Ok(json_answer().body(page.to_json(true)));
        }
        // A cursor older than the purge horizon: the whole scope, streamed, however it was asked.
        tracing::info!(since = %query.since, "a cursor older than the purge horizon; answering the whole scope");
    }
    let mut chunks = state.store.pull_stream(scope, query).await?;
    let first = chunks.recv().await.transpose()?.unwrap_or_default();
    let Some(second) = chunks.recv().await else {
        return Ok(json_answer().body(first));
    };
    let head = futures_util::stream::iter([Ok(first), second]);
    let rest = futures_util::stream::poll_fn(move |cx| chunks.poll_recv(cx));
    Ok(json_answer().streaming(head.chain(rest)))
}
