//! Any bytes through the .pipit reader: an error or a file, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(file) = pipit_format::PipitFile::parse(data) {
        let _ = file.verify_data(data);
    }
});
