//! `GET /_sync/capabilities`: the extensions this server offers, so that a client learns them
//! without trying them (see docs/PROTOCOL.md).

use actix_web::{HttpResponse, web};
use sync_proto::PRECONDITIONS_HEADER;
use sync_proto::capabilities::{
    Capabilities, Extensions, Idempotency, LongPoll, Paging, Partitions, Preconditions, Reset,
};

use crate::state::AppState;

/// The capabilities of this server's configuration. Open to every caller: it tells the protocol,
/// not the data.
pub async fn capabilities(state: web::Data<AppState>) -> HttpResponse {
    let extensions = Extensions {
        paging: Some(Paging { max_limit: state.limits.max_page }),
        idempotency: Some(Idempotency { retention_secs: state.idempotency_ttl.as_secs() }),
        partitions: state.auth.as_ref().map(|_| Partitions { authentication: "bearer".into() }),
        long_poll: state.live.max_wait_secs().map(|max_wait_secs| LongPoll { max_wait_secs }),
        preconditions: Some(Preconditions { header: PRECONDITIONS_HEADER.into() }),
        reset: (state.tombstone_retention_days > 0)
            .then(|| Reset { tombstone_retention_days: state.tombstone_retention_days }),
    };
    HttpResponse::Ok().json(Capabilities { extensions })
}
