//! The hand-written question reader agrees with hickory's full decoder:
//! whatever it accepts, hickory reads as the same one question, and it
//! never panics on any bytes.
#![no_main]

use hickory_proto::op::Message;
use libfuzzer_sys::fuzz_target;
use portcullis::server::question::Question;

fuzz_target!(|data: &[u8]| {
    let Some(question) = Question::parse(data) else {
        return;
    };
    let message = Message::from_vec(data).expect("what the fast reader takes, hickory reads");
    assert_eq!(message.queries.len(), 1);
    let query = &message.queries[0];
    assert_eq!(u16::from(query.query_type()), question.qtype());
    assert_eq!(u16::from(query.query_class()), question.qclass());
    let labels: Vec<&[u8]> = question.labels(data).collect();
    let theirs: Vec<&[u8]> = query.name().iter().collect();
    assert_eq!(labels, theirs);
    assert_eq!(usize::from(question.label_count()), labels.len());
    assert_eq!(question.edns_payload().is_some(), message.edns.is_some());
    if let Some(edns) = &message.edns {
        assert_eq!(question.dnssec_ok(), edns.flags().dnssec_ok);
    }
    assert!(question.limit >= 512 && question.limit <= 1232);
});
