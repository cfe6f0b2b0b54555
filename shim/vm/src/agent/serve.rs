//! The agent's server: ttrpc framing on the virtio-serial port, one thread per request.
//!
//! A frame is a 10-byte header (body length and stream id, u32 big-endian; a type byte,
//! 1 request / 2 response; a flags byte) and a protobuf body (`ttrpc.Request` in,
//! `ttrpc.Response` out). Requests run concurrently: WaitProcess and ReadOutput block until
//! something happens in the guest, and must not hold up the rest.

use std::fs::File;
use std::io::{Read, Write};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use protobuf::{Message, MessageField};
use ttrpc::{Code, Request, Response, Status};
use wren_shim_protocol::vm_agent::{
    AddExecRequest, ContainerRef, CreateContainerRequest, Empty, ListPidsResponse, ProcessRef,
    ReadOutputRequest, ReadOutputResponse, SignalProcessRequest, StartProcessResponse, Stream,
    WaitProcessResponse, WriteStdinRequest,
};

use crate::process::{Agent, Failure};

const SERVICE: &str = "wren.vm.agent.v1.Agent";
const HEADER: usize = 10;
const TYPE_REQUEST: u8 = 1;
const TYPE_RESPONSE: u8 = 2;
/// ttrpc's own body limit.
const MAX_BODY: usize = 4 << 20;

/// Serves until the host asks for Shutdown.
pub fn serve(port: &File) {
    let agent = Arc::new(Agent::default());
    agent.start_reaper();
    let writer = match port.try_clone() {
        Ok(writer) => Arc::new(Mutex::new(writer)),
        Err(error) => {
            eprintln!("wrenvm-agent: clone port: {error}");
            return;
        }
    };
    let mut reader = port;
    eprintln!("wrenvm-agent: serving");
    loop {
        let mut header = [0u8; HEADER];
        if read_full(&mut reader, &mut header).is_err() {
            // The host end is not connected (yet, or any more): wait for it.
            std::thread::sleep(Duration::from_millis(50));
            continue;
        }
        let length = u32::from_be_bytes([header[0], header[1], header[2], header[3]]) as usize;
        let stream = u32::from_be_bytes([header[4], header[5], header[6], header[7]]);
        if length > MAX_BODY {
            // Unrecoverable framing: nothing to resynchronise on.
            eprintln!("wrenvm-agent: frame of {length} bytes: giving up");
            return;
        }
        let mut body = vec![0; length];
        if read_full(&mut reader, &mut body).is_err() {
            continue;
        }
        if header[8] != TYPE_REQUEST {
            continue;
        }
        let (agent, writer) = (Arc::clone(&agent), Arc::clone(&writer));
        std::thread::spawn(move || {
            let (response, shutdown) = answer(&agent, &body);
            send(&writer, stream, &response);
            if shutdown {
                crate::boot::power_off();
            }
        });
    }
}

