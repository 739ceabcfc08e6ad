use super::*;

fn settings() -> BlockSettings {
    BlockSettings {
        policy_ttl: 300,
        sinkhole_ipv4: Some(Ipv4Addr::new(192, 0, 2, 53)),
        sinkhole_ipv6: None,
        ede_names_feed: true,
        structured: None,
    }
}

#[test]
fn constant_names_parse() {
    assert!(!SOA_MNAME.is_root());
    assert!(!SOA_RNAME.is_root());
}

#[test]
fn nxdomain_and_nodata_carry_the_policy_soa() {
    let q = Name::from_ascii("www.evil.example.").unwrap();
    let listed = Name::from_ascii("evil.example.").unwrap();
    for (action, rcode) in [
        (Action::Nxdomain, ResponseCode::NXDomain),
        (Action::Nodata, ResponseCode::NoError),
    ] {
        let a = block_answer(
            action,
            &q,
            RecordType::A,
            listed.clone(),
            &[],
            &settings(),
            7,
        );
        assert_eq!(a.rcode, rcode);
        assert!(a.answers.is_empty());
        let soa = &a.authorities[0];
        assert_eq!(soa.name, listed);
        assert_eq!(soa.ttl, 300);
        let RData::SOA(soa) = &soa.data else {
            panic!("not an SOA")
        };
        assert_eq!(soa.serial, 7);
        assert_eq!(soa.minimum, 300);
    }
    let a = block_answer(
        Action::Refused,
        &q,
        RecordType::A,
        listed,
        &[],
        &settings(),
        7,
    );
    assert_eq!(a.rcode, ResponseCode::Refused);
    assert!(a.authorities.is_empty());
}

#[test]
fn sinkhole_answers_configured_families_and_nodata_otherwise() {
    let q = Name::from_ascii("evil.example.").unwrap();
    let a = block_answer(
        Action::Sinkhole,
        &q,
        RecordType::A,
        q.clone(),
        &[],
        &settings(),
        1,
    );
    assert_eq!(a.answers[0].data, RData::A(A(Ipv4Addr::new(192, 0, 2, 53))));
    let aaaa = block_answer(
        Action::Sinkhole,
        &q,
        RecordType::AAAA,
        q.clone(),
        &[],
        &settings(),
        1,
    );
    assert!(aaaa.answers.is_empty());
    assert_eq!(aaaa.rcode, ResponseCode::NoError);
    assert_eq!(aaaa.authorities.len(), 1);
}

#[test]
fn feed_local_data_replaces_the_configured_sinkhole() {
    let q = Name::from_ascii("evil.example.").unwrap();
    let local: Vec<IpAddr> = vec![
        "192.0.2.1".parse().unwrap(),
        "192.0.2.2".parse().unwrap(),
        "2001:db8::1".parse().unwrap(),
    ];
    let a = block_answer(
        Action::Sinkhole,
        &q,
        RecordType::A,
        q.clone(),
        &local,
        &settings(),
        1,
    );
    assert_eq!(a.answers.len(), 2);
    let aaaa = block_answer(
        Action::Sinkhole,
        &q,
        RecordType::AAAA,
        q.clone(),
        &local,
        &settings(),
        1,
    );
    assert_eq!(
        aaaa.answers[0].data,
        RData::AAAA(AAAA("2001:db8::1".parse().unwrap()))
    );
    let mx = block_answer(
        Action::Sinkhole,
        &q,
        RecordType::MX,
        q.clone(),
        &local,
        &settings(),
        1,
    );
    assert!(mx.answers.is_empty() && mx.authorities.len() == 1);
}

#[test]
fn ede_payload_is_code_then_text() {
    let EdnsOption::Unknown(code, payload) =
        blocked_ede("malware", Some("threats.tsv"), &settings())
    else {
        panic!("wrong option kind")
    };
    assert_eq!(code, 15);
    assert_eq!(&payload[..2], &[0, 15]);
    let text = std::str::from_utf8(&payload[2..]).unwrap();
    assert!(
        text.contains("malware") && text.contains("threats.tsv"),
        "{text}"
    );
    let EdnsOption::Unknown(_, payload) = blocked_ede("malware", None, &settings()) else {
        panic!()
    };
    assert!(!std::str::from_utf8(&payload[2..]).unwrap().contains("feed"));
}

fn structured(settings: &BlockSettings, category: &str, feed: Option<&str>) -> serde_json::Value {
    let EdnsOption::Unknown(code, payload) = blocked_ede(category, feed, settings) else {
        panic!("wrong option kind")
    };
    assert_eq!((code, &payload[..2]), (15, &[0u8, 15][..]));
    let text = std::str::from_utf8(&payload[2..]).unwrap();
    assert!(
        !text.contains(' ') || text.contains("\"j\""),
        "minified: {text}"
    );
    serde_json::from_str(text).unwrap()
}

#[test]
fn structured_errors_carry_the_drafts_fields() {
    let mut s = settings();
    s.structured = Some(StructuredText::new(&crate::config::StructuredErrors {
        contact: vec![
            "mailto:soc@example.gov.uk".into(),
            "tel:+441234567890".into(),
        ],
        organisation: Some("Example CERT".into()),
    }));
    let v = structured(&s, "phishing", Some("threats.tsv"));
    assert_eq!(
        v,
        serde_json::json!({
            "c": ["mailto:soc@example.gov.uk", "tel:+441234567890"],
            "j": "protective DNS: category phishing, feed threats.tsv",
            "s": 2,
            "o": "Example CERT",
            "l": "en",
        })
    );
    assert_eq!(structured(&s, "malware", None)["s"], 1);
    assert_eq!(structured(&s, "ads", None)["s"], 6, "our own policy");
    assert_eq!(
        structured(&s, "malware", None)["j"],
        "protective DNS: category malware"
    );

    // Too long to send whole: j and o go first, c and s stay.
    let long = "x".repeat(280);
    let v = structured(&s, "malware", Some(&long));
    assert_eq!(
        v,
        serde_json::json!({"c": ["mailto:soc@example.gov.uk", "tel:+441234567890"], "s": 1})
    );
    // No contacts configured: no empty `c`.
    s.structured = Some(StructuredText::new(&crate::config::StructuredErrors {
        contact: vec![],
        organisation: None,
    }));
    let v = structured(&s, "spyware", None);
    assert!(v.get("c").is_none() && v.get("o").is_none());
    assert_eq!(v["s"], 4);
}
