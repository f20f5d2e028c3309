//! The image definition loader on arbitrary bytes (written to `images/fuzz.toml` of an empty
//! project, then loaded as `lxcforge build` does): errors are fine, panics are not.
#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use lxcforge::definition::{self, LoadOptions};

fn project() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let d = std::env::temp_dir().join(format!("lxcforge-fuzz-def-{}", std::process::id()));
        std::fs::create_dir_all(d.join("images")).unwrap();
        std::fs::create_dir_all(d.join("provision")).unwrap();
        std::fs::write(d.join("provision/10-a.sh"), "#!/bin/sh\n").unwrap();
        d
    })
}

fuzz_target!(|data: &[u8]| {
    let root = project();
    let file = root.join("images/fuzz.toml");
    std::fs::write(&file, data).unwrap();
    let _ = definition::load(root, "fuzz", LoadOptions::default());
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = definition::parse(
            root,
            &file,
            "fuzz",
            text,
            LoadOptions {
                allow_unpinned: true,
            },
        );
    }
});
