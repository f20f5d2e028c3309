//! The validator's token scan on arbitrary file content: the bytes become `etc/app.conf` and
//! `root/.profile` of a small rootfs, read in chunks of a size taken from the first byte (so
//! lines and tokens straddle reads). It may report anything, but must never panic.
#![no_main]

use std::io::Read;

use libfuzzer_sys::fuzz_target;
use lxcforge::validate::{self, ValidateOptions};

/// Hands out at most `chunk` bytes per read.
struct Chunked<'a>(&'a [u8], usize);

impl Read for Chunked<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = buf.len().min(self.1).min(self.0.len());
        buf[..n].copy_from_slice(&self.0[..n]);
        self.0 = &self.0[n..];
        Ok(n)
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&first, content)) = data.split_first() else {
        return;
    };
    let mut b = tar::Builder::new(Vec::new());
    for (path, body) in [
        ("./etc/os-release", &b"ID=debian\nVERSION_ID=12\n"[..]),
        ("./etc/app.conf", content),
        ("./root/.profile", content),
    ] {
        let mut h = tar::Header::new_gnu();
        h.set_size(body.len() as u64);
        h.set_mode(0o644);
        h.set_entry_type(tar::EntryType::Regular);
        h.set_cksum();
        b.append_data(&mut h, path, body).unwrap();
    }
    let tar = b.into_inner().unwrap();
    let chunk = 1 + (first as usize) * 67;
    let _ = validate::validate_reader(
        "fuzz.tar",
        Chunked(&tar, chunk),
        &ValidateOptions::default(),
    );
});
