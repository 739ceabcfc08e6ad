//! Opening a feed file: gzip or plain, told apart by magic bytes, with
//! decompression on a thread of its own.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom};
use std::ops::Range;
use std::path::Path;

/// Open a feed file, transparently un-gzipping it (by magic bytes, not
/// name). Reading past `max_bytes` (after decompression) is an error, so
/// a gzip bomb stops at the limit instead of filling memory and time.
pub(super) fn open(path: &Path, max_bytes: u64) -> io::Result<Box<dyn BufRead>> {
    let mut file = BufReader::with_capacity(1 << 16, File::open(path)?);
    let magic = file.fill_buf()?;
    if magic.starts_with(&[0x1f, 0x8b]) {
        let gz = flate2::bufread::MultiGzDecoder::new(file);
        Ok(Box::new(BufReader::with_capacity(
            1 << 16,
            Bounded::new(Prefetch::spawn(gz), max_bytes),
        )))
    } else {
        Ok(Box::new(BufReader::with_capacity(
            1 << 16,
            Bounded::new(file, max_bytes),
        )))
    }
}

/// Byte ranges that split a plain-text feed file at line starts into up
/// to `n` parts of at least `min_part` bytes each. A compressed file, or
/// one over `max_bytes` (the whole-file read refuses it), is one part.
pub(super) fn line_parts(
    path: &Path,
    n: usize,
    min_part: u64,
    max_bytes: u64,
) -> io::Result<Vec<Range<u64>>> {
    let mut file = File::open(path)?;
    let size = file.metadata()?.len();
    let mut magic = [0u8; 2];
    let gzip = file.read(&mut magic)? == 2 && magic == [0x1f, 0x8b];
    let n = n.min(usize::try_from(size / min_part.max(1)).unwrap_or(usize::MAX));
    if gzip || size > max_bytes || n < 2 {
        return Ok(std::iter::once(0..size).collect());
    }
    let mut starts = vec![0];
    let mut window = Vec::with_capacity(4096);
    for k in 1..n as u64 {
        let at = (size * k / n as u64).max(*starts.last().unwrap_or(&0));
        file.seek(SeekFrom::Start(at))?;
        // The next line starts past the first newline from `at` (a line
        // longer than the parser allows ends the search: the parse of the
        // part before will refuse it).
        window.clear();
        (&mut file).take(64 * 1024 + 1).read_to_end(&mut window)?;
        let Some(newline) = window.iter().position(|b| *b == b'\n') else {
            break;
        };
        let start = at + newline as u64 + 1;
        if start < size && start > *starts.last().unwrap_or(&0) {
            starts.push(start);
        }
    }
    let mut parts: Vec<Range<u64>> = starts.windows(2).map(|w| w[0]..w[1]).collect();
    parts.push(*starts.last().unwrap_or(&0)..size);
    Ok(parts)
}

/// A reader over `part` of a plain feed file, and the number of the line
/// it starts on (the newlines before it are counted, so a part's line
/// numbers are the file's).
pub(super) fn open_part(path: &Path, part: &Range<u64>) -> io::Result<(impl BufRead, usize)> {
    let mut file = File::open(path)?;
    let mut before = BufReader::with_capacity(1 << 16, (&mut file).take(part.start));
    let mut newlines = 0;
    loop {
        let buf = before.fill_buf()?;
        if buf.is_empty() {
            break;
        }
        newlines += buf.iter().filter(|b| **b == b'\n').count();
        let len = buf.len();
        before.consume(len);
    }
    drop(before);
    file.seek(SeekFrom::Start(part.start))?;
    let reader = BufReader::with_capacity(1 << 16, file.take(part.end - part.start));
    Ok((reader, newlines + 1))
}

/// A reader that fails once more than its limit has been read.
struct Bounded<R> {
    inner: R,
    left: u64,
    limit: u64,
}

impl<R> Bounded<R> {
    fn new(inner: R, limit: u64) -> Bounded<R> {
        Bounded {
            inner,
            left: limit,
            limit,
        }
    }
}

impl<R: Read> Read for Bounded<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        match self.left.checked_sub(n as u64) {
            Some(left) => {
                self.left = left;
                Ok(n)
            }
            None => Err(io::Error::new(
                io::ErrorKind::FileTooLarge,
                format!(
                    "more than {} MiB of feed text (blocklist.max_feed_mib); refused",
                    self.limit >> 20
                ),
            )),
        }
    }
}

