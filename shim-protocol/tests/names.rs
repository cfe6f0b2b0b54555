//! Every generated message and enum carries the exact full name containerd uses: type URLs in
//! `Any` and ttrpc routing depend on it.

use protobuf::{EnumFull, MessageFull};
use wren_shim_protocol::{
    bootstrap, cgroups_v1, cgroups_v2, events, events_ttrpc, runc, runtimeoptions, task, types,
};

/// `(our full name, containerd's full name)` for one message type.
fn message<M: MessageFull>(expected: &'static str) -> (String, &'static str) {
    (M::descriptor().full_name().to_owned(), expected)
}

/// `(our full name, containerd's full name)` for one enum type.
fn enumeration<E: EnumFull>(expected: &'static str) -> (String, &'static str) {
    (E::enum_descriptor().full_name().to_owned(), expected)
}

#[test]
fn task_api_names_match_containerd() {
    let names = [
        message::<task::CreateTaskRequest>("containerd.task.v2.CreateTaskRequest"),
        message::<task::CreateTaskResponse>("containerd.task.v2.CreateTaskResponse"),
        message::<task::DeleteRequest>("containerd.task.v2.DeleteRequest"),
        message::<task::DeleteResponse>("containerd.task.v2.DeleteResponse"),
        message::<task::ExecProcessRequest>("containerd.task.v2.ExecProcessRequest"),
        message::<task::ExecProcessResponse>("containerd.task.v2.ExecProcessResponse"),
        message::<task::ResizePtyRequest>("containerd.task.v2.ResizePtyRequest"),
        message::<task::StateRequest>("containerd.task.v2.StateRequest"),
        message::<task::StateResponse>("containerd.task.v2.StateResponse"),
        message::<task::KillRequest>("containerd.task.v2.KillRequest"),
        message::<task::CloseIORequest>("containerd.task.v2.CloseIORequest"),
        message::<task::PidsRequest>("containerd.task.v2.PidsRequest"),
        message::<task::PidsResponse>("containerd.task.v2.PidsResponse"),
        message::<task::CheckpointTaskRequest>("containerd.task.v2.CheckpointTaskRequest"),
        message::<task::UpdateTaskRequest>("containerd.task.v2.UpdateTaskRequest"),
        message::<task::StartRequest>("containerd.task.v2.StartRequest"),
        message::<task::StartResponse>("containerd.task.v2.StartResponse"),
        message::<task::WaitRequest>("containerd.task.v2.WaitRequest"),
        message::<task::WaitResponse>("containerd.task.v2.WaitResponse"),
        message::<task::StatsRequest>("containerd.task.v2.StatsRequest"),
        message::<task::StatsResponse>("containerd.task.v2.StatsResponse"),
        message::<task::ConnectRequest>("containerd.task.v2.ConnectRequest"),
        message::<task::ConnectResponse>("containerd.task.v2.ConnectResponse"),
        message::<task::ShutdownRequest>("containerd.task.v2.ShutdownRequest"),
        message::<task::PauseRequest>("containerd.task.v2.PauseRequest"),
        message::<task::ResumeRequest>("containerd.task.v2.ResumeRequest"),
    ];
    assert_names(&names);
}

#[test]
fn shared_type_names_match_containerd() {
    let names = [
        message::<types::Mount>("containerd.types.Mount"),
        message::<types::Envelope>("containerd.types.Envelope"),
        message::<types::Platform>("containerd.types.Platform"),
        message::<types::RuntimeRequest>("containerd.types.RuntimeRequest"),
        message::<types::RuntimeInfo>("containerd.types.RuntimeInfo"),
        message::<types::RuntimeVersion>("containerd.types.RuntimeVersion"),
        message::<types::Process>("containerd.v1.types.Process"),
        message::<types::ProcessInfo>("containerd.v1.types.ProcessInfo"),
        enumeration::<types::Status>("containerd.v1.types.Status"),
        message::<events_ttrpc::ForwardRequest>(
            "containerd.services.events.ttrpc.v1.ForwardRequest",
        ),
        message::<runc::Options>("containerd.runc.v1.Options"),
        message::<runc::CheckpointOptions>("containerd.runc.v1.CheckpointOptions"),
        message::<runc::ProcessDetails>("containerd.runc.v1.ProcessDetails"),
        message::<runtimeoptions::Options>("runtimeoptions.v1.Options"),
        message::<bootstrap::BootstrapParams>("containerd.runtime.bootstrap.v1.BootstrapParams"),
        message::<bootstrap::BootstrapResult>("containerd.runtime.bootstrap.v1.BootstrapResult"),
        message::<bootstrap::Extension>("containerd.runtime.bootstrap.v1.Extension"),
        enumeration::<bootstrap::LogLevel>("containerd.runtime.bootstrap.v1.LogLevel"),
        enumeration::<bootstrap::Capability>("containerd.runtime.bootstrap.v1.Capability"),
    ];
    assert_names(&names);
}