/// Reads exactly `buffer.len()` bytes; a zero read (host disconnected) is an error.
fn read_full(reader: &mut &File, buffer: &mut [u8]) -> std::io::Result<()> {
    let mut done = 0;
    while done < buffer.len() {
        match reader.read(&mut buffer[done..]) {
            Ok(0) => return Err(std::io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => done += n,
            Err(error) if error.kind() == std::io::ErrorKind::Interrupted => {}
            Err(error) => return Err(error),
        }
    }
    Ok(())
}

fn send(writer: &Mutex<File>, stream: u32, response: &Response) {
    let Ok(body) = response.write_to_bytes() else {
        return;
    };
    let Ok(length) = u32::try_from(body.len()) else {
        return;
    };
    let mut frame = Vec::with_capacity(HEADER + body.len());
    frame.extend_from_slice(&length.to_be_bytes());
    frame.extend_from_slice(&stream.to_be_bytes());
    frame.extend_from_slice(&[TYPE_RESPONSE, 0]);
    frame.extend_from_slice(&body);
    let mut writer = writer.lock().unwrap_or_else(PoisonError::into_inner);
    if let Err(error) = writer.write_all(&frame) {
        eprintln!("wrenvm-agent: write response: {error}");
    }
}

/// Decodes, dispatches and encodes one request; the flag asks for power-off once answered.
fn answer(agent: &Agent, body: &[u8]) -> (Response, bool) {
    let mut response = Response::new();
    let result = match Request::parse_from_bytes(body) {
        Ok(request) if request.service == SERVICE => {
            dispatch(agent, &request.method, &request.payload)
        }
        Ok(request) => Err(Failure::new(
            Code::UNIMPLEMENTED,
            format!("service {}", request.service),
        )),
        Err(error) => Err(Failure::new(Code::INVALID_ARGUMENT, error.to_string())),
    };
    let mut shutdown = false;
    match result {
        Ok(payload) => {
            response.payload = payload;
            shutdown = Request::parse_from_bytes(body).is_ok_and(|r| r.method == "Shutdown");
        }
        Err(failure) => {
            let mut status = Status::new();
            status.code = failure.code.into();
            status.message = failure.message;
            response.status = MessageField::some(status);
        }
    }
    (response, shutdown)
}

fn decode<M: Message>(payload: &[u8]) -> Result<M, Failure> {
    M::parse_from_bytes(payload)
        .map_err(|error| Failure::new(Code::INVALID_ARGUMENT, error.to_string()))
}

fn encode(message: &impl Message) -> Result<Vec<u8>, Failure> {
    message
        .write_to_bytes()
        .map_err(|error| Failure::new(Code::INTERNAL, error.to_string()))
}

fn empty() -> Result<Vec<u8>, Failure> {
    encode(&Empty::new())
}

fn dispatch(agent: &Agent, method: &str, payload: &[u8]) -> Result<Vec<u8>, Failure> {
    match method {
        "Ping" | "Shutdown" => empty(),
        "CreateContainer" => {
            let request: CreateContainerRequest = decode(payload)?;
            let spec = request.process.into_option().unwrap_or_default();
            agent.create_container(&request.container_id, &request.hostname, spec)?;
            empty()
        }
        "AddExec" => {
            let request: AddExecRequest = decode(payload)?;
            let spec = request.process.into_option().unwrap_or_default();
            agent.add_exec(&request.container_id, &request.exec_id, spec)?;
            empty()
        }
        "StartProcess" => {
            let request: ProcessRef = decode(payload)?;
            let mut response = StartProcessResponse::new();
            response.pid = agent.start(&request.container_id, &request.exec_id)?;
            encode(&response)
        }
        "WaitProcess" => {
            let request: ProcessRef = decode(payload)?;
            let mut response = WaitProcessResponse::new();
            response.exit_status = agent.wait(&request.container_id, &request.exec_id)?;
            encode(&response)
        }
        "SignalProcess" => {
            let request: SignalProcessRequest = decode(payload)?;
            agent.signal(
                &request.container_id,
                &request.exec_id,
                request.signal,
                request.all,
            )?;
            empty()
        }
        "ReadOutput" => {
            let request: ReadOutputRequest = decode(payload)?;
            let stderr = request.stream.enum_value_or_default() == Stream::STDERR;
            let mut response = ReadOutputResponse::new();
            response.data = agent.read_output(&request.container_id, &request.exec_id, stderr)?;
            encode(&response)
        }
        "WriteStdin" => {
            let request: WriteStdinRequest = decode(payload)?;
            agent.write_stdin(&request.container_id, &request.exec_id, &request.data)?;
            empty()
        }
        "CloseStdin" => {
            let request: ProcessRef = decode(payload)?;
            agent.close_stdin(&request.container_id, &request.exec_id)?;
            empty()
        }
        "ListPids" => {
            let request: ContainerRef = decode(payload)?;
            let mut response = ListPidsResponse::new();
            response.pids = agent.pids(&request.container_id)?;
            encode(&response)
        }
        "Stats" => {
            let request: ContainerRef = decode(payload)?;
            encode(&agent.stats(&request.container_id)?)
        }
        "RemoveProcess" => {
            let request: ProcessRef = decode(payload)?;
            agent.remove(&request.container_id, &request.exec_id)?;
            empty()
        }
        other => Err(Failure::new(Code::UNIMPLEMENTED, format!("method {other}"))),
    }
}
