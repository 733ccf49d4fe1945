//! FleetLock client: before an unattended reboot, ask a cluster lock manager
//! for one of its reboot slots; once the host runs the new deployment, give
//! the slot back. This is the protocol zincati speaks and airlock or
//! fleetlock serve:
//!
//! - `POST <url>/v1/pre-reboot` takes a slot, `POST <url>/v1/steady-state`
//!   releases it; both are idempotent for the same client.
//! - Header `fleet-lock-protocol: true`, body
//!   `{"client_params":{"id":"<node id>","group":"<group>"}}`.
//! - 200 is success; anything else failed, normally with a JSON body
//!   `{"kind": "...", "value": "..."}`.
//!
//! The node id is not the machine id (which must not leave the host) but
//! the app-specific id systemd's `sd_id128_get_machine_app_specific()`
//! derives from it with hostd's [`HOSTD_APP_ID`]: stable per host, useless
//! for telling the machine id, different from every other application's.
//!
//! Requests are blocking (the integrator runs them with `spawn_blocking`)
//! and bounded by one timeout for the whole exchange.

use std::fmt;
use std::path::Path;
use std::time::Duration;

use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

/// hostd's application id for deriving the node id from the machine id
/// (generated once with `systemd-id128 new`; never change it, or every
/// host gets a new identity at the lock manager). As a UUID:
/// `ab34745c-66e9-4f96-8d33-1475ad97495c`.
pub const HOSTD_APP_ID: [u8; 16] = [
    0xab, 0x34, 0x74, 0x5c, 0x66, 0xe9, 0x4f, 0x96, 0x8d, 0x33, 0x14, 0x75, 0xad, 0x97, 0x49, 0x5c,
];

/// Where the machine id lives.
pub const MACHINE_ID_PATH: &str = "/etc/machine-id";

/// Time limit for one request, connection to last byte.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// The group used when none is configured (zincati's too).
pub const DEFAULT_GROUP: &str = "default";

/// The header that tells the server the request was meant for it (and was
/// not, say, redirected to it).
const PROTOCOL_HEADER: &str = "fleet-lock-protocol";

/// More than any error document needs; a larger body is cut.
const ERROR_BODY_LIMIT: u64 = 64 * 1024;
/// How much of a non-protocol body goes into an error message.
const BODY_EXCERPT_CHARS: usize = 200;

/// A bad `[updates.fleet_lock]` setting.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SettingError {
    /// Not `http://` or `https://`.
    #[error("{0:?} is not an http:// or https:// URL")]
    UrlScheme(String),
    /// Nothing between `//` and the path.
    #[error("{0:?} has no host")]
    UrlNoHost(String),
    /// The endpoints are appended to the path: a query or fragment cannot stay.
    #[error("{0:?} must not have a query or fragment")]
    UrlQueryOrFragment(String),
    /// A user name or password before the host (`user:token@`). The URL is
    /// shown to every local user (`RebootPendingReason`, the log), so it
    /// must not hold a secret; the URL itself is left out of this message.
    #[error(
        "must not contain credentials (\"user:password@\" before the host): the URL is shown to every \
         local user in RebootPendingReason and hostd's log; allow this host at the lock manager by its \
         network address or a TLS client certificate on a proxy instead"
    )]
    UrlCredentials,
    /// Whitespace, control characters or what the URI grammar rejects.
    #[error("{url:?} is not a valid URL: {reason}")]
    UrlSyntax {
        /// As configured.
        url: String,
        /// What the parser said.
        reason: String,
    },
    /// An empty group.
    #[error("must not be empty")]
    GroupEmpty,
    /// The protocol's group grammar is `[A-Za-z0-9.-]+`.
    #[error("{0:?} may contain only letters, digits, '.' and '-'")]
    GroupCharacters(String),
}

/// The lock manager's base URL; the endpoints go below its path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FleetLockUrl(String);

