//! The dnstap schema (dnstap.proto, "protobuf:dnstap.Dnstap"), the part a
//! resolver's client-side messages use, as prost structs: the field
//! numbers and types are dnstap's, so any collector decodes them.

use std::net::SocketAddr;
use std::time::{SystemTime, UNIX_EPOCH};

/// The Frame Streams content type of a dnstap stream.
pub const CONTENT_TYPE: &[u8] = b"protobuf:dnstap.Dnstap";

#[derive(Clone, PartialEq, prost::Message)]
pub struct Dnstap {
    #[prost(bytes = "vec", optional, tag = "1")]
    pub identity: Option<Vec<u8>>,
    #[prost(bytes = "vec", optional, tag = "2")]
    pub version: Option<Vec<u8>>,
    #[prost(message, optional, tag = "14")]
    pub message: Option<Message>,
    #[prost(enumeration = "DnstapType", required, tag = "15")]
    pub r#type: i32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, prost::Enumeration)]
#[repr(i32)]
pub enum DnstapType {
    Message = 1,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Message {
    #[prost(enumeration = "MessageType", required, tag = "1")]
    pub r#type: i32,
    #[prost(enumeration = "SocketFamily", optional, tag = "2")]
    pub socket_family: Option<i32>,
    #[prost(enumeration = "SocketProtocol", optional, tag = "3")]
    pub socket_protocol: Option<i32>,
    #[prost(bytes = "vec", optional, tag = "4")]
    pub query_address: Option<Vec<u8>>,
    #[prost(bytes = "vec", optional, tag = "5")]
    pub response_address: Option<Vec<u8>>,
    #[prost(uint32, optional, tag = "6")]
    pub query_port: Option<u32>,
    #[prost(uint32, optional, tag = "7")]
    pub response_port: Option<u32>,
    #[prost(uint64, optional, tag = "8")]
    pub query_time_sec: Option<u64>,
    #[prost(fixed32, optional, tag = "9")]
    pub query_time_nsec: Option<u32>,
    #[prost(bytes = "vec", optional, tag = "10")]
    pub query_message: Option<Vec<u8>>,
    #[prost(uint64, optional, tag = "12")]
    pub response_time_sec: Option<u64>,
    #[prost(fixed32, optional, tag = "13")]
    pub response_time_nsec: Option<u32>,
    #[prost(bytes = "vec", optional, tag = "14")]
    pub response_message: Option<Vec<u8>>,
    #[prost(message, optional, tag = "15")]
    pub policy: Option<Policy>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, prost::Enumeration)]
#[repr(i32)]
pub enum MessageType {
    ClientQuery = 5,
    ClientResponse = 6,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, prost::Enumeration)]
#[repr(i32)]
pub enum SocketFamily {
    Inet = 1,
    Inet6 = 2,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, prost::Enumeration)]
#[repr(i32)]
pub enum SocketProtocol {
    Udp = 1,
    Tcp = 2,
    Dot = 3,
    Doh = 4,
    Doq = 7,
}

/// The operator's policy applied to the query.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Policy {
    #[prost(string, optional, tag = "1")]
    pub r#type: Option<String>,
    #[prost(bytes = "vec", optional, tag = "2")]
    pub rule: Option<Vec<u8>>,
    #[prost(enumeration = "PolicyAction", optional, tag = "3")]
    pub action: Option<i32>,
    #[prost(enumeration = "PolicyMatch", optional, tag = "4")]
    pub r#match: Option<i32>,
    #[prost(bytes = "vec", optional, tag = "5")]
    pub value: Option<Vec<u8>>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, prost::Enumeration)]
#[repr(i32)]
pub enum PolicyMatch {
    Qname = 1,
    ClientIp = 2,
    ResponseIp = 3,
    NsName = 4,
    NsIp = 5,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, prost::Enumeration)]
#[repr(i32)]
pub enum PolicyAction {
    Nxdomain = 1,
    Nodata = 2,
    Pass = 3,
    Drop = 4,
    LocalData = 6,
}

/// `(address bytes, port, family)` of a socket address.
pub fn address(addr: SocketAddr) -> (Vec<u8>, u32, SocketFamily) {
    match addr {
        SocketAddr::V4(a) => (
            a.ip().octets().to_vec(),
            u32::from(a.port()),
            SocketFamily::Inet,
        ),
        SocketAddr::V6(a) => (
            a.ip().octets().to_vec(),
            u32::from(a.port()),
            SocketFamily::Inet6,
        ),
    }
}

/// Seconds and nanoseconds since the Unix epoch.
pub fn time(at: SystemTime) -> (u64, u32) {
    let d = at.duration_since(UNIX_EPOCH).unwrap_or_default();
    (d.as_secs(), d.subsec_nanos())
}
