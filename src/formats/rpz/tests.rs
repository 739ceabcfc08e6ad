use super::super::{Format, parse_full};
use super::*;

#[test]
fn golden_rpz() {
    let text = "$ORIGIN rpz.example.\n$TTL 300\n\
                @ IN SOA localhost. hostmaster.localhost. (\n  1 ; serial\n  3600 600 86400 300 )\n\
                @ IN NS localhost.\n\
                nx.example CNAME .\n*.nx.example CNAME .\n\
                nodata.example 300 IN CNAME *.\n\
                pass.nx.example CNAME rpz-passthru.\n\
                drop.example CNAME rpz-drop.\n\
                old-pass.example CNAME old-pass.example.\n\
                sink.example A 192.0.2.1\n  AAAA 2001:db8::1\n\
                abs.example.rpz.example. CNAME . ; absolute owner\n\
                EVIL.Example CNAME .\n\
                32.1.2.0.192.rpz-ip CNAME .\n\
                redirect.example CNAME walled-garden.example.\n\
                txt.example TXT \"hello\"\n\
                outside.other. CNAME .\n\
                bad_name!.example CNAME .\n\
                odd.example WKS x\n";
    let (got, report) = parse_full(text, Format::Rpz);
    let rows: Vec<(&str, Scope, Verdict, Option<Action>, usize)> = got
        .iter()
        .map(|((n, s, v, ..), a, l)| (n.as_str(), *s, *v, *a, l.len()))
        .collect();
    assert_eq!(
        rows,
        [
            (
                "nx.example",
                Scope::Exact,
                Verdict::Block,
                Some(Action::Nxdomain),
                0
            ),
            (
                "nx.example",
                Scope::Below,
                Verdict::Block,
                Some(Action::Nxdomain),
                0
            ),
            (
                "nodata.example",
                Scope::Exact,
                Verdict::Block,
                Some(Action::Nodata),
                0
            ),
            ("pass.nx.example", Scope::Exact, Verdict::Allow, None, 0),
            (
                "drop.example",
                Scope::Exact,
                Verdict::Block,
                Some(Action::Drop),
                0
            ),
            ("old-pass.example", Scope::Exact, Verdict::Allow, None, 0),
            (
                "sink.example",
                Scope::Exact,
                Verdict::Block,
                Some(Action::Sinkhole),
                2
            ),
            (
                "abs.example",
                Scope::Exact,
                Verdict::Block,
                Some(Action::Nxdomain),
                0
            ),
            (
                "evil.example",
                Scope::Exact,
                Verdict::Block,
                Some(Action::Nxdomain),
                0
            ),
            (
                "192.0.2.1/32",
                Scope::Exact,
                Verdict::Block,
                Some(Action::Nxdomain),
                0
            ),
        ]
    );
    assert_eq!(report.loaded, 10);
    assert_eq!(report.skipped.get("rpz CNAME redirect"), Some(&1));
    assert_eq!(
        report.skipped.get("rpz local data other than A/AAAA"),
        Some(&1)
    );
    let rejected: Vec<usize> = report.first_rejects.iter().map(|r| r.line).collect();
    assert_eq!(rejected, [20, 21, 22]);
}

#[test]
fn rpz_ip_triggers_are_address_indicators() {
    let text = "$ORIGIN rpz.test.\n24.0.2.0.192.rpz-ip CNAME *.\n\
                128.1.zz.db8.2001.rpz-ip CNAME rpz-passthru.\n\
                48.zz.db8.2001.rpz-ip CNAME rpz-drop.\n\
                64.zz.rpz-ip CNAME .\n\
                32.9.9.9.9.rpz-ip A 192.0.2.9\n\
                40.1.2.0.192.rpz-ip CNAME .\n\
                x.1.2.3.rpz-ip CNAME .\n";
    let (got, report) = parse_full(text, Format::Rpz);
    let rows: Vec<(&str, Verdict, Option<Action>)> = got
        .iter()
        .map(|((n, _, v, ..), a, _)| (n.as_str(), *v, *a))
        .collect();
    assert_eq!(
        rows,
        [
            ("192.0.2.0/24", Verdict::Block, Some(Action::Nodata)),
            ("2001:db8::1/128", Verdict::Allow, None),
            ("2001:db8::/48", Verdict::Block, Some(Action::Drop)),
            ("::/64", Verdict::Block, Some(Action::Nxdomain)),
        ]
    );
    assert_eq!(report.skipped.get("rpz-ip local data"), Some(&1));
    let rejected: Vec<usize> = report.first_rejects.iter().map(|r| r.line).collect();
    assert_eq!(rejected, [7, 8]);
}

