//! No input makes the plain parser panic; every byte string is a feed.
#![no_main]

use libfuzzer_sys::fuzz_target;
use portcullis::formats::{Format, parse_reader};

fuzz_target!(|data: &[u8]| {
    let _ = parse_reader(data, Format::Plain, &mut |indicator| {
        // Whatever name a parser emits must already be valid and
        // normalised (an address indicator carries its network instead).
        if indicator.net.is_none() {
            assert_eq!(
                portcullis::domain::normalize(&indicator.name).as_deref(),
                Ok(indicator.name.as_str())
            );
        }
    });
});
