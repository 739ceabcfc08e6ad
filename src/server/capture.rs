//! Encoding a handler's response as the UDP listener sends it, and
//! responders that keep the bytes instead of sending them: [`Capture`]
//! (UDP's size limit, for the handler bench and tests that drive the
//! handler without a socket) and [`Collect`] (a stream transport's, for
//! the listeners that frame the bytes themselves).

use std::sync::{Arc, Mutex, OnceLock};

use hickory_proto::ProtoError;
use hickory_proto::rr::Record;
use hickory_proto::serialize::binary::BinEncoder;
use hickory_server::net::NetError;
use hickory_server::server::{ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponse;

/// The response's bytes as hickory-server encodes for UDP: at most the
/// payload the client offered (512 without EDNS), truncated (TC) beyond.
pub fn encode_udp<'a>(
    response: MessageResponse<
        '_,
        'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
    >,
) -> Result<(ResponseInfo, Vec<u8>), ProtoError> {
    let limit = response.edns().map_or(512, |e| e.max_payload());
    let mut wire = Vec::with_capacity(512);
    let mut encoder = BinEncoder::new(&mut wire);
    encoder.set_max_size(limit);
    let info = response.destructive_emit(&mut encoder)?;
    Ok((info, wire))
}

/// Keeps the last response's UDP bytes; clones share them.
#[derive(Clone, Default)]
pub struct Capture(Arc<Mutex<Option<Vec<u8>>>>);

impl Capture {
    /// The bytes kept, if a response was sent since the last take.
    pub fn take(&self) -> Option<Vec<u8>> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take()
    }
}

#[async_trait::async_trait]
impl ResponseHandler for Capture {
    async fn send_response<'a>(
        &mut self,
        response: MessageResponse<
            '_,
            'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
        >,
    ) -> Result<ResponseInfo, NetError> {
        let (info, wire) = encode_udp(response)?;
        *self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(wire);
        Ok(info)
    }
}

/// A stream response's bytes: up to 65,535 octets, the most a two-octet
/// length (TCP, DoT, DoQ) or a DNS message can carry.
pub fn encode_stream<'a>(
    response: MessageResponse<
        '_,
        'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
    >,
) -> Result<(ResponseInfo, Vec<u8>), ProtoError> {
    let mut wire = Vec::with_capacity(512);
    let mut encoder = BinEncoder::new(&mut wire);
    encoder.set_max_size(u16::MAX);
    let info = response.destructive_emit(&mut encoder)?;
    Ok((info, wire))
}

/// Keeps one stream response's bytes for the listener that asked.
#[derive(Clone, Default)]
pub struct Collect(Arc<OnceLock<Vec<u8>>>);

impl Collect {
    /// The response, if the handler sent one (`drop` sends none).
    pub fn take(self) -> Option<Vec<u8>> {
        Arc::try_unwrap(self.0).ok().and_then(OnceLock::into_inner)
    }
}

#[async_trait::async_trait]
impl ResponseHandler for Collect {
    async fn send_response<'a>(
        &mut self,
        response: MessageResponse<
            '_,
            'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
        >,
    ) -> Result<ResponseInfo, NetError> {
        let (info, wire) = encode_stream(response)?;
        let _ = self.0.set(wire);
        Ok(info)
    }
}
