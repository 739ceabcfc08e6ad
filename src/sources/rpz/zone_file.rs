//! The zone as a master file in feeds_dir: written whole after an AXFR,
//! edited after an IXFR, always replaced atomically. Each record the RPZ
//! acts on is one line (`owner TTL IN TYPE RDATA`, absolute, escaped
//! ASCII names: [`super::xfr::master_line`]), which the RPZ feed parser
//! reads; the first line is a comment naming the zone's serial, which an
//! IXFR checks before it edits the file.
//!
//! Nothing of the zone stays in memory between transfers: an IXFR reads
//! the file back, drops the deleted records and appends the added ones.

use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;
use std::path::Path;

use hickory_proto::rr::{RData, Record};

/// The header and SOA of a zone file.
fn head(zone: &str, soa: &Record, how: &str) -> String {
    let serial = super::xfr::soa_serial(soa).unwrap_or(0);
    let mut text = String::new();
    let _ = writeln!(
        text,
        "; {zone} serial {serial}: {how} by portcullis at {}",
        crate::sources::now_rfc3339()
    );
    let _ = writeln!(text, "$ORIGIN {zone}.");
    if let Some(line) = soa_line(soa) {
        let _ = writeln!(text, "{line}");
    }
    text
}

/// The SOA as a master-file line (the RPZ parser takes the serial from
/// it).
pub fn soa_line(soa: &Record) -> Option<String> {
    let RData::SOA(d) = &soa.data else {
        return None;
    };
    Some(format!(
        "{} {} IN SOA {} {} {} {} {} {} {}",
        soa.name.to_ascii(),
        soa.ttl,
        d.mname.to_ascii(),
        d.rname.to_ascii(),
        d.serial,
        d.refresh,
        d.retry,
        d.expire,
        d.minimum
    ))
}

/// The serial the zone file holds, from its first line.
pub fn serial_of(path: &Path) -> Option<u32> {
    use std::io::BufRead;
    let file = std::fs::File::open(path).ok()?;
    let mut first = String::new();
    std::io::BufReader::new(file).read_line(&mut first).ok()?;
    let rest = first.split(" serial ").nth(1)?;
    rest.split(':').next()?.trim().parse().ok()
}

/// Write the whole zone (after an AXFR).
pub fn write_full(
    path: &Path,
    zone: &str,
    soa: &Record,
    lines: &str,
    how: &str,
) -> std::io::Result<()> {
    let mut text = head(zone, soa, how);
    text.push_str(lines);
    crate::taxii::write_atomically(path, text.as_bytes())
}

/// What identifies a record for deletion: the line without its TTL, in
/// lower case (RFC 1995 deletes by name, class, type and data).
fn key(line: &str) -> Option<String> {
    let mut parts = line.splitn(3, ' ');
    let owner = parts.next()?;
    let _ttl = parts.next()?;
    let rest = parts.next()?;
    Some(format!("{owner} {rest}").to_ascii_lowercase())
}