/// A reader fed by a background thread through a small bounded channel:
/// decompression runs a block ahead of the parser, on another core.
struct Prefetch {
    rx: std::sync::mpsc::Receiver<io::Result<Vec<u8>>>,
    current: Vec<u8>,
    at: usize,
}

impl Prefetch {
    fn spawn(mut inner: impl Read + Send + 'static) -> Prefetch {
        let (tx, rx) = std::sync::mpsc::sync_channel(4);
        std::thread::spawn(move || {
            loop {
                let mut block = vec![0u8; 1 << 18];
                match inner.read(&mut block) {
                    Ok(0) => return,
                    Ok(n) => {
                        block.truncate(n);
                        if tx.send(Ok(block)).is_err() {
                            return;
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => {
                        let _ = tx.send(Err(e));
                        return;
                    }
                }
            }
        });
        Prefetch {
            rx,
            current: Vec::new(),
            at: 0,
        }
    }
}

impl Read for Prefetch {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.at == self.current.len() {
            match self.rx.recv() {
                Ok(Ok(block)) => {
                    self.current = block;
                    self.at = 0;
                }
                Ok(Err(e)) => return Err(e),
                // The sender is gone: the stream has ended.
                Err(_) => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len() - self.at);
        buf[..n].copy_from_slice(&self.current[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use crate::formats::{Bounds, Format, detect, parse_file};

    #[test]
    fn reads_gzip_by_magic_bytes() {
        use std::io::Write;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("list.txt");
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(b"evil.example\n").unwrap();
        std::fs::write(&path, gz.finish().unwrap()).unwrap();
        assert_eq!(detect(&path).unwrap(), Format::Plain);
        let mut names = Vec::new();
        let report = parse_file(&path, Format::Plain, Bounds::default(), &mut |i| {
            names.push(i.name)
        })
        .unwrap();
        assert_eq!(names, ["evil.example"]);
        assert_eq!(report.loaded, 1);
    }
}

#[cfg(test)]
mod bounds {
    use crate::formats::{Bounds, Format, parse_file};
    use std::io::Write;

    fn gzip(path: &std::path::Path, text: &[u8], times: usize) {
        let mut gz = flate2::write::GzEncoder::new(
            std::fs::File::create(path).unwrap(),
            flate2::Compression::best(),
        );
        for _ in 0..times {
            gz.write_all(text).unwrap();
        }
        gz.finish().unwrap();
    }

    #[test]
    fn a_gzip_bomb_stops_at_the_byte_limit() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bomb.txt.gz");
        // 64 MiB of one comment line's worth, a few hundred KiB packed.
        gzip(&path, &[b'#'; 1 << 20], 64);
        let bounds = Bounds {
            max_bytes: 16 << 20,
            max_entries: 1_000_000,
        };
        let error = parse_file(&path, Format::Plain, bounds, &mut |_| {}).unwrap_err();
        let text = error.to_string();
        assert!(text.contains("bomb.txt.gz"), "{text}");
        assert!(text.contains("longer than 64 KiB"), "{text}");
        // Short comment lines: the byte limit stops it.
        let lines = "# a comment line, over and over\n".repeat(1 << 15);
        gzip(&path, lines.as_bytes(), 64);
        let error = parse_file(&path, Format::Plain, bounds, &mut |_| {}).unwrap_err();
        assert!(
            error.to_string().contains("more than 16 MiB of feed text"),
            "{error}"
        );
    }

    #[test]
    fn entries_are_counted_as_they_stream() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("many.txt.gz");
        let lines: String = (0..1000).map(|i| format!("n{i}.example.test\n")).collect();
        gzip(&path, lines.as_bytes(), 100);
        let bounds = Bounds {
            max_bytes: 1 << 30,
            max_entries: 5_000,
        };
        let mut seen = 0;
        let error = parse_file(&path, Format::Plain, bounds, &mut |_| seen += 1).unwrap_err();
        assert!(
            error.to_string().contains("more than 5000 entries"),
            "{error}"
        );
        assert!(seen <= 5_001, "stopped at the limit, not after: {seen}");
    }
}
