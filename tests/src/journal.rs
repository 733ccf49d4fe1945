//! What hostd sends to the journal, caught at the socket.
//!
//! These test machines run no systemd-journald, so [`JournalSocket`] stands
//! in for it (a stand-in, named as such): a datagram socket bound where the
//! machine's hostd looks for journald (`/run/systemd/journal/socket` inside
//! the machine's mount namespace), decoding journald's native protocol. The
//! booted-system tests read the real journal instead.

use std::collections::BTreeMap;
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// The `MESSAGE_ID`s docs/dbus-api.md documents, written out again here so
/// a changed id fails the tests.
pub mod message_id {
    /// An update was queued for the next boot.
    pub const STAGED: &str = "f9d50aaef31b4f90a550b665af736046";
    /// Another image was queued and is tracked from now on.
    pub const SWITCHED: &str = "31ae56d88a0743f5834f350e328db55b";
    /// The boot order changed to the rollback deployment (or back).
    pub const ROLLED_BACK: &str = "c17cdb11fce8408f86e7049afe2004f9";
    /// Unused images, layers and objects were removed.
    pub const CLEANED_UP: &str = "132306e3ef0f4bcf90db4b19e9c23866";
    /// A reboot was requested from logind.
    pub const REBOOT_REQUESTED: &str = "7750f9b2947848bdb17bf0f817cb781c";
    /// A requested reboot was held off by an inhibitor.
    pub const REBOOT_BLOCKED: &str = "cc99a0dfb0c0420f986aa32459afc800";
    /// A writable overlay was mounted on `/usr`.
    pub const USR_OVERLAY: &str = "19e66f27e05443f3b0d78aadc0652db8";
    /// A pending update was discarded.
    pub const DISCARDED: &str = "cfe5c337e1f64166b1c8e704016af609";
    /// A new deployment passed its boot health checks.
    pub const HEALTH_PASSED: &str = "8d3c2f0e5b7a4e61a2f4c9d7b1e03a55";
    /// A new deployment failed its boot health checks.
    pub const HEALTH_FAILED: &str = "e4b19a7c60d24f3e9c58a1f2d7360b9e";
}

/// One journal entry: field name → value.
pub type Entry = BTreeMap<String, String>;

/// The socket, drained all the time by a thread as journald would: a
/// sender blocks once a datagram socket's queue is full.
#[derive(Debug)]
pub struct JournalSocket {
    dir: tempfile::TempDir,
    received: Arc<Mutex<Vec<Entry>>>,
    stop: Arc<AtomicBool>,
    receiver: Option<std::thread::JoinHandle<()>>,
}

impl JournalSocket {
    /// A socket named `socket` in a fresh directory; the machine mounts that
    /// directory at `/run/systemd/journal`.
    pub fn bind() -> Result<JournalSocket> {
        let dir = tempfile::Builder::new().prefix("hostd-journal-").tempdir()?;
        let socket = UnixDatagram::bind(dir.path().join("socket")).context("binding the journal socket")?;
        socket.set_read_timeout(Some(Duration::from_millis(100)))?;
        let received = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let receiver = std::thread::spawn({
            let (received, stop) = (received.clone(), stop.clone());
            move || receive(&socket, &received, &stop)
        });
        Ok(JournalSocket { dir, received, stop, receiver: Some(receiver) })
    }

    /// The directory holding the socket.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Every entry received so far, and later, readable without the socket.
    pub fn received(&self) -> Received {
        Received(self.received.clone())
    }

    /// Every entry with `MESSAGE_ID=message_id` received so far.
    pub fn entries(&self, message_id: &str) -> Vec<Entry> {
        self.received
            .lock()
            .expect("journal entries poisoned")
            .iter()
            .filter(|e| e.get("MESSAGE_ID").map(String::as_str) == Some(message_id))
            .cloned()
            .collect()
    }

    /// The only entry with `message_id`, waiting a little for it.
    pub fn single(&self, message_id: &str) -> Result<Entry> {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let found = self.entries(message_id);
            match found.len() {
                1 => return Ok(found.into_iter().next().expect("one entry")),
                0 if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
                n => bail!(
                    "{n} entries with MESSAGE_ID={message_id}; all received: {:#?}",
                    self.received.lock().expect("journal entries poisoned")
                ),
            }
        }
    }
}

/// The entries a [`JournalSocket`] received, shared with whoever checks them.
#[derive(Debug, Clone, Default)]
pub struct Received(Arc<Mutex<Vec<Entry>>>);

impl Received {
    /// The `MESSAGE`s of every entry received so far.
    pub fn messages(&self) -> Vec<String> {
        let entries = self.0.lock().expect("journal entries poisoned");
        entries.iter().filter_map(|e| e.get("MESSAGE").cloned()).collect()
    }
}

impl Drop for JournalSocket {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(receiver) = self.receiver.take() {
            let _ = receiver.join();
        }
    }
}

fn receive(socket: &UnixDatagram, received: &Mutex<Vec<Entry>>, stop: &AtomicBool) {
    let mut buf = vec![0u8; 256 * 1024];
    while !stop.load(Ordering::Relaxed) {
        match socket.recv(&mut buf) {
            Ok(n) => match decode(&buf[..n]) {
                Ok(entry) => received.lock().expect("journal entries poisoned").push(entry),
                Err(e) => eprintln!("undecodable journal datagram: {e:#}"),
            },
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
            Err(e) => return eprintln!("journal socket: {e}"),
        }
    }
}

/// journald's native protocol: `NAME=value\n`, or for values that may hold
/// newlines `NAME\n` + little-endian u64 length + value + `\n`.
fn decode(mut datagram: &[u8]) -> Result<Entry> {
    let mut entry = Entry::new();
    while !datagram.is_empty() {
        let eol = datagram.iter().position(|&b| b == b'\n').context("field without newline")?;
        let line = &datagram[..eol];
        datagram = &datagram[eol + 1..];
        if let Some(eq) = line.iter().position(|&b| b == b'=') {
            let name = String::from_utf8_lossy(&line[..eq]).into_owned();
            entry.insert(name, String::from_utf8_lossy(&line[eq + 1..]).into_owned());
            continue;
        }
        let (len, rest) = datagram.split_at_checked(8).context("length missing")?;
        let len = u64::from_le_bytes(len.try_into().expect("8 bytes")) as usize;
        let value = rest.get(..len).context("value shorter than its length")?;
        entry.insert(String::from_utf8_lossy(line).into_owned(), String::from_utf8_lossy(value).into_owned());
        datagram = rest.get(len + 1..).context("value not followed by a newline")?;
    }
    Ok(entry)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_field_encodings_decode() {
        let mut d = b"PRIORITY=6\nMESSAGE\n".to_vec();
        d.extend_from_slice(&5u64.to_le_bytes());
        d.extend_from_slice(b"a\nb c\nMESSAGE_ID=0123\n");
        let e = decode(&d).unwrap();
        assert_eq!(e["PRIORITY"], "6");
        assert_eq!(e["MESSAGE"], "a\nb c");
        assert_eq!(e["MESSAGE_ID"], "0123");
        assert!(decode(b"BROKEN").is_err());
    }
}
