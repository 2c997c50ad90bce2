//! Reads of the PostgreSQL store. A pull reads the clock and the rows in one statement, hence one
//! snapshot: a reader that sees the clock at `C` sees every push that took a timestamp `<= C`,
//! and every push it does not see commits with a timestamp `> C`.

use std::pin::Pin;

use deadpool_postgres::Object;
use futures_util::TryStreamExt;
use sync_proto::{Cursor, FieldsJson, PullQuery};
use tokio_postgres::types::ToSql;
use tokio_postgres::{Row, RowStream};

use super::connection::{Failure, classify};
use crate::store::answer::ChunkedAnswer;
use crate::store::read::{ReadTx, Rows, resets};
use crate::store::{Scope, StoreError, StoredObject};

/// The high-water mark, the purge horizon and the rows after `since` (after 0 when `since` is
/// older than the horizon, see [`resets`]), in one statement and so in one snapshot. Every row
/// carries the clock and the horizon; with no rows the object columns are null.
const PULL: &str = r#"
    SELECT h.last, h.purged, o.id, o.last_change, o.removed, o.fields
    FROM (
        SELECT COALESCE(c.last, 0) AS last, COALESCE(c.purged_through, 0) AS purged
        FROM (SELECT 1) AS one LEFT JOIN sync_clocks c ON c.entity = $1 AND c.partition = $2
    ) AS h
    LEFT JOIN LATERAL (
        SELECT id, last_change, removed, fields FROM sync_objects
        WHERE entity = $1 AND partition = $2
          AND last_change > (CASE WHEN $3::bigint < h.purged THEN 0 ELSE $3::bigint END)
        ORDER BY last_change, id
        LIMIT $4
    ) AS o ON true
    ORDER BY o.last_change, o.id
"#;
/// Every object of one push, for a page that must not split it.
const PULL_GROUP: &str = "SELECT id, last_change, removed, fields FROM sync_objects
    WHERE entity = $1 AND partition = $2 AND last_change = $3 ORDER BY id";

/// The reads of [`crate::store::read::page`] on one connection.
pub(super) struct PgRead<'c>(pub(super) &'c Object);

impl ReadTx for PgRead<'_> {
    type Error = Failure;

    async fn rows_after(&mut self, scope: &Scope, since: Cursor, fetch: Option<usize>) -> Result<Rows, Failure> {
        let fetch = fetch.map(|n| i64::try_from(n).unwrap_or(i64::MAX));
        let stmt = self.0.prepare_cached(PULL).await?;
        let (mut high_water, mut horizon) = (0, 0);
        let mut rows = Vec::new();
        for row in self.0.query(&stmt, &[&scope.key(), &scope.partition(), &since.millis(), &fetch]).await? {
            (high_water, horizon) = (row.try_get(0)?, row.try_get(1)?);
            if let Some(id) = row.try_get::<_, Option<Vec<u8>>>(2)? {
                rows.push(stored_object(id, row.try_get(3)?, row.try_get(4)?, row.try_get(5)?)?);
            }
        }
        let reset = resets(since, Cursor::from_millis(horizon));
        Ok(Rows { high_water: Cursor::from_millis(high_water), reset, rows })
    }

    async fn rows_at(&mut self, scope: &Scope, at: Cursor) -> Result<Vec<StoredObject>, Failure> {
        let stmt = self.0.prepare_cached(PULL_GROUP).await?;
        let mut objects = Vec::new();
        for row in self.0.query(&stmt, &[&scope.key(), &scope.partition(), &at.millis()]).await? {
            objects.push(stored_object(row.try_get(0)?, row.try_get(1)?, row.try_get(2)?, row.try_get(3)?)?);
        }
        Ok(objects)
    }
}

fn stored_object(id: Vec<u8>, last_change: i64, removed: bool, fields: String) -> Result<StoredObject, Failure> {
    Ok(StoredObject {
        id: stored_id(id)?,
        last_change: Cursor::from_millis(last_change),
        fields: if removed { None } else { Some(FieldsJson::from_stored(fields)) },
    })
}

/// Ids are stored as their UTF-8 bytes, written from Rust strings only.
pub(super) fn stored_id(id: Vec<u8>) -> Result<String, Failure> {
    String::from_utf8(id).map_err(|_| Failure::Failed(StoreError::internal_because("a stored id is not valid UTF-8")))
}

/// An unpaged pull whose snapshot is taken: its first row (which carries the high-water mark)
/// and the rest, still to be read.
pub(super) struct OpenStream {
    first: Row,
    rows: Pin<Box<RowStream>>,
    query: PullQuery,
}

/// Starts the pull statement without a limit and waits for its first row (there always is one):
/// from then on the snapshot is taken.
///
/// The statement runs in a read-only transaction of its own without a statement timeout: it lasts
/// as long as the client takes to read the answer, which for a first sync over a slow link may be
/// longer than any push should. The caller ends that transaction, or discards the connection.
pub(super) async fn open_stream(client: &Object, scope: &Scope, query: PullQuery) -> Result<OpenStream, Failure> {
    client.batch_execute("BEGIN READ ONLY; SET LOCAL statement_timeout = 0").await?;
    let stmt = client.prepare_cached(PULL).await?;
    let no_limit: Option<i64> = None;
    let since = query.since.millis();
    let params: [&(dyn ToSql + Sync); 4] = [&scope.key(), &scope.partition(), &since, &no_limit];
    let mut rows = Box::pin(client.query_raw(&stmt, params).await?);
    let first = rows
        .try_next()
        .await?
        .ok_or_else(|| Failure::Failed(StoreError::internal_because("the pull statement returned no row")))?;
    Ok(OpenStream { first, rows, query })
}

/// How far a streamed answer got.
pub(super) enum Written {
    /// Every row was sent.
    Whole,
    /// The client went away before the end.
    Abandoned,
}

/// Writes the answer from the rows of [`open_stream`] into `answer`, chunk by chunk.
pub(super) async fn write_answer(open: OpenStream, answer: &mut ChunkedAnswer) -> Result<Written, StoreError> {
    let OpenStream { first, mut rows, query } = open;
    let now = Cursor::from_millis(first.try_get(0).map_err(classify)?);
    if query.resets && resets(query.since, Cursor::from_millis(first.try_get(1).map_err(classify)?)) {
        answer.mark_reset();
    }
    let mut next = Some(first);
    while let Some(row) = next {
        if let Some(id) = row.try_get::<_, Option<&[u8]>>(2).map_err(classify)? {
            let id =
                std::str::from_utf8(id).map_err(|_| StoreError::internal_because("a stored id is not valid UTF-8"))?;
            let last_change = Cursor::from_millis(row.try_get(3).map_err(classify)?);
            let removed: bool = row.try_get(4).map_err(classify)?;
            let fields = if removed { None } else { Some(row.try_get::<_, &str>(5).map_err(classify)?) };
            if let Some(chunk) = answer.row(id, last_change, fields)
                && !answer.send(Ok(chunk)).await
            {
                return Ok(Written::Abandoned);
            }
        }
        next = rows.try_next().await.map_err(classify)?;
    }
    let last = answer.finish(now);
    answer.send(Ok(last)).await;
    Ok(Written::Whole)
}