#[test]
fn origin_comes_from_the_soa_when_there_is_no_origin_directive() {
    let text = "rpz.test. 300 IN SOA ns. host. 1 1 1 1 1\nevil.example.rpz.test. CNAME .\nrel.example CNAME *.\n";
    let (got, report) = parse_full(text, Format::Rpz);
    let names: Vec<&str> = got.iter().map(|((n, ..), ..)| n.as_str()).collect();
    assert_eq!(names, ["evil.example", "rel.example"]);
    assert_eq!(report.rejected, 0);
}

#[test]
fn entries_name_the_zone_serial_that_listed_them() {
    let text = "$ORIGIN rpz.example.\n\
                @ IN SOA ns.rpz.example. admin.rpz.example. 2026120601 60 60 600 60\n\
                nx.example CNAME .\nsink.example A 192.0.2.1\n32.1.2.0.192.rpz-ip CNAME .\n";
    let (got, _) = parse_full(text, Format::Rpz);
    let details: Vec<Option<&str>> = got.iter().map(|((.., d), _, _)| d.as_deref()).collect();
    assert_eq!(details, [Some("rpz.example serial 2026120601"); 3]);
    // Without an SOA there is no version to name.
    let (got, _) = parse_full("$ORIGIN rpz.example.\nnx.example CNAME .\n", Format::Rpz);
    assert_eq!(got[0].0.4, None);
}

#[test]
fn client_ip_triggers_are_client_address_indicators() {
    let text = "$ORIGIN rpz.example.\n\
                32.2.0.0.127.rpz-client-ip CNAME .\n\
                24.0.2.0.192.rpz-client-ip CNAME rpz-passthru.\n\
                128.1.zz.db8.2001.rpz-client-ip CNAME rpz-drop.\n\
                32.3.0.0.127.rpz-client-ip A 192.0.2.1\n";
    let mut got = Vec::new();
    let report = crate::formats::parse_reader(text.as_bytes(), Format::Rpz, &mut |i| {
        got.push((
            i.net.map(|n| n.to_string()),
            i.subject == crate::formats::Subject::Client,
            i.verdict,
            i.action,
        ))
    })
    .unwrap();
    assert_eq!(
        got,
        [
            (
                Some("127.0.0.2/32".into()),
                true,
                Verdict::Block,
                Some(Action::Nxdomain)
            ),
            (Some("192.0.2.0/24".into()), true, Verdict::Allow, None),
            (
                Some("2001:db8::1/128".into()),
                true,
                Verdict::Block,
                Some(Action::Drop)
            ),
        ]
    );
    assert_eq!(report.skipped.get("rpz-client-ip local data"), Some(&1));
}

#[test]
fn name_server_triggers_are_name_server_indicators() {
    let text = "$ORIGIN rpz.example.\n\
                ns1.evil.example.rpz-nsdname CNAME .\n\
                *.bad-dns.example.rpz-nsdname CNAME *.\n\
                ok.bad-dns.example.rpz-nsdname CNAME rpz-passthru.\n\
                ns2.evil.example.rpz-nsdname A 192.0.2.1\n\
                ns3.evil.example.rpz-nsdname CNAME rpz-tcp-only.\n\
                32.5.55.0.127.rpz-nsip CNAME .\n\
                24.0.2.0.192.rpz-nsip A 192.0.2.1\n\
                bad!.example.rpz-nsdname CNAME .\n";
    let mut got = Vec::new();
    let report = crate::formats::parse_reader(text.as_bytes(), Format::Rpz, &mut |i| {
        got.push((
            i.net.map_or(i.name, |n| n.to_string()),
            i.scope,
            i.subject,
            i.verdict,
            i.action,
        ))
    })
    .unwrap();
    use crate::formats::Subject::NameServer;
    assert_eq!(
        got,
        [
            (
                "ns1.evil.example".to_owned(),
                Scope::Exact,
                NameServer,
                Verdict::Block,
                Some(Action::Nxdomain)
            ),
            (
                "bad-dns.example".to_owned(),
                Scope::Below,
                NameServer,
                Verdict::Block,
                Some(Action::Nodata)
            ),
            (
                "ok.bad-dns.example".to_owned(),
                Scope::Exact,
                NameServer,
                Verdict::Allow,
                None
            ),
            (
                "127.0.55.5/32".to_owned(),
                Scope::Exact,
                NameServer,
                Verdict::Block,
                Some(Action::Nxdomain)
            ),
        ]
    );
    assert_eq!(report.skipped.get("rpz-nsdname local data"), Some(&1));
    assert_eq!(report.skipped.get("rpz-nsip local data"), Some(&1));
    assert_eq!(report.skipped.get("rpz-tcp-only action"), Some(&1));
    assert_eq!(report.rejected, 1, "the bad name is a rejected line");
}