/// Apply IXFR steps to the zone file. Fails, leaving the file alone,
/// when a deleted record is not in it (the file is not the version the
/// increment starts from: fall back to AXFR). An added record the zone
/// already holds is not added twice (RRsets are sets).
pub fn apply(
    path: &Path,
    zone: &str,
    soa: &Record,
    diffs: &[(Vec<Record>, Vec<Record>)],
    how: &str,
) -> Result<(usize, usize), String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    // Body: every record line after the SOA (the first record line).
    let mut lines: Vec<&str> = text
        .lines()
        .filter(|l| !(l.starts_with(';') || l.starts_with('$') || l.trim().is_empty()))
        .skip(1)
        .collect();
    let mut added_text = Vec::new();
    let (mut deleted_total, mut added_total) = (0, 0);
    for (deleted, added) in diffs {
        let mut pending: HashMap<String, usize> = HashMap::new();
        for line in deleted.iter().filter_map(super::xfr::master_line) {
            if let Some(k) = key(&line) {
                *pending.entry(k).or_default() += 1;
            }
        }
        let wanted: usize = pending.values().sum();
        // Deletions apply before additions (RFC 1995): a record deleted
        // and added back in one step is kept; an added record the zone
        // still holds is not added twice. One pass, one key per line.
        // In the order sent: consecutive A/AAAA records of one owner are
        // one answer set to the RPZ parser.
        let new: Vec<(String, String)> = added
            .iter()
            .filter_map(super::xfr::master_line)
            .filter_map(|l| Some((key(&l)?, l)))
            .collect();
        let new_keys: HashSet<String> = new.iter().map(|(k, _)| k.clone()).collect();
        let mut present: HashSet<String> = HashSet::new();
        let mut removed = 0;
        let mut keep = |line: &str| {
            let Some(k) = key(line) else {
                return true;
            };
            match pending.get_mut(&k) {
                Some(n) if *n > 0 => {
                    *n -= 1;
                    removed += 1;
                    false
                }
                _ => {
                    if new_keys.contains(&k) {
                        present.insert(k);
                    }
                    true
                }
            }
        };
        lines.retain(|l| keep(l));
        // Records added by an earlier step of this IXFR are held apart
        // (they are owned strings); a later step may delete them too.
        added_text.retain(|l: &String| keep(l));
        if removed != wanted {
            return Err(format!(
                "the increment deletes {} records the zone file does not hold",
                wanted - removed
            ));
        }
        for (k, line) in new {
            if present.insert(k) {
                added_text.push(line);
                added_total += 1;
            }
        }
        deleted_total += wanted;
    }
    let mut out = head(zone, soa, how);
    out.reserve(text.len());
    for line in lines {
        out.push_str(line);
        out.push('\n');
    }
    for line in &added_text {
        out.push_str(line);
        out.push('\n');
    }
    crate::taxii::write_atomically(path, out.as_bytes())
        .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    Ok((deleted_total, added_total))
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::rr::Name;
    use hickory_proto::rr::rdata::{A, AAAA};
    use hickory_proto::rr::rdata::{CNAME, SOA};

    fn soa(serial: u32) -> Record {
        Record::from_rdata(
            Name::from_ascii("rpz.test.").unwrap(),
            60,
            RData::SOA(SOA::new(
                Name::from_ascii("ns.rpz.test.").unwrap(),
                Name::from_ascii("admin.rpz.test.").unwrap(),
                serial,
                60,
                60,
                600,
                60,
            )),
        )
    }

    fn cname_line(owner: &str, ttl: u32) -> String {
        super::super::xfr::master_line(&cname(owner, ttl)).unwrap()
    }

    fn cname(owner: &str, ttl: u32) -> Record {
        Record::from_rdata(
            Name::from_ascii(owner).unwrap(),
            ttl,
            RData::CNAME(CNAME(Name::root())),
        )
    }

    #[test]
    fn an_increment_edits_the_file_and_a_wrong_base_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rpz.test");
        let body = format!(
            "{}\n{}\n",
            cname_line("a.rpz.test.", 60),
            cname_line("b.rpz.test.", 60)
        );
        write_full(&path, "rpz.test", &soa(1), &body, "AXFR").unwrap();
        assert_eq!(serial_of(&path), Some(1));
        // A deletion matches whatever the TTL, and in any case.
        let diffs = vec![
            (
                vec![cname("A.rpz.test.", 300)],
                vec![cname("c.rpz.test.", 60)],
            ),
            (
                vec![cname("c.rpz.test.", 60)],
                vec![cname("d.rpz.test.", 60)],
            ),
        ];
        assert_eq!(
            apply(&path, "rpz.test", &soa(3), &diffs, "IXFR").unwrap(),
            (2, 2)
        );
        let text = std::fs::read_to_string(&path).unwrap();
        let records: Vec<&str> = text.lines().skip(2).collect();
        assert_eq!(
            records,
            [
                "rpz.test. 60 IN SOA ns.rpz.test. admin.rpz.test. 3 60 60 600 60",
                "b.rpz.test. 60 IN CNAME .",
                "d.rpz.test. 60 IN CNAME ."
            ]
        );
        let before = std::fs::read(&path).unwrap();
        let wrong = vec![(vec![cname("zz.rpz.test.", 60)], vec![])];
        assert!(apply(&path, "rpz.test", &soa(4), &wrong, "IXFR").is_err());
        assert_eq!(std::fs::read(&path).unwrap(), before);
        assert_eq!(serial_of(&path), Some(3));
        // An addition already held is not added again.
        let again = vec![(vec![], vec![cname("b.rpz.test.", 60)])];
        assert_eq!(
            apply(&path, "rpz.test", &soa(4), &again, "IXFR").unwrap(),
            (0, 0)
        );
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.matches("b.rpz.test.").count(), 1);
        // Additions keep the order sent (an owner's A and AAAA stay one
        // answer set), and a record deleted and added back in one step
        // stays.
        let owner = Name::from_ascii("sink.rpz.test.").unwrap();
        let a = Record::from_rdata(owner.clone(), 60, RData::A(A("192.0.2.1".parse().unwrap())));
        let aaaa = Record::from_rdata(owner, 60, RData::AAAA(AAAA("2001:db8::1".parse().unwrap())));
        let steps = vec![(
            vec![cname("b.rpz.test.", 60)],
            vec![a, aaaa, cname("b.rpz.test.", 60)],
        )];
        assert_eq!(
            apply(&path, "rpz.test", &soa(5), &steps, "IXFR").unwrap(),
            (1, 3)
        );
        let text = std::fs::read_to_string(&path).unwrap();
        let tail: Vec<&str> = text.lines().rev().take(3).collect();
        assert_eq!(
            tail,
            [
                "b.rpz.test. 60 IN CNAME .",
                "sink.rpz.test. 60 IN AAAA 2001:db8::1",
                "sink.rpz.test. 60 IN A 192.0.2.1"
            ]
        );
    }
}
