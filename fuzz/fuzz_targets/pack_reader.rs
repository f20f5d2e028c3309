//! The packer's reader and normalizer on arbitrary bytes: it may refuse the input, but must
//! never panic, hang or grow without bound.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use lxcforge::pack::{self, PackOptions};

fn spool() -> &'static std::path::Path {
    static DIR: OnceLock<std::path::PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let d = std::env::temp_dir().join(format!("lxcforge-fuzz-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        d
    })
}

fuzz_target!(|data: &[u8]| {
    let mut opts = PackOptions::new(1_700_000_000, spool());
    opts.threads = 1;
    let _ = pack::pack(data, std::io::sink(), &opts, &|_| {});
});
