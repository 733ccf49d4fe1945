//! A stand-in for a FleetLock lock manager (airlock, fleetlock), named as
//! such: the real ones need etcd or Kubernetes, which these machines do not
//! run. It speaks the protocol over HTTP/1.1 on 127.0.0.1 and keeps one
//! semaphore per group, as airlock does.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// A request as the stand-in server saw it.
#[derive(Debug, Clone)]
pub struct SeenRequest {
    /// `POST`, …
    pub method: String,
    /// The request path.
    pub path: String,
    /// Header names in lower case.
    pub headers: HashMap<String, String>,
    /// The body.
    pub body: String,
}

/// How the stand-in answers a request: HTTP status and body.
pub type Handler = dyn Fn(&SeenRequest) -> (u16, String) + Send + Sync;

/// A stand-in for a lock manager: one thread on 127.0.0.1 answering
/// HTTP/1.1 requests, one per connection, with `handler`.
#[derive(Debug)]
pub struct StandInServer {
    url: String,
    seen: Arc<Mutex<Vec<SeenRequest>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl StandInServer {
    /// A server on a free port answering with `handler`.
    pub fn start(handler: impl Fn(&SeenRequest) -> (u16, String) + Send + Sync + 'static) -> StandInServer {
        StandInServer::start_at("127.0.0.1:0", handler)
    }

    /// A server on `address` (`127.0.0.1:<port>`) answering with `handler`.
    pub fn start_at(
        address: &str,
        handler: impl Fn(&SeenRequest) -> (u16, String) + Send + Sync + 'static,
    ) -> StandInServer {
        let listener = TcpListener::bind(address).unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let seen = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let handler: Arc<Handler> = Arc::new(handler);
        let thread = std::thread::spawn({
            let (seen, stop) = (seen.clone(), stop.clone());
            move || {
                for stream in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    if let Ok(stream) = stream {
                        serve_one(stream, &*handler, &seen);
                    }
                }
            }
        });
        StandInServer {
            url,
            seen,
            stop,
            thread: Some(thread),
        }
    }

    /// A FleetLock semaphore with `slots` slots per group, as airlock keeps one.
    pub fn semaphore(slots: usize) -> StandInServer {
        StandInServer::semaphore_at("127.0.0.1:0", slots)
    }

    /// The same on `address`, e.g. to bring a stopped lock manager back.
    pub fn semaphore_at(address: &str, slots: usize) -> StandInServer {
        let holders: Mutex<HashMap<String, Vec<String>>> = Mutex::new(HashMap::new());
        StandInServer::start_at(address, move |req| fleetlock_semantics(req, slots, &holders))
    }

    /// `127.0.0.1:<port>`
    pub fn address(&self) -> &str {
        self.url.trim_start_matches("http://")
    }

    /// `http://127.0.0.1:<port>`
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Every request received so far.
    pub fn seen(&self) -> Vec<SeenRequest> {
        self.seen.lock().unwrap().clone()
    }
}

impl Drop for StandInServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so it sees the flag.
        let _ = TcpStream::connect(self.address());
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
    }
}

fn serve_one(stream: TcpStream, handler: &Handler, seen: &Mutex<Vec<SeenRequest>>) {
    // A client that sends no complete request must not stall the server.
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let Some(request) = read_request(&stream) else { return };
    seen.lock().unwrap().push(request.clone());
    let (status, body) = handler(&request);
    let reply = format!(
        "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = (&stream).write_all(reply.as_bytes());
}

fn read_request(stream: &TcpStream) -> Option<SeenRequest> {
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line).ok()?;
    let mut parts = line.split_whitespace();
    let (method, path) = (parts.next()?.to_string(), parts.next()?.to_string());
    let mut headers = HashMap::new();
    loop {
        let mut header = String::new();
        reader.read_line(&mut header).ok()?;
        let header = header.trim_end();
        if header.is_empty() {
            break;
        }
        let (name, value) = header.split_once(':')?;
        headers.insert(name.trim().to_ascii_lowercase(), value.trim().to_string());
    }
    let length: usize = headers.get("content-length").map_or(Some(0), |v| v.parse().ok())?;
    let mut body = vec![0; length];
    reader.read_exact(&mut body).ok()?;
    Some(SeenRequest {
        method,
        path,
        headers,
        body: String::from_utf8(body).ok()?,
    })
}

/// The protocol's error document.
pub fn error_doc(kind: &str, value: &str) -> String {
    serde_json::json!({ "kind": kind, "value": value }).to_string()
}

/// What a FleetLock server does with a request: check the header and
/// body, then lock or unlock the group's semaphore for the client id.
fn fleetlock_semantics(
    req: &SeenRequest,
    slots: usize,
    holders: &Mutex<HashMap<String, Vec<String>>>,
) -> (u16, String) {
    if req.headers.get("fleet-lock-protocol").map(String::as_str) != Some("true") {
        return (
            400,
            error_doc("missing_protocol_header", "fleet-lock-protocol header must be 'true'"),
        );
    }
    let body: serde_json::Value = match serde_json::from_str(&req.body) {
        Ok(v) => v,
        Err(e) => return (400, error_doc("bad_request", &e.to_string())),
    };
    let (Some(id), Some(group)) = (
        body["client_params"]["id"].as_str(),
        body["client_params"]["group"].as_str(),
    ) else {
        return (
            400,
            error_doc("bad_request", "client_params.id and client_params.group are required"),
        );
    };
    let mut holders = holders.lock().unwrap();
    let held = holders.entry(group.to_string()).or_default();
    match (req.method.as_str(), req.path.as_str()) {
        ("POST", "/v1/pre-reboot") if held.iter().any(|h| h == id) => (200, String::new()),
        ("POST", "/v1/pre-reboot") if held.len() < slots => {
            held.push(id.to_string());
            (200, String::new())
        }
        ("POST", "/v1/pre-reboot") => (
            409,
            error_doc(
                "failed_lock_semaphore_full",
                &format!("semaphore currently full, held by {}", held.join(",")),
            ),
        ),
        ("POST", "/v1/steady-state") => {
            held.retain(|h| h != id);
            (200, String::new())
        }
        _ => (404, error_doc("not_found", "no such endpoint")),
    }
}

