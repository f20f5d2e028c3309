//! The image definition parser on arbitrary text: errors are fine, panics are not.
#![no_main]

use libfuzzer_sys::fuzz_target;
use lxcforge::definition::{self, LoadOptions};

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let root = std::env::temp_dir();
        let _ = definition::parse(&root, &root.join("images/fuzz.toml"), "fuzz", text, LoadOptions::default());
    }
});
