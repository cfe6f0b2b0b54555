//! Controlling a running container: kill, pause and resume (with their events), stats,
//! update, and what the calls answer once it is gone.

mod runc_support;

use protobuf::well_known_types::any::Any;
use protobuf::MessageField;
use runc_support::{
    code_of, create_request, ctx, delete, kill_task, shutdown, start, state, wait, Harness,
};
use wren_shim_protocol::cgroups_v1::Metrics;
use wren_shim_protocol::task::{
    CheckpointTaskRequest, PauseRequest, ResizePtyRequest, ResumeRequest, StatsRequest,
    UpdateTaskRequest,
};
use wren_shim_protocol::types::Status;

#[test]
fn pause_resume_stats_update_kill() {
    wren_tests::require_root!();
    let mut harness = Harness::new();
    let task = harness.task("ctl", &["sleep", "1000"]);
    let shim = harness.start_shim(&task);
    shim.client
        .create(ctx(), &create_request(&harness, &task, None))
        .unwrap();
    start(&shim, &task.id, "").unwrap();

    let mut pause = PauseRequest::new();
    pause.id.clone_from(&task.id);
    shim.client.pause(ctx(), &pause).unwrap();
    assert_eq!(
        state(&shim, &task.id, "").unwrap().status.enum_value(),
        Ok(Status::PAUSED)
    );
    assert_eq!(
        code_of(shim.client.pause(ctx(), &pause)),
        ttrpc::Code::UNKNOWN
    );
    let mut resume = ResumeRequest::new();
    resume.id.clone_from(&task.id);
    shim.client.resume(ctx(), &resume).unwrap();
    assert_eq!(
        state(&shim, &task.id, "").unwrap().status.enum_value(),
        Ok(Status::RUNNING)
    );

    let mut stats = StatsRequest::new();
    stats.id.clone_from(&task.id);
    let any = shim.client.stats(ctx(), &stats).unwrap().stats.unwrap();
    if any.type_url == "io.containerd.cgroups.v1.Metrics" {
        let metrics: Metrics = wren_shim_protocol::any::unpack(&any).unwrap();
        assert!(metrics.memory.usage.usage > 0, "{metrics:?}");
        assert!(metrics.pids.current >= 1, "{metrics:?}");
    } else {
        assert_eq!(any.type_url, "io.containerd.cgroups.v2.Metrics");
    }

    let mut update = UpdateTaskRequest::new();
    update.id.clone_from(&task.id);
    let mut resources = Any::new();
    resources.type_url = "types.containerd.io/opencontainers/runtime-spec/1/LinuxResources".into();
    resources.value = br#"{"pids":{"limit":100}}"#.to_vec();
    update.resources = MessageField::some(resources);
    shim.client.update(ctx(), &update).unwrap();

    // criu cannot run on this kernel: the failure is a plain error, and the task carries on.
    let mut checkpoint = CheckpointTaskRequest::new();
    checkpoint.id.clone_from(&task.id);
    checkpoint.path = harness.tmp.path().join("checkpoint").display().to_string();
    if let Err(error) = shim.client.checkpoint(ctx(), &checkpoint) {
        assert_ne!(code_of::<()>(Err(error)), ttrpc::Code::NOT_FOUND);
    }
    assert_eq!(
        state(&shim, &task.id, "").unwrap().status.enum_value(),
        Ok(Status::RUNNING)
    );

    kill_task(&shim, &task.id, "", 9).unwrap();
    assert_eq!(wait(&shim, &task.id, "").unwrap().exit_status, 137);
    assert_eq!(
        code_of(kill_task(&shim, &task.id, "", 9)),
        ttrpc::Code::NOT_FOUND
    );
    assert_eq!(
        code_of(shim.client.pause(ctx(), &pause)),
        ttrpc::Code::UNKNOWN
    );
    delete(&shim, &task.id, "").unwrap();

    let events = harness.events_until_delete(&task.id);
    let topics: Vec<&str> = events.iter().map(|(topic, _)| topic.as_str()).collect();
    assert_eq!(
        topics,
        [
            "/tasks/create",
            "/tasks/start",
            "/tasks/paused",
            "/tasks/resumed",
            "/tasks/exit",
            "/tasks/delete"
        ]
    );
    shutdown(&shim);
    harness.assert_clean(&shim);
}

#[test]
fn delete_of_a_created_task_publishes_exit_before_delete() {
    wren_tests::require_root!();
    let mut harness = Harness::new();
    let task = harness.task("created", &["sleep", "1000"]);
    let shim = harness.start_shim(&task);
    shim.client
        .create(ctx(), &create_request(&harness, &task, None))
        .unwrap();
    delete(&shim, &task.id, "").unwrap();
    let events = harness.events_until_delete(&task.id);
    let topics: Vec<&str> = events.iter().map(|(topic, _)| topic.as_str()).collect();
    assert_eq!(topics, ["/tasks/create", "/tasks/exit", "/tasks/delete"]);
    shutdown(&shim);
    harness.assert_clean(&shim);
}

#[test]
fn terminal_gets_a_pty_and_resize() {
    wren_tests::require_root!();
    let mut harness = Harness::new();
    let task = harness.task("tty", &["sh", "-c", "test -t 1 && stty size"]);
    let shim = harness.start_shim(&task);
    let mut fifos = harness.fifos("tty", false);
    let mut create = create_request(&harness, &task, Some(&fifos));
    create.terminal = true;
    create.stderr = String::new();
    let mut spec = task.bundle.spec.clone();
    spec["process"]["terminal"] = serde_json::Value::Bool(true);
    std::fs::write(task.bundle.path.join("config.json"), spec.to_string()).unwrap();
    shim.client.create(ctx(), &create).unwrap();

    let mut resize = ResizePtyRequest::new();
    resize.id.clone_from(&task.id);
    resize.width = 100;
    resize.height = 40;
    shim.client.resize_pty(ctx(), &resize).unwrap();
    start(&shim, &task.id, "").unwrap();
    assert_eq!(wait(&shim, &task.id, "").unwrap().exit_status, 0);
    assert_eq!(fifos.stdout(), "40 100\r\n");
    delete(&shim, &task.id, "").unwrap();
    shutdown(&shim);
    harness.assert_clean(&shim);
}

#[test]
fn oom_kill_is_published_before_the_exit() {
    wren_tests::require_root!();
    let mut harness = Harness::new();
    // tail buffers a line that never ends: it grows until the OOM killer stops it.
    let mut task = harness.task("oom", &["tail", "/dev/zero"]);
    task.bundle.spec["linux"]["resources"]["memory"] = serde_json::json!({ "limit": 16_777_216 });
    task.bundle.save();
    let shim = harness.start_shim(&task);
    shim.client
        .create(ctx(), &create_request(&harness, &task, None))
        .unwrap();
    start(&shim, &task.id, "").unwrap();
    assert_eq!(wait(&shim, &task.id, "").unwrap().exit_status, 137);
    delete(&shim, &task.id, "").unwrap();
    let events = harness.events_until_delete(&task.id);
    let topics: Vec<&str> = events.iter().map(|(topic, _)| topic.as_str()).collect();
    assert_eq!(
        topics,
        [
            "/tasks/create",
            "/tasks/start",
            "/tasks/oom",
            "/tasks/exit",
            "/tasks/delete"
        ]
    );
    shutdown(&shim);
    harness.assert_clean(&shim);
}
