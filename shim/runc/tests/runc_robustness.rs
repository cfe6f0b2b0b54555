//! Requests and clients that containerd would not send, answered as a stricter client
//! expects: bad bundle paths refused, Shutdown answered before the daemon exits, and an
//! exit whose output has nobody left to read it answered without waiting for a drain.

mod runc_support;

use runc_support::{code_of, create_request, ctx, Harness};

#[test]
fn create_refuses_bundles_that_are_not_absolute_directories() {
    wren_tests::require_root!();
    let mut harness = Harness::new();
    let task = harness.task("bundle", &["true"]);
    let shim = harness.start_shim(&task);
    let file = harness.tmp.path().join("not-a-dir");
    std::fs::write(&file, b"").unwrap();
    let bad = [
        String::new(),
        "relative/bundle".to_owned(),
        ".".to_owned(),
        harness.tmp.path().join("missing").display().to_string(),
        file.display().to_string(),
    ];
    for bundle in bad {
        let mut request = create_request(&harness, &task, None);
        request.bundle.clone_from(&bundle);
        let answer = shim.client.create(ctx(), &request);
        assert_eq!(
            code_of(answer),
            ttrpc::Code::INVALID_ARGUMENT,
            "bundle {bundle:?}"
        );
    }
    assert_eq!(harness.runc_containers(), Vec::<String>::new());
    // The refusals reserved nothing: the id is still free for a good bundle.
    shim.client
        .create(ctx(), &create_request(&harness, &task, None))
        .unwrap();
    runc_support::kill_task(&shim, &task.id, "", libc::SIGKILL as u32).unwrap();
    runc_support::wait(&shim, &task.id, "").unwrap();
    runc_support::delete(&shim, &task.id, "").unwrap();
    runc_support::shutdown(&shim);
    harness.assert_clean(&shim);
}

#[test]
fn shutdown_is_answered_before_the_daemon_exits() {
    wren_tests::require_root!();
    let mut harness = Harness::new();
    // The answer used to race the exit, lost about once in a few shims. Each round also
    // waits for the daemon to be reaped, which is slow where PID 1 reaps late: ten rounds.
    for _ in 0..10 {
        let task = harness.task("shutdown", &["true"]);
        let shim = harness.start_shim(&task);
        let answer = shim
            .client
            .shutdown(ctx(), &wren_shim_protocol::task::ShutdownRequest::new());
        assert!(answer.is_ok(), "Shutdown unanswered: {answer:?}");
        harness.wait_gone(shim.pid);
    }
}

/// The Wait drain bound, which a Wait used to sit out when nobody read the output.
const DRAIN_BOUND: std::time::Duration = std::time::Duration::from_secs(5);

#[test]
fn an_exit_is_answered_when_nobody_reads_the_output() {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    wren_tests::require_root!();
    let mut harness = Harness::new();
    let task = harness.task(
        "noreader",
        &["sh", "-c", "while :; do echo wren-output-line; done"],
    );
    let shim = harness.start_shim(&task);
    let dir = harness.tmp.path().join("fifos");
    std::fs::create_dir_all(&dir).unwrap();
    let stdout = dir.join("stdout");
    nix::unistd::mkfifo(&stdout, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    let mut reader = std::fs::File::options()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(&stdout)
        .unwrap();
    let mut request = create_request(&harness, &task, None);
    request.stdout = stdout.display().to_string();
    shim.client.create(ctx(), &request).unwrap();
    runc_support::start(&shim, &task.id, "").unwrap();
    // Output flows while the client reads; then the client goes away for good and the
    // container fills the FIFO and its pipe.
    let mut seen = Vec::new();
    let mut buffer = [0u8; 4096];
    let deadline = std::time::Instant::now() + runc_support::BOUND;
    while seen.len() < 1024 {
        assert!(std::time::Instant::now() < deadline, "no output");
        match reader.read(&mut buffer) {
            Ok(read) => seen.extend_from_slice(&buffer[..read]),
            Err(_) => std::thread::sleep(std::time::Duration::from_millis(10)),
        }
    }
    drop(reader);
    std::thread::sleep(std::time::Duration::from_millis(200));

    let killed = std::time::Instant::now();
    runc_support::kill_task(&shim, &task.id, "", libc::SIGKILL as u32).unwrap();
    let exit = runc_support::wait(&shim, &task.id, "").unwrap();
    let waited = killed.elapsed();
    eprintln!("Kill -> Wait with no reader: {waited:?}");
    assert_eq!(exit.exit_status, 137);
    // Not a timing: the answer must not sit out the drain bound for a reader that is gone.
    assert!(
        waited < DRAIN_BOUND - std::time::Duration::from_secs(1),
        "Wait sat out the drain bound: {waited:?}"
    );
    runc_support::delete(&shim, &task.id, "").unwrap();
    runc_support::shutdown(&shim);
    harness.assert_clean(&shim);
}
