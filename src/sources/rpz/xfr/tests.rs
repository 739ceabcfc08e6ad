use super::*;
use hickory_proto::rr::rdata::{CNAME, SOA};

fn soa(serial: u32) -> Record {
    let zone = Name::from_ascii("rpz.test.").unwrap();
    let data = SOA::new(
        Name::from_ascii("ns.rpz.test.").unwrap(),
        Name::from_ascii("admin.rpz.test.").unwrap(),
        serial,
        60,
        60,
        600,
        60,
    );
    Record::from_rdata(zone, 60, RData::SOA(data))
}

fn cname(owner: &str) -> Record {
    Record::from_rdata(
        Name::from_ascii(owner).unwrap(),
        60,
        RData::CNAME(CNAME(Name::root())),
    )
}

const LIMITS: Limits = Limits {
    per_message: Duration::from_secs(5),
    deadline: Duration::from_secs(10),
    max_records: 1000,
    max_bytes: 1 << 20,
};

fn zone() -> Name {
    Name::from_ascii("rpz.test.").unwrap()
}

fn run(ours: Option<u32>, records: Vec<Record>) -> Result<Option<Xfr>, String> {
    let mut c = Collector::new(zone(), ours, LIMITS);
    for r in records {
        if let Some(done) = c.push(r)? {
            return Ok(Some(done));
        }
    }
    Ok(match c.lone_soa() {
        Some(Lone::UpToDate(serial)) => Some(Xfr::UpToDate { serial }),
        Some(Lone::Behind(_)) => return Err("behind".into()),
        None => None,
    })
}

#[test]
fn axfr_ends_at_the_closing_soa() {
    let got = run(
        None,
        vec![soa(5), cname("a.rpz.test."), cname("b.rpz.test."), soa(5)],
    );
    match got {
        Ok(Some(Xfr::Full {
            soa: s,
            lines,
            count,
        })) => {
            assert_eq!(soa_serial(&s), Some(5));
            assert_eq!(count, 2);
            assert_eq!(
                lines,
                "a.rpz.test. 60 IN CNAME .\nb.rpz.test. 60 IN CNAME .\n"
            );
        }
        other => panic!("{other:?}"),
    }
    // Another zone's SOA is refused; records outside the zone and
    // types an RPZ does not use are left out.
    let other = Record::from_rdata(
        Name::from_ascii("other.test.").unwrap(),
        60,
        soa(5).data.clone(),
    );
    assert!(
        run(None, vec![other])
            .unwrap_err()
            .contains("not for rpz.test.")
    );
    let txt = Record::from_rdata(
        Name::from_ascii("t.rpz.test.").unwrap(),
        60,
        RData::TXT(hickory_proto::rr::rdata::TXT::new(vec!["a (b".into()])),
    );
    let mixed = vec![
        soa(5),
        cname("x.other.test."),
        txt,
        cname("a.rpz.test."),
        soa(5),
    ];
    match run(None, mixed) {
        Ok(Some(Xfr::Full { lines, count, .. })) => {
            assert_eq!((lines.as_str(), count), ("a.rpz.test. 60 IN CNAME .\n", 1));
        }
        other => panic!("{other:?}"),
    }
    // A cap on records.
    let many: Vec<Record> = std::iter::once(soa(5))
        .chain((0..1001).map(|i| cname(&format!("n{i}.rpz.test."))))
        .collect();
    assert!(
        run(None, many)
            .unwrap_err()
            .contains("more than 1000 records")
    );
    // Not finished without the closing SOA.
    assert!(matches!(
        run(None, vec![soa(5), cname("a.rpz.test.")]),
        Ok(None)
    ));
    assert!(run(None, vec![cname("a.rpz.test.")]).is_err());
}

#[test]
fn ixfr_steps_and_the_up_to_date_answer() {
    let got = run(
        Some(3),
        vec![
            soa(5),
            soa(3),
            cname("old.rpz.test."),
            soa(4),
            cname("new.rpz.test."),
            soa(4),
            soa(5),
            cname("newer.rpz.test."),
            soa(5),
        ],
    );
    match got {
        Ok(Some(Xfr::Incremental { soa: s, diffs })) => {
            assert_eq!(soa_serial(&s), Some(5));
            assert_eq!(diffs.len(), 2);
            assert_eq!((diffs[0].0.len(), diffs[0].1.len()), (1, 1));
            assert_eq!((diffs[1].0.len(), diffs[1].1.len()), (0, 1));
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        run(Some(5), vec![soa(5)]),
        Ok(Some(Xfr::UpToDate { serial: 5 }))
    ));
    // A primary that went back is not "up to date": transfer it whole.
    assert_eq!(run(Some(2026120601), vec![soa(5)]).unwrap_err(), "behind");
    // An increment from a serial that is not ours is refused, not
    // taken as the whole zone.
    let e = run(
        Some(3),
        vec![soa(5), soa(2), cname("old.rpz.test."), soa(5), soa(5)],
    )
    .unwrap_err();
    assert!(e.contains("from serial 2"), "{e}");
    // SOA SOA: no change for IXFR; an empty zone for AXFR is refused.
    assert!(matches!(
        run(Some(5), vec![soa(5), soa(5)]),
        Ok(Some(Xfr::UpToDate { serial: 5 }))
    ));
    assert!(run(None, vec![soa(5), soa(5)]).is_err());
    // An IXFR answered with the whole zone.
    assert!(matches!(
        run(Some(3), vec![soa(5), cname("a.rpz.test."), soa(5)]),
        Ok(Some(Xfr::Full { .. }))
    ));
}

