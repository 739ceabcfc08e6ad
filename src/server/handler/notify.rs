//! DNS NOTIFY (RFC 1996) for the RPZ zones Portcullis transfers: from a
//! configured primary's address it wakes the zone's task and is answered
//! NOERROR; from anyone else, or for a zone not configured, it is refused,
//! logged and counted. A NOTIFY only makes a refresh early: the transfer
//! it starts is what TSIG protects.

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
            tracing::warn!(
                source = %request.src(),
                %zone,
                reason = verdict.as_str(),
                "NOTIFY refused: only a configured [[rpz]] zone's primaries may send one"
            );
            return reject(request, handle, ResponseCode::Refused).await;
        }
        let mut metadata = Metadata::response_from_request(&request.metadata);
        metadata.authoritative = true;
        let edns = response_edns(request);
        let info = send(request, handle, metadata, edns.as_ref(), &[], &[]).await;
        (info, QueryOutcome::Answered)
    }
}
