//! Opening a feed file: gzip or plain, told apart by magic bytes, with
//! decompression on a thread of its own.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::path::Path;

/// Open a feed file, transparently un-gzipping it (by magic bytes, not name).
pub(super) fn open(path: &Path) -> io::Result<Box<dyn BufRead>> {
    let mut file = BufReader::with_capacity(1 << 16, File::open(path)?);
    let magic = file.fill_buf()?;
    if magic.starts_with(&[0x1f, 0x8b]) {
        let gz = flate2::bufread::MultiGzDecoder::new(file);
        Ok(Box::new(BufReader::with_capacity(
            1 << 16,
            Prefetch::spawn(gz),
        )))
    } else {
        Ok(Box::new(file))
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
    use crate::formats::{Format, detect, parse_file};

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
        let report = parse_file(&path, Format::Plain, &mut |i| names.push(i.name)).unwrap();
        assert_eq!(names, ["evil.example"]);
        assert_eq!(report.loaded, 1);
    }
}
