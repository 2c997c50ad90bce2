//! Streamed full answers, shared by both stores: a store reads the rows of an unpaged pull from
//! one snapshot and writes them through a [`ChunkedAnswer`], which cuts the JSON text into chunks
//! of about [`CHUNK_BYTES`] for the HTTP layer. Memory stays bounded whatever the answer's size,
//! and a client that stops reading is dropped after the store's stall time (the server's
//! `send_timeout_secs`), so that it cannot hold a database connection and its snapshot forever.

use std::time::Duration;

use bytes::Bytes;
use sync_proto::{Cursor, PullWriter};
use tokio::sync::mpsc;

use super::StoreError;

/// A complete pull answer being produced, as chunks of its JSON text in order. The snapshot is
/// taken before the first chunk; a store failure after that ends the stream with an error.
pub type AnswerStream = mpsc::Receiver<Result<Bytes, StoreError>>;

/// A streamed answer is handed to the HTTP layer in chunks of about this many bytes ...
pub const CHUNK_BYTES: usize = 64 * 1024;
/// ... with at most this many chunks waiting for a slow client ...
const DEPTH: usize = 4;
/// ... and a client that takes no chunk for this long (unless the store is told otherwise) is
/// dropped.
pub const DEFAULT_STALL: Duration = Duration::from_secs(60);
/// The first chunk's buffer starts this large (most answers are one small chunk); the next ones
/// start as large as the last one grew.
const FIRST_CHUNK_BYTES: usize = 8 * 1024;

/// The writing side of one streamed answer.
pub(crate) struct ChunkedAnswer {
    writer: PullWriter,
    sink: mpsc::Sender<Result<Bytes, StoreError>>,
    stall: Duration,
}

/// A new streamed answer and the stream the HTTP layer reads it from; the answer stops when its
/// reader takes nothing for `stall`.
pub(crate) fn channel(stall: Duration) -> (ChunkedAnswer, AnswerStream) {
    let (sink, stream) = mpsc::channel(DEPTH);
    (ChunkedAnswer { writer: PullWriter::with_capacity(FIRST_CHUNK_BYTES), sink, stall }, stream)
}

impl ChunkedAnswer {
    /// Appends one row: a live object from its stored fields' JSON text, or a tombstone. Returns
    /// a chunk to send when one is full.
    pub(crate) fn row(&mut self, id: &str, last_change: Cursor, fields: Option<&str>) -> Option<Bytes> {
        match fields {
            Some(fields) => self.writer.object_json(id, fields, last_change),
            None => self.writer.tombstone(id, last_change),
        }
        (self.writer.len() >= CHUNK_BYTES).then(|| Bytes::from(self.writer.take()))
    }

    /// Marks the answer as a reset (see [`sync_proto::PullWriter::mark_reset`]).
    pub(crate) fn mark_reset(&mut self) {
        self.writer.mark_reset();
    }

    /// Closes the answer with its cursor; returns the last chunk.
    pub(crate) fn finish(&mut self, now: Cursor) -> Bytes {
        Bytes::from(std::mem::take(&mut self.writer).finish(now, None))
    }

    /// Closes an answer of which no chunk was sent yet, sending the whole of it as its only
    /// chunk. Never waits (the queue is empty), so it may run on the request's own thread.
    pub(crate) fn finish_alone(&mut self, now: Cursor) {
        let whole = self.finish(now);
        // Empty, the queue has room; closed, the request is gone and nobody reads it.
        let _ = self.sink.try_send(Ok(whole));
    }

    /// Sends a chunk (or the error that ends the answer). False when the client is gone or has
    /// taken nothing for the answer's stall time: the producer should stop.
    pub(crate) async fn send(&self, chunk: Result<Bytes, StoreError>) -> bool {
        matches!(tokio::time::timeout(self.stall, self.sink.send(chunk)).await, Ok(Ok(())))
    }

    /// As [`ChunkedAnswer::send`], from a blocking thread of the runtime (`spawn_blocking`).
    pub(crate) fn blocking_send(&self, chunk: Result<Bytes, StoreError>) -> bool {
        // Nearly always there is room: waiting (and its timer) only for a client slow to read.
        match self.sink.try_send(chunk) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(chunk)) => tokio::runtime::Handle::current().block_on(self.send(chunk)),
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn chunks_concatenate_to_the_whole_answer() {
        let (mut answer, mut stream) = channel(DEFAULT_STALL);
        let reader = tokio::spawn(async move {
            let mut text = Vec::new();
            while let Some(chunk) = stream.recv().await {
                text.extend_from_slice(&chunk.unwrap());
            }
            text
        });
        let fields = format!(r#"{{"s":"{}"}}"#, "x".repeat(1000));
        let mut chunks = 0;
        for i in 0..400 {
            if let Some(chunk) = answer.row(&i.to_string(), Cursor::from_millis(i), (i % 2 == 0).then_some(&*fields)) {
                assert!(answer.send(Ok(chunk)).await);
                chunks += 1;
            }
        }
        assert!(chunks >= 2, "about 200 kB make several chunks");
        let last = answer.finish(Cursor::from_millis(399));
        assert!(answer.send(Ok(last)).await);
        drop(answer);
        let json: serde_json::Value = serde_json::from_slice(&reader.await.unwrap()).unwrap();
        assert_eq!(json["updates"].as_array().unwrap().len(), 400);
        assert_eq!(json["updates"][1]["_removed"], true);
        assert_eq!(json["now"], 399);
    }
}