impl FleetLockUrl {
    /// `http://` or `https://`, a host, an optional path; no query or
    /// fragment, no credentials. A trailing `/` is dropped.
    pub fn parse(text: &str) -> Result<FleetLockUrl, SettingError> {
        // First, so that no other error repeats a secret.
        if has_userinfo(text) {
            return Err(SettingError::UrlCredentials);
        }
        let lower = text.to_ascii_lowercase();
        if !lower.starts_with("http://") && !lower.starts_with("https://") {
            return Err(SettingError::UrlScheme(text.to_string()));
        }
        if text.contains(['?', '#']) {
            return Err(SettingError::UrlQueryOrFragment(text.to_string()));
        }
        if text.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(SettingError::UrlSyntax {
                url: text.to_string(),
                reason: "contains whitespace or control characters".to_string(),
            });
        }
        let uri: ureq::http::Uri = text
            .parse()
            .map_err(|e: ureq::http::uri::InvalidUri| SettingError::UrlSyntax {
                url: text.to_string(),
                reason: e.to_string(),
            })?;
        if uri.host().is_none_or(str::is_empty) {
            return Err(SettingError::UrlNoHost(text.to_string()));
        }
        Ok(FleetLockUrl(text.trim_end_matches('/').to_string()))
    }

    /// The URL as configured, without a trailing `/`.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    fn endpoint(&self, operation: Operation) -> String {
        format!("{}/{}", self.0, operation.path())
    }
}

/// Whether the authority of `text` (after `scheme://` if there is one, up
/// to the path, query or fragment) has a `userinfo@` part.
fn has_userinfo(text: &str) -> bool {
    let after_scheme = text.split_once("://").map_or(text, |(_, rest)| rest);
    let authority = after_scheme.split(['/', '?', '#']).next().unwrap_or_default();
    authority.contains('@')
}

impl fmt::Display for FleetLockUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The reboot group: which of the manager's semaphores this host uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FleetLockGroup(String);

impl FleetLockGroup {
    /// Non-empty, `[A-Za-z0-9.-]` (the protocol's grammar, which servers check).
    pub fn parse(text: &str) -> Result<FleetLockGroup, SettingError> {
        if text.is_empty() {
            return Err(SettingError::GroupEmpty);
        }
        if !text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')
        {
            return Err(SettingError::GroupCharacters(text.to_string()));
        }
        Ok(FleetLockGroup(text.to_string()))
    }

    /// The group name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Default for FleetLockGroup {
    fn default() -> FleetLockGroup {
        FleetLockGroup(DEFAULT_GROUP.to_string())
    }
}

/// Why the node id could not be derived.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NodeIdError {
    /// The machine id file is unreadable.
    #[error("reading {path}: {error}")]
    Read {
        /// The machine id file.
        path: String,
        /// The I/O error.
        error: String,
    },
    /// Not 32 hexadecimal digits (or still `uninitialized`, or all zero).
    #[error("{path} does not hold a machine id (32 hexadecimal digits, not all zero)")]
    Malformed {
        /// The machine id file.
        path: String,
    },
}

/// The id this host presents to the lock manager.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodeId([u8; 16]);

impl NodeId {
    /// The node id of the host with `machine_id`.
    pub fn from_machine_id(machine_id: [u8; 16]) -> NodeId {
        NodeId(app_specific_id(machine_id, HOSTD_APP_ID))
    }

    /// The node id of this host, from its machine id file ([`MACHINE_ID_PATH`]).
    pub fn read(machine_id_file: &Path) -> Result<NodeId, NodeIdError> {
        let path = machine_id_file.display().to_string();
        let text = std::fs::read_to_string(machine_id_file).map_err(|e| NodeIdError::Read {
            path: path.clone(),
            error: e.to_string(),
        })?;
        let machine_id = parse_machine_id(&text).ok_or(NodeIdError::Malformed { path })?;
        Ok(NodeId::from_machine_id(machine_id))
    }
}

