#![no_main]

use inferencelab_trace::Format;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    inferencelab_fuzz::check_format(Format::Bailian, data);
});
