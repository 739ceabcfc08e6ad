//! The JSON-lines stream of hit records, rotated daily.
//!
//! Records go to the configured file (`hits.jsonl`), one JSON object per
//! line, flushed after each batch so a shipper (Vector, Filebeat) tailing
//! it sees them at once. At the first write of a new UTC day the file is
//! renamed to `hits-YYYY-MM-DD.jsonl` (the day it holds) and a new one is
//! started; shippers follow renames. Old files are left for the
//! operator's log rotation policy to remove.

use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

use super::Hit;
use crate::clock::{DAY_MS, day_name};

pub struct JsonLines {
    path: PathBuf,
    file: Option<BufWriter<File>>,
    /// The UTC day the open file holds.
    day: i64,
}

impl JsonLines {
    pub fn new(path: PathBuf) -> JsonLines {
        JsonLines {
            path,
            file: None,
            day: i64::MIN,
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Append a batch; `now` decides the day (and so the rotation).
    pub fn write(&mut self, hits: &[Hit], now: i64) -> io::Result<()> {
        let today = now.div_euclid(DAY_MS);
        if self.file.is_none() || today != self.day {
            self.open(today)?;
        }
        let Some(file) = self.file.as_mut() else {
            return Ok(());
        };
        for hit in hits {
            serde_json::to_writer(&mut *file, hit)?;
            file.write_all(b"\n")?;
        }
        file.flush()
    }

    /// Open the file for `today`, first moving aside one left from an
    /// earlier day (by this process or before a restart).
    fn open(&mut self, today: i64) -> io::Result<()> {
        let held = match self.file.take() {
            Some(mut old) => {
                old.flush()?;
                Some(self.day)
            }
            None => None,
        };
        if let Ok(meta) = std::fs::metadata(&self.path) {
            // The day the file holds: ours if we had it open, else the day
            // it was last written (a file left by an earlier run).
            let held = held.or_else(|| {
                meta.modified()
                    .ok()
                    .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                    .map(|d| d.as_millis() as i64 / DAY_MS)
            });
            if let Some(day) = held.filter(|d| *d != today && meta.len() > 0) {
                std::fs::rename(&self.path, self.rotated_name(day))?;
            }
        }
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)?;
        self.file = Some(BufWriter::new(file));
        self.day = today;
        Ok(())
    }

    /// `hits.jsonl` -> `hits-2026-11-25.jsonl` (`-2026-11-25.1` if taken).
    fn rotated_name(&self, day: i64) -> PathBuf {
        let stem = self
            .path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "hits".into());
        let ext = self
            .path
            .extension()
            .map(|s| format!(".{}", s.to_string_lossy()))
            .unwrap_or_default();
        let date = day_name(day);
        let mut candidate = self.path.with_file_name(format!("{stem}-{date}{ext}"));
        let mut n = 1;
        while candidate.exists() {
            candidate = self.path.with_file_name(format!("{stem}-{date}.{n}{ext}"));
            n += 1;
        }
        candidate
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hitlog::{Stage, Transport};

    fn hit(ts: i64) -> Hit {
        Hit {
            id: Some(ts),
            ts,
            org: None,
            client: "::1".parse().unwrap(),
            transport: Transport::Tcp,
            qname: "a.example".into(),
            qtype: "AAAA".into(),
            stage: Stage::Qname,
            matched: "a.example".into(),
            feed: "f".into(),
            category: "c".into(),
            indicator: Some("indicator--1".into()),
            action: "log".into(),
            repeats: 1,
            last_ts: None,
            node: None,
        }
    }

    #[test]
    fn lines_parse_back_and_a_new_day_rotates_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hits.jsonl");
        let mut j = JsonLines::new(path.clone());
        j.write(&[hit(1), hit(2)], 10).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let back: Vec<Hit> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(back, [hit(1), hit(2)]);
        j.write(&[hit(DAY_MS + 1)], DAY_MS + 1).unwrap();
        let rotated = dir.path().join("hits-1970-01-01.jsonl");
        assert_eq!(std::fs::read_to_string(rotated).unwrap(), text);
        assert_eq!(std::fs::read_to_string(&path).unwrap().lines().count(), 1);
    }
}
