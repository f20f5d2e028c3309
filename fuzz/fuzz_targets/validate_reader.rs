//! The validator's streaming reader on arbitrary bytes, under each extension it accepts: it
//! must report (or refuse) within its bounds, never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use lxcforge::validate::{self, ValidateOptions};

fuzz_target!(|data: &[u8]| {
    for name in ["fuzz.tar", "fuzz.tar.gz", "fuzz.tar.zst", "fuzz.tar.xz"] {
        let _ = validate::validate_reader(name, data, &ValidateOptions::default());
    }
});
