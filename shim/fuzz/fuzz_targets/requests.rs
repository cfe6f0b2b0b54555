//! The request decoder: a frame body as the ttrpc Request, then its payload as the named
//! Task method's request.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wren_shim::server::fuzzing;

fuzz_target!(|data: &[u8]| {
    let _ = fuzzing::decode_request(data);
});
