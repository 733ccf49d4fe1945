//! A real container registry (Debian's `docker-registry`) on 127.0.0.1, and a
//! rate-limited TCP relay in front of it so a pull lasts long enough to watch
//! and cancel.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::run;

/// A registry serving from a temporary directory; stopped on drop.
#[derive(Debug)]
pub struct TestRegistry {
    dir: tempfile::TempDir,
    child: Child,
    /// The loopback port it listens on.
    pub port: u16,
    /// `user:password` it demands, if it was started with htpasswd auth.
    creds: Option<String>,
}

impl TestRegistry {
    /// Start a registry on a free loopback port and wait until it answers.
    pub fn start() -> Result<TestRegistry> {
        TestRegistry::start_with_auth(None)
    }

    /// Start a registry that answers 401 to every request without the
    /// credentials `user`/`password` (htpasswd auth with a bcrypt hash).
    pub fn start_with_htpasswd(user: &str, password: &str) -> Result<TestRegistry> {
        TestRegistry::start_with_auth(Some((user, password)))
    }

    fn start_with_auth(auth: Option<(&str, &str)>) -> Result<TestRegistry> {
        let dir = tempfile::Builder::new().prefix("hostd-registry-").tempdir()?;
        let port = free_port()?;
        let config = dir.path().join("config.yml");
        let mut yaml = format!(
            "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n",
            dir.path().join("storage").display()
        );
        if let Some((user, password)) = auth {
            let htpasswd = dir.path().join("htpasswd");
            std::fs::write(&htpasswd, format!("{user}:{}\n", bcrypt(password)?))?;
            yaml.push_str(&format!("auth:\n  htpasswd:\n    realm: hostd-test\n    path: {}\n", htpasswd.display()));
        }
        std::fs::write(&config, yaml)?;
        let log = std::fs::File::create(dir.path().join("registry.log"))?;
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting docker-registry")?;
        let creds = auth.map(|(user, password)| format!("{user}:{password}"));
        let registry = TestRegistry { dir, child, port, creds };
        registry.wait_ready()?;
        Ok(registry)
    }

    fn wait_ready(&self) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(mut s) = TcpStream::connect(("127.0.0.1", self.port)) {
                let _ = s.write_all(b"GET /v2/ HTTP/1.0\r\n\r\n");
                let mut reply = String::new();
                let _ = s.read_to_string(&mut reply);
                let answered = |status: &str| reply.starts_with(&format!("HTTP/1.0 {status}")) || reply.starts_with(&format!("HTTP/1.1 {status}"));
                if answered("200") || (self.creds.is_some() && answered("401")) {
                    return Ok(());
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        bail!("docker-registry did not come up: {}", self.log())
    }

    /// What the registry logged.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
    }

    /// The digests of the blobs served whole (`GET …/blobs/<digest>`
    /// answered 200), in order, from the registry's access log.
    pub fn blob_fetches(&self) -> Vec<String> {
        self.log()
            .lines()
            .filter(|l| l.contains("\"GET /v2/") && l.contains("\" 200 "))
            .filter_map(|l| {
                let path = l.split("\"GET ").nth(1)?.split(' ').next()?;
                let digest = path.split("/blobs/").nth(1)?;
                Some(digest.to_string())
            })
            .collect()
    }

    /// `127.0.0.1:<port>`
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// `kill -9` the registry, as a crash of the server would.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Copy the OCI image `oci_name` (`<dir>:<tag>`) to `repository:tag` here.
    pub fn push(&self, oci_name: &str, name: &str) -> Result<()> {
        run(Command::new("skopeo")
            .args(["copy", "--quiet", "--dest-tls-verify=false", "--preserve-digests"])
            .args(self.creds.as_ref().map(|c| format!("--dest-creds={c}")))
            .arg(format!("oci:{oci_name}"))
            .arg(format!("docker://{}/{name}", self.host())))?;
        Ok(())
    }
}

