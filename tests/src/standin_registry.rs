//! A stand-in for a container registry, named as such: it answers the
//! registry API's ping (`GET /v2/` → 200) and then fails every manifest
//! request in one chosen way, which a real registry cannot be told to do.
//! It listens on 127.0.0.1 and is stopped on drop.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::Result;

/// How the stand-in answers a manifest request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ManifestFailure {
    /// HTTP 500 with an empty body.
    ServerError,
    /// HTTP 403 with the OCI error code `DENIED`.
    Denied,
    /// HTTP 429 with the OCI error code `TOOMANYREQUESTS`.
    TooManyRequests,
    /// The connection is reset (RST) instead of an answer.
    Reset,
}

/// A server on a free loopback port whose accept loop hands each connection
/// to `serve`; stopped (and its thread joined) on drop.
#[derive(Debug)]
struct LoopbackServer {
    port: u16,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl LoopbackServer {
    fn start(mut serve: impl FnMut(TcpStream) + Send + 'static) -> Result<LoopbackServer> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let port = listener.local_addr()?.port();
        let stop = Arc::new(AtomicBool::new(false));
        let thread = std::thread::spawn({
            let stop = stop.clone();
            move || {
                for stream in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    if let Ok(stream) = stream {
                        serve(stream);
                    }
                }
            }
        });
        Ok(LoopbackServer { port, stop, thread: Some(thread) })
    }
}

impl Drop for LoopbackServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so it sees the flag.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A stand-in registry on 127.0.0.1 failing manifest requests with `failure`.
#[derive(Debug)]
pub struct StandInRegistry {
    /// The loopback port it listens on.
    pub port: u16,
    _server: LoopbackServer,
}

impl StandInRegistry {
    /// Listen on a free loopback port.
    pub fn start(failure: ManifestFailure) -> Result<StandInRegistry> {
        let server = LoopbackServer::start(move |stream| {
            let _ = answer(stream, failure);
        })?;
        Ok(StandInRegistry { port: server.port, _server: server })
    }

    /// `127.0.0.1:<port>`
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

fn answer(stream: TcpStream, failure: ManifestFailure) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header)? == 0 || header == "\r\n" {
            break;
        }
    }
    let path = request_line.split(' ').nth(1).unwrap_or("");
    if path == "/v2/" {
        return reply(stream, "200 OK", "");
    }
    match failure {
        ManifestFailure::ServerError => reply(stream, "500 Internal Server Error", ""),
        ManifestFailure::Denied => reply(stream, "403 Forbidden", &oci_error("DENIED", "requested access to the resource is denied")),
        ManifestFailure::TooManyRequests => {
            reply(stream, "429 Too Many Requests", &oci_error("TOOMANYREQUESTS", "pull rate limit exceeded"))
        }
        ManifestFailure::Reset => {
            // Linger 0: close() sends RST instead of FIN.
            let linger = nix::libc::linger { l_onoff: 1, l_linger: 0 };
            nix::sys::socket::setsockopt(&stream.as_fd(), nix::sys::socket::sockopt::Linger, &linger)?;
            drop(stream);
            Ok(())
        }
    }
}

/// An error body as the OCI distribution spec defines it.
fn oci_error(code: &str, message: &str) -> String {
    serde_json::json!({ "errors": [{ "code": code, "message": message }] }).to_string()
}

fn reply(mut stream: TcpStream, status: &str, body: &str) -> std::io::Result<()> {
    let content_type = if body.is_empty() { "" } else { "Content-Type: application/json\r\n" };
    write!(
        stream,
        "HTTP/1.1 {status}\r\n{content_type}Docker-Distribution-API-Version: registry/2.0\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    stream.flush()
}

/// A stand-in for a registry that accepts connections and never answers
/// (a server hung after the TCP handshake), named as such: no real registry
/// can be made to do this. It listens on 127.0.0.1; the connections it
/// holds are closed and its thread stopped on drop.
#[derive(Debug)]
pub struct SilentRegistry {
    /// The loopback port it listens on.
    pub port: u16,
    _server: LoopbackServer,
}

impl SilentRegistry {
    /// Listen on a free loopback port.
    pub fn start() -> Result<SilentRegistry> {
        let mut held = Vec::new();
        let server = LoopbackServer::start(move |stream| held.push(stream))?;
        Ok(SilentRegistry { port: server.port, _server: server })
    }

    /// `127.0.0.1:<port>`
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

/// A stand-in for a registry whose tag moves between two requests, named
/// as such: a relay on 127.0.0.1 in front of a real registry that answers
/// the first `moves_after` requests for `repository:tag`'s manifest with the
/// manifest tagged `first` there and every later one with the manifest
/// tagged `then`. Everything else (blobs, manifests by digest) passes through.
/// A registry, or anyone who controls what it serves, can do this; no real
/// registry can be told to. One request per connection (`Connection:
/// close`); stopped on drop.
#[derive(Debug)]
pub struct MovingTagRegistry {
    /// The loopback port it listens on.
    pub port: u16,
    /// How many requests for the moving tag's manifest it has answered.
    pub tag_requests: Arc<std::sync::atomic::AtomicUsize>,
    _server: LoopbackServer,
}

impl MovingTagRegistry {
    /// Relay to the registry on `upstream_port`, moving `repository:tag`
    /// from `first` to `then` after `moves_after` manifest requests.
    pub fn start(upstream_port: u16, repository: &str, tag: &str, first: &str, then: &str, moves_after: usize) -> Result<MovingTagRegistry> {
        let moving = format!("/v2/{repository}/manifests/{tag}");
        let (first, then) = (format!("/v2/{repository}/manifests/{first}"), format!("/v2/{repository}/manifests/{then}"));
        let tag_requests = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = tag_requests.clone();
        let server = LoopbackServer::start(move |client| {
            let (moving, first, then, counter) = (moving.clone(), first.clone(), then.clone(), counter.clone());
            std::thread::spawn(move || {
                let rewrite = |path: &str| {
                    if path != moving {
                        return path.to_string();
                    }
                    let seen = counter.fetch_add(1, Ordering::SeqCst);
                    if seen < moves_after { first.clone() } else { then.clone() }
                };
                let _ = relay(client, upstream_port, rewrite);
            });
        })?;
        Ok(MovingTagRegistry { port: server.port, tag_requests, _server: server })
    }

    /// `127.0.0.1:<port>`
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

/// Pass one request from `client` to the registry on `upstream_port`, its
/// path rewritten by `rewrite`, and the whole answer back.
fn relay(client: TcpStream, upstream_port: u16, rewrite: impl FnOnce(&str) -> String) -> std::io::Result<()> {
    client.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut reader = BufReader::new(client.try_clone()?);
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    let mut parts = request_line.split_whitespace();
    let (method, path) = (parts.next().unwrap_or("GET").to_string(), parts.next().unwrap_or("/").to_string());
    let mut headers = String::new();
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header)? == 0 || header == "\r\n" {
            break;
        }
        if !header.to_ascii_lowercase().starts_with("connection:") {
            headers.push_str(&header);
        }
    }
    let mut upstream = TcpStream::connect(("127.0.0.1", upstream_port))?;
    write!(upstream, "{method} {} HTTP/1.0\r\n{headers}Connection: close\r\n\r\n", rewrite(&path))?;
    upstream.flush()?;
    let mut client = client;
    std::io::copy(&mut upstream, &mut client)?;
    client.flush()
}