#[test]
fn event_names_match_containerd() {
    let names = [
        message::<events::TaskCreate>("containerd.events.TaskCreate"),
        message::<events::TaskStart>("containerd.events.TaskStart"),
        message::<events::TaskDelete>("containerd.events.TaskDelete"),
        message::<events::TaskIO>("containerd.events.TaskIO"),
        message::<events::TaskExit>("containerd.events.TaskExit"),
        message::<events::TaskOOM>("containerd.events.TaskOOM"),
        message::<events::TaskExecAdded>("containerd.events.TaskExecAdded"),
        message::<events::TaskExecStarted>("containerd.events.TaskExecStarted"),
        message::<events::TaskPaused>("containerd.events.TaskPaused"),
        message::<events::TaskResumed>("containerd.events.TaskResumed"),
        message::<events::TaskCheckpointed>("containerd.events.TaskCheckpointed"),
    ];
    assert_names(&names);
}

#[test]
fn cgroup_metric_names_match_containerd() {
    let names = [
        message::<cgroups_v1::Metrics>("io.containerd.cgroups.v1.Metrics"),
        message::<cgroups_v1::HugetlbStat>("io.containerd.cgroups.v1.HugetlbStat"),
        message::<cgroups_v1::PidsStat>("io.containerd.cgroups.v1.PidsStat"),
        message::<cgroups_v1::CPUStat>("io.containerd.cgroups.v1.CPUStat"),
        message::<cgroups_v1::CPUUsage>("io.containerd.cgroups.v1.CPUUsage"),
        message::<cgroups_v1::Throttle>("io.containerd.cgroups.v1.Throttle"),
        message::<cgroups_v1::MemoryStat>("io.containerd.cgroups.v1.MemoryStat"),
        message::<cgroups_v1::MemoryEntry>("io.containerd.cgroups.v1.MemoryEntry"),
        message::<cgroups_v1::MemoryOomControl>("io.containerd.cgroups.v1.MemoryOomControl"),
        message::<cgroups_v1::BlkIOStat>("io.containerd.cgroups.v1.BlkIOStat"),
        message::<cgroups_v1::BlkIOEntry>("io.containerd.cgroups.v1.BlkIOEntry"),
        message::<cgroups_v1::RdmaStat>("io.containerd.cgroups.v1.RdmaStat"),
        message::<cgroups_v1::RdmaEntry>("io.containerd.cgroups.v1.RdmaEntry"),
        message::<cgroups_v1::NetworkStat>("io.containerd.cgroups.v1.NetworkStat"),
        message::<cgroups_v1::CgroupStats>("io.containerd.cgroups.v1.CgroupStats"),
        message::<cgroups_v2::Metrics>("io.containerd.cgroups.v2.Metrics"),
        message::<cgroups_v2::PSIData>("io.containerd.cgroups.v2.PSIData"),
        message::<cgroups_v2::PSIStats>("io.containerd.cgroups.v2.PSIStats"),
        message::<cgroups_v2::PidsStat>("io.containerd.cgroups.v2.PidsStat"),
        message::<cgroups_v2::CPUStat>("io.containerd.cgroups.v2.CPUStat"),
        message::<cgroups_v2::MemoryStat>("io.containerd.cgroups.v2.MemoryStat"),
        message::<cgroups_v2::MemoryEvents>("io.containerd.cgroups.v2.MemoryEvents"),
        message::<cgroups_v2::RdmaStat>("io.containerd.cgroups.v2.RdmaStat"),
        message::<cgroups_v2::RdmaEntry>("io.containerd.cgroups.v2.RdmaEntry"),
        message::<cgroups_v2::IOStat>("io.containerd.cgroups.v2.IOStat"),
        message::<cgroups_v2::IOEntry>("io.containerd.cgroups.v2.IOEntry"),
        message::<cgroups_v2::HugeTlbStat>("io.containerd.cgroups.v2.HugeTlbStat"),
        message::<cgroups_v2::NetworkStat>("io.containerd.cgroups.v2.NetworkStat"),
    ];
    assert_names(&names);
}

/// The field counts of the largest messages, so a dropped field cannot go unnoticed.
#[test]
fn metrics_keep_every_field() {
    assert_eq!(cgroups_v1::MemoryStat::descriptor().fields().count(), 36);
    assert_eq!(cgroups_v1::Metrics::descriptor().fields().count(), 9);
    assert_eq!(cgroups_v2::MemoryStat::descriptor().fields().count(), 42);
    assert_eq!(cgroups_v2::CPUStat::descriptor().fields().count(), 9);
    assert_eq!(cgroups_v2::Metrics::descriptor().fields().count(), 8);
    assert_eq!(task::StateResponse::descriptor().fields().count(), 11);
    assert_eq!(runc::Options::descriptor().fields().count(), 13);
    assert_eq!(runtimeoptions::Options::descriptor().fields().count(), 3);
}

fn assert_names(names: &[(String, &'static str)]) {
    for (ours, containerd) in names {
        assert_eq!(ours, containerd);
    }
}