impl fmt::Display for NodeId {
    /// 32 lowercase hexadecimal digits, as `sd_id128_to_string` writes them.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

/// systemd's app-specific id: HMAC-SHA256 keyed with `base` over `app`,
/// the first 16 bytes, marked as a version 4, variant 1 UUID.
pub fn app_specific_id(base: [u8; 16], app: [u8; 16]) -> [u8; 16] {
    let mut mac = Hmac::<Sha256>::new_from_slice(&base).expect("HMAC takes a key of any length");
    mac.update(&app);
    let digest = mac.finalize().into_bytes();
    let mut id = [0u8; 16];
    id.copy_from_slice(&digest[..16]);
    id[6] = (id[6] & 0x0f) | 0x40;
    id[8] = (id[8] & 0x3f) | 0x80;
    id
}

/// `/etc/machine-id` content: 32 hex digits and a newline; the null id is
/// not a machine id.
fn parse_machine_id(text: &str) -> Option<[u8; 16]> {
    let hex = text.strip_suffix('\n').unwrap_or(text);
    if hex.len() != 32 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let mut id = [0u8; 16];
    for (i, byte) in id.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).ok()?;
    }
    (id != [0u8; 16]).then_some(id)
}

/// The two requests of the protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    /// Take a reboot slot.
    PreReboot,
    /// Release the slot.
    SteadyState,
}

impl Operation {
    fn path(self) -> &'static str {
        match self {
            Operation::PreReboot => "v1/pre-reboot",
            Operation::SteadyState => "v1/steady-state",
        }
    }
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Operation::PreReboot => "pre-reboot",
            Operation::SteadyState => "steady-state",
        })
    }
}

/// Why a request did not succeed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FleetLockError {
    /// The manager answered with a protocol error, e.g. kind
    /// `failed_lock_semaphore_full` when every slot is taken.
    #[error("lock manager refused {operation} (HTTP {status}): {kind}: {value}")]
    Denied {
        /// What was asked.
        operation: Operation,
        /// HTTP status.
        status: u16,
        /// Machine-readable error kind.
        kind: String,
        /// Human-readable explanation.
        value: String,
    },
    /// Not 200 and no protocol error document (a proxy, a wrong URL, an old server).
    #[error("lock manager answered {operation} with HTTP {status} and no FleetLock error: {body:?}")]
    UnexpectedResponse {
        /// What was asked.
        operation: Operation,
        /// HTTP status.
        status: u16,
        /// The start of the body.
        body: String,
    },
    /// No answer: connection refused, name not resolved, TLS failure, timeout.
    #[error("lock manager {url} unreachable for {operation}: {reason}")]
    Unreachable {
        /// What was asked.
        operation: Operation,
        /// The endpoint.
        url: String,
        /// The transport error.
        reason: String,
    },
}

#[derive(Serialize)]
struct RequestBody<'a> {
    client_params: ClientParams<'a>,
}

#[derive(Serialize)]
struct ClientParams<'a> {
    id: &'a str,
    group: &'a str,
}

#[derive(Deserialize)]
struct ErrorBody {
    kind: String,
    value: String,
}

/// A client for one lock manager, group and node.
#[derive(Debug, Clone)]
pub struct FleetLockClient {
    agent: ureq::Agent,
    url: FleetLockUrl,
    body: String,
}

impl FleetLockClient {
    /// A client with the [`DEFAULT_TIMEOUT`].
    pub fn new(url: FleetLockUrl, group: &FleetLockGroup, id: NodeId) -> FleetLockClient {
        FleetLockClient::with_timeout(url, group, id, DEFAULT_TIMEOUT)
    }

    /// A client whose requests give up after `timeout`.
    pub fn with_timeout(url: FleetLockUrl, group: &FleetLockGroup, id: NodeId, timeout: Duration) -> FleetLockClient {
        let tls = ureq::tls::TlsConfig::builder()
            .provider(ureq::tls::TlsProvider::NativeTls)
            .root_certs(ureq::tls::RootCerts::PlatformVerifier)
            .build();
        let agent = ureq::Agent::config_builder()
            .tls_config(tls)
            .timeout_global(Some(timeout))
            // Non-200 answers carry the protocol's error document: read it.
            .http_status_as_error(false)
            // A redirect is not the manager answering; report it instead.
            .max_redirects(0)
            .build()
            .new_agent();
        let id = id.to_string();
        let body = RequestBody {
            client_params: ClientParams {
                id: &id,
                group: group.as_str(),
            },
        };
        let body = serde_json::to_string(&body).expect("two strings serialize");
        FleetLockClient { agent, url, body }
    }

