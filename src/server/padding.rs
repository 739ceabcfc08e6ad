//! EDNS padding of responses on the encrypted transports (RFC 7830), by
//! the block-length policy RFC 8467 recommends for responders: pad to a
//! multiple of 468 octets, so that an observer of the encrypted stream
//! learns the answer's size only to within a block.
//!
//! Padding goes in only where the query had EDNS (a response may carry
//! an OPT record only then). The response is decoded and encoded again
//! with the option added: a few microseconds, beside a TLS record's
//! encryption, and it keeps the handler's encoding path the same for
//! every transport.

use hickory_proto::op::Message;
use hickory_proto::rr::rdata::opt::{EdnsCode, EdnsOption};

/// RFC 8467 section 4.1: responses padded to a multiple of 468 octets.
pub const BLOCK: usize = 468;

/// `wire` padded to the next multiple of [`BLOCK`], or as it was when it
/// has no OPT record, cannot be decoded, or is too big to pad.
pub fn pad(wire: Vec<u8>) -> Vec<u8> {
    let Ok(mut message) = Message::from_vec(&wire) else {
        return wire;
    };
    let Some(edns) = message.edns.as_mut() else {
        return wire;
    };
    // Any padding the message had is replaced, not added to. The length
    // is measured as hickory encodes the message again (its name
    // compression may differ from the first encoding's); the option is
    // last, so its size moves nothing before it.
    edns.options_mut().remove(EdnsCode::Padding);
    edns.options_mut().insert(padding(0));
    let Ok(empty) = message.to_vec() else {
        return wire;
    };
    let padded = empty.len().div_ceil(BLOCK) * BLOCK;
    if padded == empty.len() {
        return empty;
    }
    if padded > usize::from(u16::MAX) {
        return wire;
    }
    let Some(edns) = message.edns.as_mut() else {
        return wire;
    };
    edns.options_mut().remove(EdnsCode::Padding);
    edns.options_mut().insert(padding(padded - empty.len()));
    message.to_vec().unwrap_or(wire)
}

fn padding(octets: usize) -> EdnsOption {
    EdnsOption::Unknown(u16::from(EdnsCode::Padding), vec![0; octets])
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query};
    use hickory_proto::rr::{Name, RData, Record, RecordType, rdata::A};

    fn response(edns: bool, answers: usize) -> Vec<u8> {
        let mut message = Message::new(7, MessageType::Response, OpCode::Query);
        let name = Name::from_ascii("www.example.org.").unwrap();
        message.add_query(Query::query(name.clone(), RecordType::A));
        for i in 0..answers {
            message.add_answer(Record::from_rdata(
                name.clone(),
                300,
                RData::A(A::new(192, 0, 2, (i % 250) as u8)),
            ));
        }
        if edns {
            message.set_edns(Edns::new());
        }
        message.to_vec().unwrap()
    }

    #[test]
    fn a_response_with_edns_is_padded_to_the_block_and_still_decodes() {
        for answers in [0, 1, 20, 40] {
            let wire = response(true, answers);
            let padded = pad(wire.clone());
            assert_eq!(
                padded.len() % BLOCK,
                0,
                "{answers} answers: {}",
                padded.len()
            );
            assert!(padded.len() >= wire.len());
            let message = Message::from_vec(&padded).unwrap();
            assert_eq!(message.answers.len(), answers);
            let edns = message.edns.as_ref().unwrap();
            assert!(edns.option(EdnsCode::Padding).is_some());
        }
    }

    #[test]
    fn a_response_without_edns_is_left_alone() {
        let wire = response(false, 3);
        assert_eq!(pad(wire.clone()), wire);
    }

    #[test]
    fn padding_already_there_is_replaced_not_doubled() {
        let once = pad(response(true, 2));
        let twice = pad(once.clone());
        assert_eq!(once.len(), twice.len());
    }

    #[test]
    fn bytes_that_are_not_a_message_pass_through() {
        let junk = vec![1, 2, 3];
        assert_eq!(pad(junk.clone()), junk);
    }
}
