#![no_main]

//! Format detection on any bytes, then the detected reader, as `read_trace` does.

use std::path::Path;

use inferencelab_trace::detect_format;
use inferencelab_trace::readers::text_of;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let path = Path::new("fuzz");
    let texts = [text_of(path, data).ok(), std::str::from_utf8(data).ok()];
    for text in texts.into_iter().flatten() {
        if let Ok(format) = detect_format(path, text) {
            inferencelab_fuzz::check_text(format, text);
        }
    }
});
