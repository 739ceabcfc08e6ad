//! The zone as a master file in feeds_dir: written whole after an AXFR,
//! edited after an IXFR, always replaced atomically. Each record is one
//! line as hickory prints it (`owner TTL IN TYPE RDATA`, absolute names),
//! which the RPZ feed parser reads; a comment at the top says where and
//! when it came from.
//!
//! Nothing of the zone stays in memory between transfers: an IXFR reads
//! the file back, drops the deleted records and appends the added ones.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::Path;

use hickory_proto::rr::Record;

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
    let _ = writeln!(text, "{soa}");
    text
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
/// increment starts from: fall back to AXFR).
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
        for record in deleted {
            if let Some(k) = key(&record.to_string()) {
                *pending.entry(k).or_default() += 1;
            }
        }
        let wanted = deleted.len();
        let mut removed = 0;
        let mut keep = |line: &str| match key(line).and_then(|k| pending.get_mut(&k)) {
            Some(n) if *n > 0 => {
                *n -= 1;
                removed += 1;
                false
            }
            _ => true,
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
        for record in added {
            added_text.push(record.to_string());
        }
        deleted_total += wanted;
        added_total += added.len();
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
    use hickory_proto::rr::rdata::{CNAME, SOA};
    use hickory_proto::rr::{Name, RData};

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
            cname("a.rpz.test.", 60),
            cname("b.rpz.test.", 60)
        );
        write_full(&path, "rpz.test", &soa(1), &body, "AXFR").unwrap();
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
                soa(3).to_string().as_str(),
                "b.rpz.test. 60 IN CNAME .",
                "d.rpz.test. 60 IN CNAME ."
            ]
        );
        let before = std::fs::read(&path).unwrap();
        let wrong = vec![(vec![cname("zz.rpz.test.", 60)], vec![])];
        assert!(apply(&path, "rpz.test", &soa(4), &wrong, "IXFR").is_err());
        assert_eq!(std::fs::read(&path).unwrap(), before);
    }
}
