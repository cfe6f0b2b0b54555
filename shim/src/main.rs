//! `containerd-shim-wren-v2`: the runc shim (runtime type `io.containerd.wren.v2`), a drop-in
//! for containerd's `containerd-shim-runc-v2` built on the wren shim framework.

mod runc;

fn main() -> std::process::ExitCode {
    wren_shim::run::<runc::RuncRuntime>()
}