impl Drop for TestRegistry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A bcrypt hash of `password` for an htpasswd file (`crypt` of Debian 12's
/// python3; the module is gone from Python 3.13).
fn bcrypt(password: &str) -> Result<String> {
    let script = "import crypt, sys; print(crypt.crypt(sys.argv[1], crypt.mksalt(crypt.METHOD_BLOWFISH)))";
    let hash = run(Command::new("/usr/bin/python3").args(["-W", "ignore", "-c", script, password]))?;
    Ok(hash.trim().to_string())
}

/// The layers (digest, compressed size) of the manifest of `image`
/// (`host:port/repo:tag`) as the registry serves it.
pub fn registry_layers(image: &str) -> Result<Vec<(String, u64)>> {
    let raw = run(Command::new("skopeo").args(["inspect", "--raw", "--tls-verify=false"]).arg(format!("docker://{image}")))?;
    let manifest: serde_json::Value = serde_json::from_str(&raw)?;
    let layers = manifest["layers"].as_array().context("a manifest with layers")?;
    Ok(layers
        .iter()
        .map(|l| (l["digest"].as_str().unwrap_or_default().to_string(), l["size"].as_u64().unwrap_or_default()))
        .collect())
}

/// A free loopback port (released again for the caller to bind).
pub fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Forwards 127.0.0.1:`port` to a target port at a bounded rate per
/// connection; stops accepting and closes its connections on drop.
#[derive(Debug)]
pub struct SlowLink {
    /// The port clients connect to.
    pub port: u16,
    rate: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    acceptor: Option<std::thread::JoinHandle<()>>,
}

impl SlowLink {
    /// Relay to `target_port` at `bytes_per_sec` towards the client (at most
    /// 20 MiB/s: the relay sends at most 1 MiB per 50 ms slice).
    pub fn start(target_port: u16, bytes_per_sec: usize) -> Result<SlowLink> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let port = listener.local_addr()?.port();
        let stop = Arc::new(AtomicBool::new(false));
        let rate = Arc::new(AtomicUsize::new(bytes_per_sec));
        let (stop_acceptor, rate_acceptor) = (stop.clone(), rate.clone());
        let acceptor = std::thread::spawn(move || {
            while !stop_acceptor.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((client, _)) => {
                        let (stop, rate) = (stop_acceptor.clone(), rate_acceptor.clone());
                        std::thread::spawn(move || relay(client, target_port, &rate, &stop));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        Ok(SlowLink { port, rate, stop, acceptor: Some(acceptor) })
    }

    /// Change the rate, also of open connections; 0 stalls them.
    pub fn set_rate(&self, bytes_per_sec: usize) {
        self.rate.store(bytes_per_sec, Ordering::Relaxed);
    }

    /// `127.0.0.1:<port>`
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

impl Drop for SlowLink {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.acceptor.take() {
            let _ = t.join();
        }
    }
}

/// Slices per second the relay sends.
const TICKS_PER_SEC: usize = 20;

fn relay(client: TcpStream, target_port: u16, rate: &AtomicUsize, stop: &AtomicBool) {
    let Ok(server) = TcpStream::connect(("127.0.0.1", target_port)) else {
        return;
    };
    let (Ok(mut client_read), Ok(mut server_write)) = (client.try_clone(), server.try_clone()) else {
        return;
    };
    // Requests are small: pass them through unthrottled.
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut client_read, &mut server_write);
        let _ = server_write.shutdown(Shutdown::Write);
    });
    let mut server_read = server;
    let mut client_write = client;
    let mut buf = vec![0u8; 1 << 20];
    let _ = server_read.set_read_timeout(Some(Duration::from_millis(100)));
    while !stop.load(Ordering::Relaxed) {
        let rate = rate.load(Ordering::Relaxed);
        if rate == 0 {
            // Stalled: the connection stays open and nothing more arrives.
            std::thread::sleep(Duration::from_millis(1000 / TICKS_PER_SEC as u64));
            continue;
        }
        let chunk = (rate / TICKS_PER_SEC).clamp(1, buf.len());
        match server_read.read(&mut buf[..chunk]) {
            Ok(0) => break,
            Ok(n) => {
                if client_write.write_all(&buf[..n]).is_err() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(1000 / TICKS_PER_SEC as u64));
            }
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
            Err(_) => break,
        }
    }
    let _ = client_write.shutdown(Shutdown::Both);
    let _ = server_read.shutdown(Shutdown::Both);
}

/// Layer digests (`sha256:…`) of the image tagged `tag` in an OCI directory.
pub fn oci_layer_digests(oci_dir: &Path, tag: &str) -> Result<Vec<String>> {
    let index: serde_json::Value = serde_json::from_slice(&std::fs::read(oci_dir.join("index.json"))?)?;
    let manifest_digest = index["manifests"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|m| m["annotations"]["org.opencontainers.image.ref.name"] == tag)
        .and_then(|m| m["digest"].as_str())
        .with_context(|| format!("no tag {tag} in {}", oci_dir.display()))?
        .to_string();
    let blob = |digest: &str| oci_dir.join("blobs/sha256").join(digest.trim_start_matches("sha256:"));
    let manifest: serde_json::Value = serde_json::from_slice(&std::fs::read(blob(&manifest_digest))?)?;
    Ok(manifest["layers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|l| l["digest"].as_str().map(str::to_string))
        .collect())
}
