//! The frame splitter, fed the input in chunks as reads would deliver it: the first byte
//! picks the chunk size, so that frames are split across reads at every offset.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wren_shim::server::fuzzing;

fuzz_target!(|data: &[u8]| {
    let Some((&size, bytes)) = data.split_first() else {
        return;
    };
    let chunk = usize::from(size).max(1);
    let (bodies, _oversized) = fuzzing::split_frames(bytes.chunks(chunk));
    for body in bodies {
        let _ = fuzzing::decode_request(&body);
    }
});
