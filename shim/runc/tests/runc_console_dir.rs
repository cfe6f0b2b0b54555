//! Where the shim makes a terminal's console socket: under `$XDG_RUNTIME_DIR` when set, else
//! in the temp dir, as containerd's shim does. In a virtme-ng VM /tmp is a 9p share that
//! cannot hold sockets, and XDG_RUNTIME_DIR points at a tmpfs; here an unusable `TMPDIR`
//! plays the 9p share.

mod runc_support;

use std::path::Path;

use runc_support::{create_request, ctx, delete, shutdown, start, wait, Harness, Task};

fn tty_task(harness: &mut Harness, name: &str) -> Task {
    let task = harness.task(name, &["sh", "-c", "test -t 1 && echo tty"]);
    let mut spec = task.bundle.spec.clone();
    spec["process"]["terminal"] = serde_json::Value::Bool(true);
    std::fs::write(task.bundle.path.join("config.json"), spec.to_string()).unwrap();
    task
}

fn entries(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .collect()
}

#[test]
fn console_socket_goes_under_xdg_runtime_dir_else_the_temp_dir() {
    wren_tests::require_root!();
    let mut harness = Harness::new();
    let runtime_dir = harness.tmp.path().join("xdg");
    std::fs::create_dir(&runtime_dir).unwrap();
    let unusable_tmp = harness.tmp.path().join("no-such-tmp");

    // XDG_RUNTIME_DIR set: the terminal works although the temp dir is unusable.
    harness.shim_env = vec![
        ("XDG_RUNTIME_DIR".into(), Some(runtime_dir.clone())),
        ("TMPDIR".into(), Some(unusable_tmp.clone())),
    ];
    let task = tty_task(&mut harness, "xdgtty");
    let shim = harness.start_shim(&task);
    let mut fifos = harness.fifos("xdgtty", false);
    let mut create = create_request(&harness, &task, Some(&fifos));
    create.terminal = true;
    create.stderr = String::new();
    shim.client.create(ctx(), &create).unwrap();
    start(&shim, &task.id, "").unwrap();
    assert_eq!(wait(&shim, &task.id, "").unwrap().exit_status, 0);
    assert_eq!(fifos.stdout(), "tty\r\n");
    delete(&shim, &task.id, "").unwrap();
    // The socket's directory goes once runc has handed the pty over.
    assert_eq!(entries(&runtime_dir), Vec::<String>::new());
    shutdown(&shim);
    harness.assert_clean(&shim);

    // Unset: the temp dir it is, and an unusable one is a clear error naming it.
    harness.shim_env = vec![
        ("XDG_RUNTIME_DIR".into(), None),
        ("TMPDIR".into(), Some(unusable_tmp.clone())),
    ];
    let task = tty_task(&mut harness, "tmptty");
    let shim = harness.start_shim(&task);
    let fifos = harness.fifos("tmptty", false);
    let mut create = create_request(&harness, &task, Some(&fifos));
    create.terminal = true;
    create.stderr = String::new();
    let ttrpc::Error::RpcStatus(status) = shim.client.create(ctx(), &create).unwrap_err() else {
        panic!("not a status")
    };
    let expected = format!(
        "failed to create a console socket directory in {}",
        unusable_tmp.display()
    );
    assert!(status.message.contains(&expected), "{}", status.message);
    shutdown(&shim);
    harness.assert_clean(&shim);
}
