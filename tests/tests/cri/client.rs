//! A blocking CRI v1 client on a unix socket, calling the RPCs kubelet calls.
//!
//! tonic is async; the test is not, so a current-thread tokio runtime lives inside the client
//! and every call is `block_on` a unary request. Calls use tonic's generic client with full
//! method paths (`/runtime.v1.RuntimeService/<Method>`), as generated stubs would.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use hyper_util::rt::TokioIo;
use tonic::codec::ProstCodec;
use tonic::codegen::http::uri::PathAndQuery;
use tonic::transport::{Channel, Endpoint, Uri};

use super::api::{
    ContainerConfig, ContainerIdRequest, ContainerStats, ContainerStatsResponse, ContainerStatus,
    ContainerStatusResponse, CreateContainerRequest, CreateContainerResponse, Empty,
    ExecSyncRequest, ExecSyncResponse, Image, ImageSpec, ImageStatusRequest, ImageStatusResponse,
    PodSandboxConfig, PodSandboxIdRequest, RunPodSandboxRequest, RunPodSandboxResponse,
    StopContainerRequest, VersionRequest, VersionResponse,
};

/// How long one CRI call may take: RunPodSandbox starts a shim and the pause container.
const CALL_TIMEOUT: Duration = Duration::from_secs(60);

const RUNTIME: &str = "/runtime.v1.RuntimeService/";
const IMAGES: &str = "/runtime.v1.ImageService/";

/// A connection to containerd's CRI service.
#[derive(Debug)]
pub struct CriClient {
    runtime: tokio::runtime::Runtime,
    channel: Channel,
}

impl CriClient {
    /// Connects to the CRI service on the unix socket `socket`.
    pub fn connect(socket: &Path) -> Result<Self> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let socket = socket.to_path_buf();
        // The URI only satisfies the HTTP/2 layer; the connector ignores it and dials the socket.
        let endpoint = Endpoint::from_static("http://cri.invalid").timeout(CALL_TIMEOUT);
        let channel = runtime
            .block_on(
                endpoint
                    .connect_with_connector(tower::service_fn(move |_: Uri| dial(socket.clone()))),
            )
            .context("connect to the CRI socket")?;
        Ok(Self { runtime, channel })
    }

    /// Sends `request` to `<service><method>` and waits for the response.
    fn call<Req, Resp>(&self, service: &str, method: &str, request: Req) -> Result<Resp>
    where
        Req: prost::Message + Send + Sync + 'static,
        Resp: prost::Message + Default + Send + Sync + 'static,
    {
        let mut grpc = tonic::client::Grpc::new(self.channel.clone());
        let method = format!("{service}{method}");
        let path = PathAndQuery::try_from(method.as_str()).context("method path")?;
        let response = self.runtime.block_on(async {
            grpc.ready().await.context("CRI channel not ready")?;
            let codec = ProstCodec::<Req, Resp>::default();
            grpc.unary(tonic::Request::new(request), path, codec)
                .await
                .with_context(|| format!("CRI {method}"))
        })?;
        Ok(response.into_inner())
    }

    pub fn version(&self) -> Result<VersionResponse> {
        self.call(
            RUNTIME,
            "Version",
            VersionRequest {
                version: "v1".into(),
            },
        )
    }

    pub fn image_status(&self, image: &str) -> Result<Option<Image>> {
        let request = ImageStatusRequest {
            image: Some(ImageSpec {
                image: image.into(),
            }),
        };
        let response: ImageStatusResponse = self.call(IMAGES, "ImageStatus", request)?;
        Ok(response.image)
    }

    /// Returns the new sandbox's id.
    pub fn run_pod_sandbox(&self, config: &PodSandboxConfig, handler: &str) -> Result<String> {
        let request = RunPodSandboxRequest {
            config: Some(config.clone()),
            runtime_handler: handler.into(),
        };
        let response: RunPodSandboxResponse = self.call(RUNTIME, "RunPodSandbox", request)?;
        Ok(response.pod_sandbox_id)
    }

    pub fn stop_pod_sandbox(&self, sandbox_id: &str) -> Result<()> {
        self.sandbox_call("StopPodSandbox", sandbox_id)
    }

    pub fn remove_pod_sandbox(&self, sandbox_id: &str) -> Result<()> {
        self.sandbox_call("RemovePodSandbox", sandbox_id)
    }

    fn sandbox_call(&self, method: &str, sandbox_id: &str) -> Result<()> {
        let request = PodSandboxIdRequest {
            pod_sandbox_id: sandbox_id.into(),
        };
        let _: Empty = self.call(RUNTIME, method, request)?;
        Ok(())
    }

    /// Returns the new container's id.
    pub fn create_container(
        &self,
        sandbox_id: &str,
        config: ContainerConfig,
        pod: &PodSandboxConfig,
    ) -> Result<String> {
        let request = CreateContainerRequest {
            pod_sandbox_id: sandbox_id.into(),
            config: Some(config),
            sandbox_config: Some(pod.clone()),
        };
        let response: CreateContainerResponse = self.call(RUNTIME, "CreateContainer", request)?;
        Ok(response.container_id)
    }

    pub fn start_container(&self, container_id: &str) -> Result<()> {
        let _: Empty = self.call(RUNTIME, "StartContainer", id_request(container_id))?;
        Ok(())
    }

    /// SIGTERM, then SIGKILL after `timeout_secs`.
    pub fn stop_container(&self, container_id: &str, timeout_secs: i64) -> Result<()> {
        let request = StopContainerRequest {
            container_id: container_id.into(),
            timeout: timeout_secs,
        };
        let _: Empty = self.call(RUNTIME, "StopContainer", request)?;
        Ok(())
    }

    pub fn remove_container(&self, container_id: &str) -> Result<()> {
        let _: Empty = self.call(RUNTIME, "RemoveContainer", id_request(container_id))?;
        Ok(())
    }

    pub fn container_status(&self, container_id: &str) -> Result<ContainerStatus> {
        let response: ContainerStatusResponse =
            self.call(RUNTIME, "ContainerStatus", id_request(container_id))?;
        response.status.context("ContainerStatus without a status")
    }

    pub fn container_stats(&self, container_id: &str) -> Result<ContainerStats> {
        let response: ContainerStatsResponse =
            self.call(RUNTIME, "ContainerStats", id_request(container_id))?;
        response.stats.context("ContainerStats without stats")
    }

    /// Runs `cmd` in the container and returns its exit code and output.
    pub fn exec_sync(
        &self,
        container_id: &str,
        cmd: &[&str],
        timeout_secs: i64,
    ) -> Result<ExecSyncResponse> {
        let request = ExecSyncRequest {
            container_id: container_id.into(),
            cmd: cmd.iter().map(|arg| (*arg).to_owned()).collect(),
            timeout: timeout_secs,
        };
        self.call(RUNTIME, "ExecSync", request)
    }
}

fn id_request(container_id: &str) -> ContainerIdRequest {
    ContainerIdRequest {
        container_id: container_id.into(),
    }
}

async fn dial(socket: PathBuf) -> std::io::Result<TokioIo<tokio::net::UnixStream>> {
    Ok(TokioIo::new(tokio::net::UnixStream::connect(socket).await?))
}
