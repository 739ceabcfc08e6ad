//! DNS NOTIFY (RFC 1996) for the RPZ zones Portcullis transfers: from a
//! configured primary's address it wakes the zone's task and is answered
//! NOERROR; from anyone else, or for a zone not configured, it is refused,
//! logged and counted. A NOTIFY only makes a refresh early: the transfer
//! it starts is what TSIG protects.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use hickory_proto::op::{Metadata, ResponseCode};
use hickory_server::server::{Request, ResponseHandler, ResponseInfo};

use super::{Handler, QueryOutcome, reject, response_edns, send};
use crate::sources::rpz::NotifyVerdict;
use crate::telemetry;

impl Handler {
    pub(super) async fn notify<R: ResponseHandler>(
        &self,
        request: &Request,
        handle: R,
    ) -> (ResponseInfo, QueryOutcome) {
        let Ok(info) = request.request_info() else {
            return reject(request, handle, ResponseCode::FormErr).await;
        };
        let zone = info.query.name().clone().into();
        let verdict = self.notify.notify(&zone, request.src().ip());
        ::metrics::counter!(telemetry::NOTIFY, "result" => verdict.as_str()).increment(1);
        if verdict != NotifyVerdict::Accepted {
            // Anyone can send NOTIFYs: one warning in 30 s, with how many
            // more were refused since (all are counted in the metric).
            if let Some(also) = refusal_to_log(crate::clock::unix_now()) {
                tracing::warn!(
                    source = %request.src(),
                    %zone,
                    reason = verdict.as_str(),
                    refused_since_last_warning = also,
                    "NOTIFY refused: only a configured [[rpz]] zone's primaries may send one"
                );
            }
            return reject(request, handle, ResponseCode::Refused).await;
        }
        let mut metadata = Metadata::response_from_request(&request.metadata);
        metadata.authoritative = true;
        let edns = response_edns(request);
        let info = send(request, handle, metadata, edns.as_ref(), &[], &[]).await;
        (info, QueryOutcome::Answered)
    }
}

/// When the last refused NOTIFY was logged (Unix seconds), and how many
/// were refused since without a line.
static LAST_LOGGED: AtomicI64 = AtomicI64::new(i64::MIN);
static UNLOGGED: AtomicU64 = AtomicU64::new(0);
const LOG_EVERY_SECS: i64 = 30;

/// Whether to log this refusal (at `now`): `Some(refusals not logged
/// since the last line)`, at most once every 30 s.
fn refusal_to_log(now: i64) -> Option<u64> {
    let last = LAST_LOGGED.load(Ordering::Relaxed);
    if now.saturating_sub(last) >= LOG_EVERY_SECS
        && LAST_LOGGED
            .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
    {
        return Some(UNLOGGED.swap(0, Ordering::Relaxed));
    }
    UNLOGGED.fetch_add(1, Ordering::Relaxed);
    None
}

#[cfg(test)]
mod tests {
    use super::refusal_to_log;

    #[test]
    fn refused_notifies_are_logged_once_in_30_seconds_with_a_count() {
        let t = 1_000_000;
        assert_eq!(refusal_to_log(t), Some(0));
        assert_eq!(refusal_to_log(t + 1), None);
        assert_eq!(refusal_to_log(t + 29), None);
        assert_eq!(refusal_to_log(t + 30), Some(2));
        assert_eq!(refusal_to_log(t + 31), None);
    }
}
