//! Updating a running task's resources through containerd.
//!
//! ctr 1.6 has no `task update` (it arrived in 1.7), so the test sends the request that command
//! sends: `containerd.services.tasks.v1.Tasks/Update` on containerd's gRPC socket, with the
//! new `LinuxResources` as JSON in an `Any` (containerd's typeurl encoding for spec types) and
//! the namespace in the `containerd-namespace` metadata. containerd hands it to the shim's
//! Update, as it would for ctr 1.7 or for CRI's UpdateContainerResources.

use std::path::PathBuf;
use std::time::Duration;

use hyper_util::rt::TokioIo;
use tonic::codec::ProstCodec;
use tonic::codegen::http::uri::PathAndQuery;
use tonic::transport::{Endpoint, Uri};
use wren_tests::{Containerd, Runtime};

use crate::cgroup;

const UPDATE: &str = "/containerd.services.tasks.v1.Tasks/Update";
const LINUX_RESOURCES: &str = "types.containerd.io/opencontainers/runtime-spec/1/LinuxResources";
/// How long the Update call (a `runc update` behind it) may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(60);

/// `google.protobuf.Any`.
#[derive(Clone, PartialEq, prost::Message)]
struct Any {
    #[prost(string, tag = "1")]
    type_url: String,
    #[prost(bytes = "vec", tag = "2")]
    value: Vec<u8>,
}

/// `containerd.services.tasks.v1.UpdateTaskRequest` (its `annotations`, tag 3, left empty).
#[derive(Clone, PartialEq, prost::Message)]
struct UpdateTaskRequest {
    #[prost(string, tag = "1")]
    container_id: String,
    #[prost(message, optional, tag = "2")]
    resources: Option<Any>,
}

/// `google.protobuf.Empty`.
#[derive(Clone, PartialEq, prost::Message)]
struct Empty {}

/// A new memory limit reaches the task's memory cgroup.
pub fn memory_limit_update_reaches_the_cgroup(rt: Runtime) {
    const LIMIT: u64 = 32 * 1024 * 1024;
    let cd = Containerd::start(rt);
    let id = cd.new_id("update");
    cd.run_detached(&[], &id, &["sleep", "1000"]);
    let pid = cd.task_pid(&id).expect("a running task has a pid");
    let limit_file = if cgroup::is_unified() {
        "memory.max"
    } else {
        "memory.limit_in_bytes"
    };
    let before = cgroup::read(pid, "memory", limit_file);
    assert_ne!(before, LIMIT.to_string(), "the limit must change");

    let resources = serde_json::json!({ "memory": { "limit": LIMIT } });
    update_task(&cd, &id, &resources);
    assert_eq!(cgroup::read(pid, "memory", limit_file), LIMIT.to_string());
    assert_eq!(cd.task_status(&id).as_deref(), Some("RUNNING"));
    cd.kill_and_remove(&id);
    cd.assert_no_leaks();
}

/// A new CPU quota reaches the task's CPU cgroup (`cpu.max` on v2, the CFS files on v1).
pub fn cpu_update_reaches_the_cgroup(rt: Runtime) {
    const QUOTA: u64 = 50_000;
    const PERIOD: u64 = 100_000;
    let cd = Containerd::start(rt);
    let id = cd.new_id("cpuupdate");
    cd.run_detached(&[], &id, &["sleep", "1000"]);
    let pid = cd.task_pid(&id).expect("a running task has a pid");

    let resources = serde_json::json!({ "cpu": { "quota": QUOTA, "period": PERIOD } });
    update_task(&cd, &id, &resources);
    if cgroup::is_unified() {
        assert_eq!(
            cgroup::read(pid, "cpu", "cpu.max"),
            format!("{QUOTA} {PERIOD}")
        );
    } else {
        assert_eq!(
            cgroup::read(pid, "cpu", "cpu.cfs_quota_us"),
            QUOTA.to_string()
        );
        assert_eq!(
            cgroup::read(pid, "cpu", "cpu.cfs_period_us"),
            PERIOD.to_string()
        );
    }
    assert_eq!(cd.task_status(&id).as_deref(), Some("RUNNING"));
    cd.kill_and_remove(&id);
    cd.assert_no_leaks();
}

/// Sends Tasks/Update for task `id` with `resources` (OCI `LinuxResources` JSON); panics
/// with containerd's answer if it fails.
fn update_task(cd: &Containerd, id: &str, resources: &serde_json::Value) {
    let request = UpdateTaskRequest {
        container_id: id.to_owned(),
        resources: Some(Any {
            type_url: LINUX_RESOURCES.to_owned(),
            value: serde_json::to_vec(resources).expect("serialize resources"),
        }),
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let socket = cd.address().to_path_buf();
    let namespace = cd.namespace().parse().expect("namespace as metadata");
    let answer: anyhow::Result<()> = runtime.block_on(async move {
        // The URI only satisfies the HTTP/2 layer; the connector dials the socket.
        let channel = Endpoint::from_static("http://containerd.invalid")
            .timeout(CALL_TIMEOUT)
            .connect_with_connector(tower::service_fn(move |_: Uri| dial(socket.clone())))
            .await?;
        let mut grpc = tonic::client::Grpc::new(channel);
        grpc.ready().await?;
        let mut request = tonic::Request::new(request);
        request
            .metadata_mut()
            .insert("containerd-namespace", namespace);
        let codec = ProstCodec::<UpdateTaskRequest, Empty>::default();
        grpc.unary(request, PathAndQuery::from_static(UPDATE), codec)
            .await?;
        Ok(())
    });
    if let Err(error) = answer {
        panic!(
            "Tasks/Update {id}: {error:#}\n--- containerd log ---\n{}",
            cd.log()
        );
    }
}

async fn dial(socket: PathBuf) -> std::io::Result<TokioIo<tokio::net::UnixStream>> {
    Ok(TokioIo::new(tokio::net::UnixStream::connect(socket).await?))
}