    /// Take a reboot slot (`/v1/pre-reboot`). Taking it again while holding
    /// it succeeds.
    pub fn pre_reboot(&self) -> Result<(), FleetLockError> {
        self.post(Operation::PreReboot)
    }

    /// Release the slot (`/v1/steady-state`); succeeds when none is held.
    pub fn steady_state(&self) -> Result<(), FleetLockError> {
        self.post(Operation::SteadyState)
    }

    fn post(&self, operation: Operation) -> Result<(), FleetLockError> {
        let url = self.url.endpoint(operation);
        let mut response = self
            .agent
            .post(&url)
            .header(PROTOCOL_HEADER, "true")
            .content_type("application/json")
            .send(self.body.as_str())
            .map_err(|e| FleetLockError::Unreachable {
                operation,
                url: url.clone(),
                reason: e.to_string(),
            })?;
        let status = response.status().as_u16();
        if status == 200 {
            return Ok(());
        }
        // An unreadable body is reported like an empty one: the status says enough.
        let body = response
            .body_mut()
            .with_config()
            .limit(ERROR_BODY_LIMIT)
            .read_to_string()
            .unwrap_or_default();
        Err(refusal(operation, status, &body))
    }
}

/// The error for a non-200 answer with `body`.
fn refusal(operation: Operation, status: u16, body: &str) -> FleetLockError {
    match serde_json::from_str::<ErrorBody>(body) {
        Ok(ErrorBody { kind, value }) if !kind.is_empty() => FleetLockError::Denied {
            operation,
            status,
            kind,
            value,
        },
        _ => FleetLockError::UnexpectedResponse {
            operation,
            status,
            body: body.trim().chars().take(BODY_EXCERPT_CHARS).collect(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hostd_tests::fleetlock::{error_doc, StandInServer};
    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream};

    /// The lock manager URL of a stand-in server.
    fn url_of(server: &StandInServer) -> FleetLockUrl {
        FleetLockUrl::parse(server.url()).unwrap()
    }

    fn node(machine_id: &str) -> NodeId {
        NodeId::from_machine_id(parse_machine_id(machine_id).unwrap())
    }

    fn client(server: &StandInServer, machine_id: &str) -> FleetLockClient {
        FleetLockClient::new(url_of(server), &FleetLockGroup::default(), node(machine_id))
    }

    const HOST_A: &str = "0123456789abcdef0123456789abcdef\n";
    const HOST_B: &str = "c988d2509fdf4cdcbed39037c56406fb\n";

    #[test]
    fn node_id_is_systemds_app_specific_id() {
        // Reference values from `systemd-id128 --app-specific=ab34745c66e94f968d331475ad97495c
        // machine-id` and an independent HMAC-SHA256 computation.
        assert_eq!(node(HOST_A).to_string(), "e47921c43b964ed98b476af809e631ef");
        assert_eq!(node(HOST_B).to_string(), "baa217387502418087c24cc575092dc4");
    }

    #[test]
    fn machine_id_file_is_read_strictly() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("machine-id");
        std::fs::write(&path, HOST_A).unwrap();
        assert_eq!(NodeId::read(&path).unwrap(), node(HOST_A));
        std::fs::write(&path, "0123456789ABCDEF0123456789ABCDEF").unwrap();
        assert_eq!(NodeId::read(&path).unwrap(), node(HOST_A), "upper case, no newline");
        for bad in [
            "uninitialized\n",
            "",
            "0123456789abcdef\n",
            "00000000000000000000000000000000\n",
            "0123456789abcdef0123456789abcdeg\n",
        ] {
            std::fs::write(&path, bad).unwrap();
            assert_eq!(
                NodeId::read(&path).unwrap_err().to_string(),
                format!(
                    "{} does not hold a machine id (32 hexadecimal digits, not all zero)",
                    path.display()
                ),
                "{bad:?}"
            );
        }
        let missing = d.path().join("nope");
        assert!(matches!(NodeId::read(&missing), Err(NodeIdError::Read { .. })));
    }

    #[test]
    fn url_validation() {
        assert_eq!(
            FleetLockUrl::parse("http://127.0.0.1:8080").unwrap().as_str(),
            "http://127.0.0.1:8080"
        );
        assert_eq!(
            FleetLockUrl::parse("https://lock.example/base/").unwrap().as_str(),
            "https://lock.example/base"
        );
        assert_eq!(
            FleetLockUrl::parse("ftp://lock.example").unwrap_err().to_string(),
            "\"ftp://lock.example\" is not an http:// or https:// URL"
        );
        assert_eq!(
            FleetLockUrl::parse("lock.example:8080").unwrap_err(),
            SettingError::UrlScheme("lock.example:8080".to_string())
        );
        assert_eq!(
            FleetLockUrl::parse("http://lock.example/?x=1").unwrap_err().to_string(),
            "\"http://lock.example/?x=1\" must not have a query or fragment"
        );
        assert_eq!(
            FleetLockUrl::parse("http://lock.example/#top").unwrap_err(),
            SettingError::UrlQueryOrFragment("http://lock.example/#top".to_string())
        );
        assert!(matches!(
            FleetLockUrl::parse("http://lock example"),
            Err(SettingError::UrlSyntax { .. })
        ));
        assert!(matches!(
            FleetLockUrl::parse("http://[::1"),
            Err(SettingError::UrlSyntax { .. })
        ));
        assert!(matches!(
            FleetLockUrl::parse("http:///path"),
            Err(SettingError::UrlSyntax { .. } | SettingError::UrlNoHost(_))
        ));
    }

    #[test]
    fn credentials_are_refused_without_repeating_them() {
        for url in [
            "http://user:s3cret@lock.example",
            "https://token@lock.example:8443/base",
            "HTTPS://user:s3cret@lock.example/",
            "http://:s3cret@[::1]:8080",
            "user:s3cret@lock.example",
            "ftp://user:s3cret@lock.example",
            "http://user:s3cret@lock.example/?x=1",
        ] {
            let e = FleetLockUrl::parse(url).unwrap_err();
            assert_eq!(e, SettingError::UrlCredentials, "{url}");
            assert!(!e.to_string().contains("s3cret"), "{e}");
        }
        // An '@' in the path is not userinfo.
        assert_eq!(
            FleetLockUrl::parse("http://lock.example/by-owner/@ops").unwrap().as_str(),
            "http://lock.example/by-owner/@ops"
        );
    }

    #[test]
    fn group_validation() {
        assert_eq!(FleetLockGroup::parse("workers-1.eu").unwrap().as_str(), "workers-1.eu");
        assert_eq!(FleetLockGroup::default().as_str(), "default");
        assert_eq!(FleetLockGroup::parse("").unwrap_err().to_string(), "must not be empty");
        assert_eq!(
            FleetLockGroup::parse("my group").unwrap_err().to_string(),
            "\"my group\" may contain only letters, digits, '.' and '-'"
        );
        assert!(FleetLockGroup::parse("a_b").is_err());
    }

    #[test]
    fn request_is_what_the_protocol_says() {
        let server = StandInServer::semaphore(1);
        client(&server, HOST_A).pre_reboot().unwrap();
        let seen = server.seen();
        assert_eq!(seen.len(), 1);
        let req = &seen[0];
        assert_eq!((req.method.as_str(), req.path.as_str()), ("POST", "/v1/pre-reboot"));
        assert_eq!(req.headers[PROTOCOL_HEADER], "true");
        assert_eq!(req.headers["content-type"], "application/json");
        let body: serde_json::Value = serde_json::from_str(&req.body).unwrap();
        assert_eq!(
            body,
            serde_json::json!({"client_params": {"id": "e47921c43b964ed98b476af809e631ef", "group": "default"}})
        );
    }

    #[test]
    fn base_path_is_kept() {
        let server = StandInServer::start(|_| (200, String::new()));
        let url = FleetLockUrl::parse(&format!("{}/fleet/", server.url())).unwrap();
        let c = FleetLockClient::new(url, &FleetLockGroup::default(), node(HOST_A));
        c.steady_state().unwrap();
        assert_eq!(server.seen()[0].path, "/fleet/v1/steady-state");
    }

    #[test]
    fn granted() {
        let server = StandInServer::semaphore(1);
        let a = client(&server, HOST_A);
        assert_eq!(a.pre_reboot(), Ok(()));
        assert_eq!(a.pre_reboot(), Ok(()), "recursive: the holder may ask again");
        assert_eq!(a.steady_state(), Ok(()));
        assert_eq!(a.steady_state(), Ok(()), "releasing what is not held succeeds");
    }

    #[test]
    fn denied_carries_kind_and_value() {
        let server = StandInServer::start(|_| (409, error_doc("failed_lock_semaphore_full", "all 2 slots are taken")));
        let err = client(&server, HOST_A).pre_reboot().unwrap_err();
        assert_eq!(
            err,
            FleetLockError::Denied {
                operation: Operation::PreReboot,
                status: 409,
                kind: "failed_lock_semaphore_full".to_string(),
                value: "all 2 slots are taken".to_string(),
            }
        );
        assert_eq!(
            err.to_string(),
            "lock manager refused pre-reboot (HTTP 409): failed_lock_semaphore_full: all 2 slots are taken"
        );
    }

    #[test]
    fn one_slot_semaphore_b_waits_for_a() {
        let server = StandInServer::semaphore(1);
        let (a, b) = (client(&server, HOST_A), client(&server, HOST_B));
        a.pre_reboot().unwrap();
        match b.pre_reboot() {
            Err(FleetLockError::Denied {
                status: 409,
                kind,
                value,
                ..
            }) => {
                assert_eq!(kind, "failed_lock_semaphore_full");
                assert_eq!(
                    value,
                    "semaphore currently full, held by e47921c43b964ed98b476af809e631ef"
                );
            }
            other => panic!("B should be denied while A holds the slot: {other:?}"),
        }
        b.steady_state().unwrap();
        assert!(b.pre_reboot().is_err(), "B releasing nothing frees nothing");
        a.steady_state().unwrap();
        assert_eq!(b.pre_reboot(), Ok(()), "A back in steady state: B gets the slot");
        assert!(a.pre_reboot().is_err(), "and now A waits");
    }

    #[test]
    fn groups_have_their_own_semaphores() {
        let server = StandInServer::semaphore(1);
        let group = |g: &str| FleetLockClient::new(url_of(&server), &FleetLockGroup::parse(g).unwrap(), node(HOST_B));
        client(&server, HOST_A).pre_reboot().unwrap();
        assert_eq!(group("workers").pre_reboot(), Ok(()));
        assert!(group("default").pre_reboot().is_err());
    }

    #[test]
    fn the_stand_in_rejects_requests_without_the_protocol_header() {
        let server = StandInServer::semaphore(1);
        let mut stream = TcpStream::connect(server.url().trim_start_matches("http://")).unwrap();
        let body = r#"{"client_params":{"id":"x","group":"default"}}"#;
        write!(
            stream,
            "POST /v1/pre-reboot HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        let mut reply = String::new();
        stream.read_to_string(&mut reply).unwrap();
        assert!(reply.starts_with("HTTP/1.1 400 "), "{reply}");
        assert!(reply.contains("missing_protocol_header"), "{reply}");
    }

    #[test]
    fn a_server_refusing_the_protocol_header_is_reported_with_its_reason() {
        // A server that wants something this client does not send (here: a
        // different protocol header value) answers with a protocol error.
        let server = StandInServer::start(|req| match req.headers.get(PROTOCOL_HEADER).map(String::as_str) {
            Some("v2") => (200, String::new()),
            _ => (
                400,
                error_doc("missing_protocol_header", "wrong 'fleet-lock-protocol' header"),
            ),
        });
        assert_eq!(
            client(&server, HOST_A).pre_reboot().unwrap_err().to_string(),
            "lock manager refused pre-reboot (HTTP 400): missing_protocol_header: wrong 'fleet-lock-protocol' header"
        );
    }

    #[test]
    fn non_protocol_error_bodies() {
        let server = StandInServer::start(|req| match req.path.as_str() {
            "/v1/pre-reboot" => (500, "etcd is unavailable\n".to_string()),
            _ => (204, String::new()),
        });
        let c = client(&server, HOST_A);
        assert_eq!(
            c.pre_reboot().unwrap_err().to_string(),
            "lock manager answered pre-reboot with HTTP 500 and no FleetLock error: \"etcd is unavailable\""
        );
        assert_eq!(
            c.steady_state().unwrap_err(),
            FleetLockError::UnexpectedResponse {
                operation: Operation::SteadyState,
                status: 204,
                body: String::new()
            },
            "only 200 is success"
        );
    }

    #[test]
    fn redirects_are_not_followed() {
        let server = StandInServer::start(|_| (307, String::new()));
        assert!(matches!(
            client(&server, HOST_A).pre_reboot(),
            Err(FleetLockError::UnexpectedResponse { status: 307, .. })
        ));
    }

    #[test]
    fn server_down_is_unreachable() {
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let url = FleetLockUrl::parse(&format!("http://127.0.0.1:{port}")).unwrap();
        let c = FleetLockClient::new(url, &FleetLockGroup::default(), node(HOST_A));
        match c.steady_state() {
            Err(FleetLockError::Unreachable { operation, url, .. }) => {
                assert_eq!(operation, Operation::SteadyState);
                assert_eq!(url, format!("http://127.0.0.1:{port}/v1/steady-state"));
            }
            other => panic!("expected Unreachable: {other:?}"),
        }
    }

    #[test]
    fn tls_failure_is_unreachable() {
        // https to a plain-HTTP server: the TLS provider is set up (the system
        // store, through OpenSSL) and the handshake fails cleanly.
        let server = StandInServer::start(|_| (200, String::new()));
        let url = FleetLockUrl::parse(&server.url().replace("http://", "https://")).unwrap();
        let c = FleetLockClient::with_timeout(url, &FleetLockGroup::default(), node(HOST_A), Duration::from_secs(3));
        assert!(matches!(c.pre_reboot(), Err(FleetLockError::Unreachable { .. })));
    }

    #[test]
    fn silent_server_times_out_as_unreachable() {
        // Accepted by the kernel's backlog, never answered.
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = FleetLockUrl::parse(&format!("http://{}", listener.local_addr().unwrap())).unwrap();
        let c = FleetLockClient::with_timeout(
            url,
            &FleetLockGroup::default(),
            node(HOST_A),
            Duration::from_millis(300),
        );
        let started = std::time::Instant::now();
        let err = c.pre_reboot().unwrap_err();
        assert!(matches!(err, FleetLockError::Unreachable { .. }), "{err}");
        assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
        drop(listener);
    }

    #[test]
    fn refusal_parsing() {
        assert_eq!(
            refusal(Operation::PreReboot, 400, r#"{"kind":"","value":"x"}"#),
            FleetLockError::UnexpectedResponse {
                operation: Operation::PreReboot,
                status: 400,
                body: r#"{"kind":"","value":"x"}"#.to_string()
            },
            "an empty kind is not a protocol error"
        );
        let long = "x".repeat(1000);
        match refusal(Operation::PreReboot, 502, &long) {
            FleetLockError::UnexpectedResponse { body, .. } => assert_eq!(body.len(), BODY_EXCERPT_CHARS),
            other => panic!("{other:?}"),
        }
    }
}
