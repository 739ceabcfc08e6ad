//! Records and stores for the store's tests.

use super::{Cursor, Filter, Store};
use crate::hitlog::{Hit, Stage, Transport};

pub(super) fn hit(ts: i64, org: &str, client: &str, qname: &str, matched: &str) -> Hit {
    Hit {
        id: None,
        ts,
        org: Some(org.into()),
        client: client.parse().unwrap(),
        transport: Transport::Udp,
        qname: qname.into(),
        qtype: "A".into(),
        stage: Stage::Qname,
        matched: matched.into(),
        feed: "feed.txt".into(),
        category: "malware".into(),
        indicator: None,
        action: "nxdomain".into(),
        repeats: 1,
        last_ts: None,
        node: None,
    }
}

pub(super) fn store() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open_writer(&dir.path().join("hits.sqlite"), None).unwrap();
    (dir, store)
}

/// Every record in [since, until) by paging through `hits`, as
/// (id, ts), newest first.
pub(super) fn listed(s: &Store, org: Option<&str>, since: i64, until: i64) -> Vec<(i64, i64)> {
    let filter = Filter {
        org: org.map(str::to_owned),
        since: Some(since),
        until: Some(until),
        ..Filter::default()
    };
    let mut out = Vec::new();
    let mut after = None;
    loop {
        let page = s.hits(&filter, after, 7).unwrap();
        out.extend(page.hits.iter().map(|h| (h.id.unwrap(), h.ts)));
        match page.next.as_deref().and_then(Cursor::parse) {
            Some(c) => after = Some(c),
            None => return out,
        }
    }
}