/// A primary on loopback that reads the request and sends `reply`
/// (each message framed with the id of the request), then closes.
async fn primary(reply: Vec<Vec<Record>>, cut: Option<usize>) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        let len = s.read_u16().await.unwrap();
        let mut q = vec![0; usize::from(len)];
        s.read_exact(&mut q).await.unwrap();
        let id = Message::from_vec(&q).unwrap().metadata.id;
        for records in reply {
            let mut m = Message::new(id, MessageType::Response, OpCode::Query);
            for r in records {
                m.add_answer(r);
            }
            let wire = m.to_vec().unwrap();
            let mut framed = (wire.len() as u16).to_be_bytes().to_vec();
            framed.extend_from_slice(&wire);
            let end = cut.map_or(framed.len(), |c| c.min(framed.len()));
            s.write_all(&framed[..end]).await.unwrap();
        }
    });
    addr
}

#[tokio::test]
async fn a_transfer_cut_short_or_garbled_is_an_error() {
    let zone = Name::from_ascii("rpz.test.").unwrap();
    let wait = LIMITS;
    let whole = vec![vec![soa(5), cname("a.rpz.test.")], vec![soa(5)]];
    let addr = primary(whole, None).await;
    assert!(matches!(
        transfer(addr, &zone, None, None, wait).await,
        Ok(Xfr::Full { count: 1, .. })
    ));
    // The closing message never comes: the connection closes.
    let addr = primary(vec![vec![soa(5), cname("a.rpz.test.")]], None).await;
    let e = transfer(addr, &zone, None, None, wait).await.unwrap_err();
    assert!(e.to_string().contains("cut short"), "{e}");
    // A message cut in the middle.
    let addr = primary(vec![vec![soa(5), cname("a.rpz.test."), soa(5)]], Some(20)).await;
    let e = transfer(addr, &zone, None, None, wait).await.unwrap_err();
    assert!(e.to_string().contains("cut short"), "{e}");
    // A first record that is not the SOA.
    let addr = primary(vec![vec![cname("a.rpz.test."), soa(5)]], None).await;
    let e = transfer(addr, &zone, None, None, wait).await.unwrap_err();
    assert!(e.to_string().contains("not the zone's SOA"), "{e}");
}

/// The lines written without allocating are `Name::to_ascii`'s, escapes
/// and all, so the RPZ parser reads back exactly the record.
#[test]
fn master_lines_spell_names_as_to_ascii_does() {
    use hickory_proto::rr::domain::Label;
    use hickory_proto::rr::rdata::{A, AAAA};
    let zone = Name::from_ascii("rpz.test.").unwrap();
    let odd = Name::from_labels(vec![
        Label::from_raw_bytes(b"a.b").unwrap(),
        Label::from_raw_bytes(b"sp ace").unwrap(),
        Label::from_raw_bytes(b"\x01\xff").unwrap(),
    ])
    .unwrap()
    .append_domain(&zone)
    .unwrap();
    let names = [
        Name::from_ascii("*.evil.example.rpz.test.").unwrap(),
        Name::from_ascii("xn--bcher-kva.example.rpz.test.").unwrap(),
        Name::from_ascii("under_score.example.rpz.test.").unwrap(),
        odd,
    ];
    let targets = [
        Name::root(),
        Name::from_ascii("*.").unwrap(),
        Name::from_ascii("rpz-passthru.").unwrap(),
        Name::from_ascii("relative").unwrap(),
    ];
    for owner in &names {
        for target in &targets {
            let record =
                Record::from_rdata(owner.clone(), 300, RData::CNAME(CNAME(target.clone())));
            let expected = format!("{} 300 IN CNAME {}", owner.to_ascii(), target.to_ascii());
            assert_eq!(master_line(&record).as_deref(), Some(expected.as_str()));
            let mut out = String::from("before\n");
            assert!(write_master_line(&mut out, &record));
            assert_eq!(out, format!("before\n{expected}\n"));
        }
    }
    let a = Record::from_rdata(names[0].clone(), 60, RData::A(A::new(192, 0, 2, 1)));
    assert_eq!(
        master_line(&a).unwrap(),
        format!("{} 60 IN A 192.0.2.1", names[0].to_ascii())
    );
    let aaaa = Record::from_rdata(
        names[1].clone(),
        60,
        RData::AAAA(AAAA::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1)),
    );
    assert_eq!(
        master_line(&aaaa).unwrap(),
        format!("{} 60 IN AAAA 2001:db8::1", names[1].to_ascii())
    );
    assert_eq!(master_line(&soa(1)), None);
    let mut out = String::new();
    assert!(!write_master_line(&mut out, &soa(1)));
    assert!(out.is_empty());
}
