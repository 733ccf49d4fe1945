//! Local image paths (`oci:`, `oci-archive:`, `docker-archive:`, `dir:`),
//! which root reads on behalf of callers who are not root.
//!
//! Two facts are established when a job opens the path, through descriptors
//! opened one component at a time (`O_PATH`, never following a link
//! unawares), so what is judged is what is then read:
//!
//! - **Trust**: the path is trusted when every directory from `/` to the
//!   image, the image itself and every file of its layout is owned by root
//!   and writable by no one else (a sticky directory such as `/tmp` counts
//!   as not writable: others cannot rename or replace root's entries in it),
//!   symlinks on the way are root's and only in such directories, and no
//!   component is on a file system mounted `nosuid` or through FUSE (what
//!   users can mount, such as removable media through udisks, is always
//!   mounted so, and its files can claim any owner). Then only root can
//!   have chosen what the path holds, and re-reading it (`Upgrade`) is not
//!   choosing an image. Anything else is untrusted: re-reading it
//!   installs whatever its writers put there, so it needs the authority to
//!   choose an image (`switch`), and skopeo reads it as `nobody`.
//! - **Shape**: the layout holds only regular files and directories
//!   (a FIFO or device would block or feed the reader), and no symlink in it
//!   leaves the image directory (through one, root would read files the
//!   writer could not). Checked with `openat2(RESOLVE_BENEATH)`.
//! - **Format**: what the path holds is what its transport reads. An
//!   archive's tar members tell an OCI archive (`index.json`, `oci-layout`)
//!   from a docker-archive (`manifest.json`, what `podman save` writes by
//!   default); a directory's files tell an OCI layout from a `dir:` image.
//!   A mismatch is named with the transport that would read the path, not
//!   left to skopeo, which reports a missing temporary `index.json`.
//!
//! The rule for directories follows the one sudo and sshd apply to their
//! configuration: owned by root, not group- or world-writable.

use std::ffi::OsStr;
use std::io::Read;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use ostree_ext::container::{OstreeImageReference, Transport};
use rustix::fs::{FileType, Mode, OFlags, ResolveFlags, Stat};
use rustix::io::Errno;

/// Symlinks followed in one path at most, as the kernel's own limit.
const MAX_SYMLINKS: usize = 40;

/// `index.json` larger than this is not read by hostd (a real one holds a
/// few manifest descriptors).
const MAX_INDEX_BYTES: u64 = 4 << 20;

/// Which local transport the path is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LocalKind {
    /// An OCI layout directory (`oci:`).
    OciDir,
    /// An OCI archive file (`oci-archive:`).
    OciArchive,
    /// A `dir:` image directory.
    Dir,
    /// A docker-archive tar file (`docker-archive:`, `podman save`).
    DockerArchive,
}

impl LocalKind {
    /// Whether the image is one tar file rather than a directory.
    pub fn is_archive(self) -> bool {
        matches!(self, LocalKind::OciArchive | LocalKind::DockerArchive)
    }

    /// The transport that reads this kind, as `--transport` names it.
    pub fn transport(self) -> &'static str {
        match self {
            LocalKind::OciDir => "oci",
            LocalKind::OciArchive => "oci-archive",
            LocalKind::Dir => "dir",
            LocalKind::DockerArchive => "docker-archive",
        }
    }

    /// What a user calls an image of this kind.
    fn described(self) -> &'static str {
        match self {
            LocalKind::OciDir => "an OCI layout directory",
            LocalKind::OciArchive => "an OCI archive",
            LocalKind::Dir => "a dir: image directory",
            LocalKind::DockerArchive => "a docker-archive (what podman save writes by default)",
        }
    }
}

/// What a local path was found to hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Found {
    /// An image of one kind.
    Image(LocalKind),
    /// A tar archive both transports read (an OCI layout with a
    /// `manifest.json`, as `docker save` of Docker 25 writes).
    BothArchives,
    /// A tar archive with none of an image archive's members.
    OtherArchive,
    /// A file that is no tar archive.
    NotAnArchive,
    /// A directory with none of an image's files.
    OtherDirectory,
}

impl Found {
    /// Whether an image of `kind` can be read from what was found.
    fn fits(self, kind: LocalKind) -> bool {
        match self {
            Found::Image(k) => k == kind,
            Found::BothArchives => kind.is_archive(),
            Found::OtherArchive | Found::NotAnArchive => false,
            // Left for skopeo to judge and name.
            Found::OtherDirectory => !kind.is_archive(),
        }
    }

    /// What was found and, where one would read it, the transport to give.
    fn described(self) -> String {
        match self {
            Found::Image(k) => format!("{}; give --transport {}", k.described(), k.transport()),
            Found::BothArchives => "an image archive; give --transport oci-archive".into(),
            Found::OtherArchive => "a tar archive of no image".into(),
            Found::NotAnArchive => "a file that is no tar archive".into(),
            Found::OtherDirectory => "a directory of no image; an archive must be a file".into(),
        }
    }
}

/// Whether only root can have chosen what a path holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Trust {
    /// Root-owned and writable by root alone, all the way.
    Trusted,
    /// Others can change what the path holds; why, as a phrase naming the
    /// path (`/srv/os is writable by its group`).
    Untrusted(String),
}

impl Trust {
    /// Whether the path is trusted.
    pub fn is_trusted(&self) -> bool {
        *self == Trust::Trusted
    }
}

/// Why a local image cannot be read safely.
#[derive(Debug, thiserror::Error)]
pub enum Unsafe {
    /// A path component or layout entry could not be opened.
    #[error("{}: {source}", path.display())]
    Open {
        /// The path that failed.
        path: PathBuf,
        /// The error of `open(2)`/`openat2(2)`.
        source: std::io::Error,
    },
    /// A symlink in the layout points outside the image directory.
    #[error("{} is a symlink leaving the image directory; hostd reads nothing outside it", path.display())]
    SymlinkEscapes {
        /// The entry.
        path: PathBuf,
    },
    /// An entry is neither a regular file nor a directory.
    #[error("{} is a {kind}, not a regular file; hostd reads only regular files of an image", path.display())]
    NotRegular {
        /// The entry.
        path: PathBuf,
        /// What it is (`FIFO`, `socket`, `device`).
        kind: &'static str,
    },
    /// A symlink in a directory others can write was on the path.
    #[error("{} is a symlink in a directory others can write; hostd does not follow it", path.display())]
    UntrustedSymlink {
        /// The symlink.
        path: PathBuf,
    },
    /// The path holds an image of another transport, or no image.
    #[error("{} is not {}: it is {}", path.display(), expected.described(), found.described())]
    WrongFormat {
        /// The path as given.
        path: PathBuf,
        /// What the transport given reads.
        expected: LocalKind,
        /// What the path holds.
        found: Found,
    },
    /// A tar archive with a corrupt header.
    #[error("{} is a malformed tar archive: {what}", path.display())]
    MalformedArchive {
        /// The path as given.
        path: PathBuf,
        /// What is wrong, naming the header's byte offset.
        what: String,
    },
}

impl Unsafe {
    /// The errno behind the failure, where there is one.
    pub fn errno(&self) -> Option<Errno> {
        match self {
            Unsafe::Open { source, .. } => source.raw_os_error().map(Errno::from_raw_os_error),
            _ => None,
        }
    }
}

/// A local image path, inspected.
#[derive(Debug)]
pub struct LocalImage {
    /// The path as given.
    pub path: PathBuf,
    /// Who can have chosen its content.
    pub trust: Trust,
    /// The image directory (or archive), opened `O_PATH`.
    root: OwnedFd,
}

/// The path, kind and `oci:` tag of a local image reference; `None` for
/// registries and containers-storage.
pub fn locate(imgref: &OstreeImageReference) -> Option<(PathBuf, LocalKind, Option<&str>)> {
    let name = imgref.imgref.name.as_str();
    let split = || name.split_once(':').map_or((name, None), |(p, t)| (p, Some(t)));
    let (path, kind, tag) = match imgref.imgref.transport {
        Transport::OciDir => {
            let (p, t) = split();
            (p, LocalKind::OciDir, t)
        }
        Transport::OciArchive => {
            let (p, t) = split();
            (p, LocalKind::OciArchive, t)
        }
        Transport::Dir => (name, LocalKind::Dir, None),
        Transport::DockerArchive => (name, LocalKind::DockerArchive, None),
        _ => return None,
    };
    Some((PathBuf::from(path), kind, tag))
}

/// How long the bus waits for [`trust_of`] before treating the path as
/// untrusted: a stalled medium must not hold the caller.
const TRUST_CHECK_LIMIT: std::time::Duration = std::time::Duration::from_secs(5);

/// The trust of `imgref`'s local path as the bus judges it before asking
/// polkit; `None` for images that are not local paths. A path that cannot
/// be inspected in time, or at all, is untrusted; the job judges it again
/// when it opens it.
pub async fn trust_of(imgref: &OstreeImageReference) -> Option<Trust> {
    let (path, kind, _) = locate(imgref)?;
    let late = || Trust::Untrusted(format!("{} could not be inspected in time", path.display()));
    // One inspection at a time: on a stalled medium each would otherwise
    // pin a blocking thread for good, one per call.
    let Ok(permit) = tokio::time::timeout(TRUST_CHECK_LIMIT, INSPECTING.acquire()).await else { return Some(late()) };
    let Ok(permit) = permit else { return Some(late()) };
    let target = path.clone();
    let inspected = tokio::task::spawn_blocking(move || {
        let _permit = permit;
        inspect(&target, kind).map(|l| l.trust)
    });
    Some(match tokio::time::timeout(TRUST_CHECK_LIMIT, inspected).await {
        Ok(Ok(Ok(trust))) => trust,
        Ok(Ok(Err(e))) => Trust::Untrusted(e.to_string()),
        Ok(Err(_)) | Err(_) => late(),
    })
}

/// Held by the one [`trust_of`] inspection running.
static INSPECTING: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(1);

/// Inspect the image at `path` (absolute, as `image_ref` guarantees): its
/// trust and its shape. Never blocks on what it finds (FIFOs, stalled
/// devices are only `fstat`ed through `O_PATH` descriptors).
pub fn inspect(path: &Path, kind: LocalKind) -> Result<LocalImage, Unsafe> {
    let (root, mut trust) = resolve(path)?;
    let stat = fstat(&root, path)?;
    let is_dir = match file_type(&stat) {
        FileType::Directory => true,
        FileType::RegularFile => false,
        other => return Err(not_regular(path, type_name(other))),
    };
    demote_with_mount(&mut trust, path, &root, &stat, false);
    if is_dir {
        walk_layout(&root, path, &mut trust)?;
    }
    let image = LocalImage { path: path.to_path_buf(), trust, root };
    let found = if is_dir { image.directory_format() } else { image.archive_format()? };
    // A file hostd may not read is left for skopeo (run as `nobody`) to refuse.
    match found {
        Some(found) if !found.fits(kind) => {
            Err(Unsafe::WrongFormat { path: path.to_path_buf(), expected: kind, found })
        }
        _ => Ok(image),
    }
}

/// The first bytes of gzip, bzip2, xz and zstd streams.
const COMPRESSED_MAGIC: [&[u8]; 4] = [b"\x1f\x8b", b"BZh", b"\xfd7zXZ\x00", b"\x28\xb5\x2f\xfd"];

/// Tar headers read before an archive counts as holding no more image
/// members; `podman save` writes a handful per layer.
const MAX_ARCHIVE_HEADERS: usize = 100_000;

/// A tar block: headers are one block, content is padded to whole blocks.
const TAR_BLOCK: u64 = 512;

/// A pax extended header no larger than this is read for its `size`
/// record (what writers give for a member over 8 GiB); a larger one is
/// skipped unread. Real ones hold a few short records.
const MAX_PAX_BYTES: u64 = 64 << 10;

impl LocalImage {
    /// What the archive file holds, by its top-level tar members (see
    /// [`tar_format`]); `None` where hostd may not read the file (see
    /// [`LocalImage::read_index`]), cannot read it, or it is compressed
    /// (skopeo reads a compressed docker-archive; hostd leaves it to it).
    /// A tar archive with a corrupt header is [`Unsafe::MalformedArchive`].
    fn archive_format(&self) -> Result<Option<Found>, Unsafe> {
        use std::io::{Seek, SeekFrom};
        let Some(fd) = self.open_readable(".") else { return Ok(None) };
        let Ok(stat) = rustix::fs::fstat(&fd) else { return Ok(None) };
        let mut file = std::fs::File::from(fd);
        let mut magic = [0u8; 6];
        let Ok(n) = file.read(&mut magic) else { return Ok(None) };
        if COMPRESSED_MAGIC.iter().any(|m| magic[..n].starts_with(m)) {
            return Ok(None);
        }
        if file.seek(SeekFrom::Start(0)).is_err() {
            return Ok(None);
        }
        match tar_format(&mut file, u64::try_from(stat.st_size).unwrap_or(0)) {
            Ok(found) => Ok(Some(found)),
            Err(TarWalk::Unreadable) => Ok(None),
            Err(TarWalk::Malformed(what)) => Err(Unsafe::MalformedArchive { path: self.path.clone(), what }),
        }
    }
}

/// Why [`tar_format`] could not tell an archive's format.
#[derive(Debug)]
enum TarWalk {
    /// A header is corrupt; what is wrong, naming its byte offset.
    Malformed(String),
    /// Reading the file failed.
    Unreadable,
}

impl From<std::io::Error> for TarWalk {
    fn from(_: std::io::Error) -> Self {
        TarWalk::Unreadable
    }
}

/// What the tar archive `file` (of `len` bytes) holds, by its top-level
/// members: `index.json` or `oci-layout` (OCI archive), `manifest.json`
/// (docker-archive).
///
/// The 512-byte headers are read one at a time (POSIX ustar, as
/// pax(1) specifies it, and GNU tar's extensions) and each member's
/// content is skipped by seeking, never read: memory stays at one block
/// (a pax header of up to 64 KiB) whatever the archive claims. The `tar`
/// crate is not used here: it reads a GNU long-name (`L`, `K`) or pax
/// (`x`, `g`) entry whole into memory, so one header claiming gigabytes,
/// in a sparse file any user can write, made root's hostd allocate them.
/// Such entries are skipped like any content: the members looked for have
/// short names, which the header itself holds.
///
/// The walk stops at the end-of-archive zero block, at the end of the
/// file, or after 100 000 headers; it never goes past `len`. The first
/// header failing its checksum or cut short makes the file no tar archive
/// ([`Found::NotAnArchive`], as GNU tar's "does not look like a tar
/// archive"); a later one, a size field that does not parse, or content
/// past the end of the file is [`TarWalk::Malformed`].
fn tar_format(file: &mut (impl Read + std::io::Seek), len: u64) -> Result<Found, TarWalk> {
    let (mut oci, mut docker, mut members) = (false, false, 0usize);
    let mut offset = 0u64;
    // The size a pax `x` header gives the next member, overriding its own.
    let mut pax_size = None;
    let mut header = [0u8; TAR_BLOCK as usize];
    for read in 0..MAX_ARCHIVE_HEADERS {
        let at = offset;
        let n = read_block(file, at, &mut header)?;
        if n == 0 || header.iter().all(|&b| b == 0) {
            break;
        }
        let is_header = n == header.len() && checksum_matches(&header);
        match (is_header, read) {
            (true, _) => {}
            (false, 0) => return Ok(Found::NotAnArchive),
            (false, _) if n < header.len() => {
                return Err(TarWalk::Malformed(format!("the header at byte {at} is cut short by the end of the file")))
            }
            (false, _) => return Err(TarWalk::Malformed(format!("the header at byte {at} has a bad checksum"))),
        }
        let bad_size = || TarWalk::Malformed(format!("the header at byte {at} has a size field that is no number"));
        let own_size = parse_numeric(&header[124..136]).ok_or_else(bad_size)?;
        let kind = header[156];
        let extension = matches!(kind, b'L' | b'K' | b'x' | b'g');
        let size = if extension { own_size } else { pax_size.take().unwrap_or(own_size) };
        offset += TAR_BLOCK;
        if kind == b'x' && size <= MAX_PAX_BYTES {
            let mut records = Vec::new();
            file.by_ref().take(size).read_to_end(&mut records)?;
            pax_size = pax_size_record(&records)
                .map_err(|()| TarWalk::Malformed(format!("the pax header at byte {at} has a size record that is no number")))?;
        }
        if !extension {
            members += 1;
            let name = header_name(&header);
            let name = name.strip_prefix(b"./").unwrap_or(&name);
            oci |= name == b"index.json" || name == b"oci-layout";
            docker |= name == b"manifest.json";
        }
        // A GNU sparse member's map continues in blocks of its own.
        if kind == b'S' && header[482] != 0 {
            offset = skip_sparse_map(file, offset)?;
        }
        let past = || TarWalk::Malformed(format!("the member at byte {at} claims {size} bytes, past the end of the file"));
        let padded = size.div_ceil(TAR_BLOCK).checked_mul(TAR_BLOCK).ok_or_else(past)?;
        offset = offset.checked_add(padded).filter(|&end| end <= len).ok_or_else(past)?;
        if oci && docker {
            break;
        }
    }
    Ok(match (oci, docker) {
        (true, true) => Found::BothArchives,
        (true, false) => Found::Image(LocalKind::OciArchive),
        (false, true) => Found::Image(LocalKind::DockerArchive),
        (false, false) if members > 0 => Found::OtherArchive,
        (false, false) => Found::NotAnArchive,
    })
}

/// Read the block at `offset` into `block`; the bytes read, short only at
/// the end of the file.
fn read_block(file: &mut (impl Read + std::io::Seek), offset: u64, block: &mut [u8]) -> Result<usize, TarWalk> {
    file.seek(std::io::SeekFrom::Start(offset))?;
    let mut filled = 0;
    while filled < block.len() {
        match file.read(&mut block[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(filled)
}

/// Skip the extension blocks of a GNU sparse map starting at `offset`
/// (each says in its byte 504 whether another follows); the offset after
/// them. At most [`MAX_ARCHIVE_HEADERS`] are read.
fn skip_sparse_map(file: &mut (impl Read + std::io::Seek), mut offset: u64) -> Result<u64, TarWalk> {
    let mut block = [0u8; TAR_BLOCK as usize];
    for _ in 0..MAX_ARCHIVE_HEADERS {
        let at = offset;
        if read_block(file, at, &mut block)? < block.len() {
            return Err(TarWalk::Malformed(format!("the sparse map at byte {at} is cut short by the end of the file")));
        }
        offset += TAR_BLOCK;
        if block[504] == 0 {
            return Ok(offset);
        }
    }
    Err(TarWalk::Malformed(format!("the sparse map before byte {offset} does not end")))
}

/// Whether the header's checksum field (bytes 148..156, octal) is the sum
/// of its bytes with that field counted as spaces; as GNU tar, the sum of
/// unsigned or of signed bytes (old writers) is accepted.
fn checksum_matches(header: &[u8; TAR_BLOCK as usize]) -> bool {
    let Some(stored) = parse_octal(&header[148..156]) else { return false };
    let (mut unsigned, mut signed) = (0u64, 0i64);
    for (i, &b) in header.iter().enumerate() {
        let b = if (148..156).contains(&i) { b' ' } else { b };
        unsigned += u64::from(b);
        signed += i64::from(b as i8);
    }
    stored == unsigned || i64::try_from(stored) == Ok(signed)
}

/// A numeric header field: octal digits after optional spaces, ended by
/// a space or NUL, or GNU's base-256 (first byte's high bit set, then the
/// value big-endian); `None` when it is neither, negative, or beyond `u64`.
fn parse_numeric(field: &[u8]) -> Option<u64> {
    match field.first() {
        Some(&first) if first & 0x80 != 0 => {
            // 0xff starts a negative number, which no size is.
            if first == 0xff {
                return None;
            }
            field[1..].iter().try_fold(u64::from(first & 0x7f), |v, &b| v.checked_mul(256)?.checked_add(u64::from(b)))
        }
        _ => parse_octal(field),
    }
}

/// An octal field: optional leading spaces, at least one digit, then only
/// spaces or NULs.
fn parse_octal(field: &[u8]) -> Option<u64> {
    let start = field.iter().position(|&b| b != b' ')?;
    let digits = &field[start..];
    let end = digits.iter().position(|b| !(b'0'..=b'7').contains(b)).unwrap_or(digits.len());
    if end == 0 || !digits[end..].iter().all(|&b| b == b' ' || b == 0) {
        return None;
    }
    digits[..end].iter().try_fold(0u64, |v, &d| v.checked_mul(8)?.checked_add(u64::from(d - b'0')))
}

/// The member name of a header: `name` (bytes 0..100), after the ustar
/// `prefix` (bytes 345..500) and a slash when the header is POSIX ustar
/// (GNU's format keeps times where the prefix would be); each ends at its
/// first NUL.
fn header_name(header: &[u8; TAR_BLOCK as usize]) -> Vec<u8> {
    let until_nul = |field: &[u8]| field.iter().position(|&b| b == 0).map_or(field.to_vec(), |end| field[..end].to_vec());
    let name = until_nul(&header[..100]);
    let prefix = if &header[257..263] == b"ustar\0" { until_nul(&header[345..500]) } else { Vec::new() };
    if prefix.is_empty() {
        name
    } else {
        [prefix.as_slice(), b"/", name.as_slice()].concat()
    }
}

/// The `size` record of pax extended header records (`<length> <key>=<value>\n`,
/// as pax(1) specifies), if there is one; `Err` when its value is no number.
/// Records that do not parse end the search: the next header is then taken
/// at its own size.
fn pax_size_record(records: &[u8]) -> Result<Option<u64>, ()> {
    let mut rest = records;
    let mut size = None;
    while !rest.is_empty() {
        let Some(space) = rest.iter().position(|&b| b == b' ') else { break };
        let Some(length) = std::str::from_utf8(&rest[..space]).ok().and_then(|l| l.parse::<usize>().ok()) else { break };
        if length <= space + 1 || length > rest.len() {
            break;
        }
        let record = &rest[space + 1..length];
        let record = record.strip_suffix(b"\n").unwrap_or(record);
        if let Some(value) = record.strip_prefix(b"size=") {
            let value = std::str::from_utf8(value).ok().and_then(|v| v.parse::<u64>().ok()).ok_or(())?;
            size = Some(value);
        }
        rest = &rest[length..];
    }
    Ok(size)
}

impl LocalImage {
    /// What the directory holds, by its files: an OCI layout has
    /// `oci-layout` or `index.json`, a `dir:` image `manifest.json`.
    fn directory_format(&self) -> Option<Found> {
        let has = |name: &str| open_beneath(&self.root, name, OFlags::PATH, &self.trust).is_ok();
        Some(if has("oci-layout") || has("index.json") {
            Found::Image(LocalKind::OciDir)
        } else if has("manifest.json") {
            Found::Image(LocalKind::Dir)
        } else {
            Found::OtherDirectory
        })
    }

    /// `rel` of the image (`.`: the archive itself) opened for reading,
    /// when hostd may read it: a regular file, and on an untrusted path
    /// only one every user could read.
    fn open_readable(&self, rel: &str) -> Option<OwnedFd> {
        let flags = OFlags::RDONLY | OFlags::NONBLOCK | OFlags::NOCTTY;
        let fd = if rel == "." {
            // Checked a regular file before: opening it cannot block.
            reopen(&self.root, flags).ok()?
        } else {
            open_beneath(&self.root, rel, flags, &self.trust).ok()?
        };
        let stat = rustix::fs::fstat(&fd).ok()?;
        let world_readable = stat.st_mode & 0o004 != 0;
        (file_type(&stat) == FileType::RegularFile && (self.trust.is_trusted() || world_readable)).then_some(fd)
    }

    /// The layout's `index.json`, when hostd may read it: a regular file
    /// inside the image directory, no larger than 4 MiB, and on an
    /// untrusted path only one every user could read (hostd reads no more
    /// than those users could). `None` when it may not or cannot be read.
    pub fn read_index(&self) -> Option<Vec<u8>> {
        let fd = self.open_readable("index.json")?;
        let mut content = Vec::new();
        std::fs::File::from(fd).take(MAX_INDEX_BYTES + 1).read_to_end(&mut content).ok()?;
        (content.len() as u64 <= MAX_INDEX_BYTES).then_some(content)
    }
}

/// Open `path` from `/` one component at a time, following symlinks only
/// where root alone could have placed them; the final descriptor and the
/// trust of the directories on the way.
fn resolve(path: &Path) -> Result<(OwnedFd, Trust), Unsafe> {
    let open_err = |p: &Path, e: Errno| Unsafe::Open { path: p.to_path_buf(), source: e.into() };
    let open_slash = || {
        rustix::fs::open("/", OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty())
            .map_err(|e| open_err(Path::new("/"), e))
    };
    let mut trust = Trust::Trusted;
    let mut followed = 0;
    let mut dir = open_slash()?;
    let mut dir_path = PathBuf::from("/");
    let mut components = Vec::new();
    push_components(&mut components, path);
    while let Some(name) = components.pop() {
        let here = dir_path.join(&name);
        // Who placed an entry is decided by who may write its directory.
        demote_with_mount(&mut trust, &dir_path, &dir, &fstat(&dir, &dir_path)?, true);
        let next = rustix::fs::openat(&dir, name.as_os_str(), OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC, Mode::empty())
            .map_err(|e| open_err(&here, e))?;
        let stat = fstat(&next, &here)?;
        match file_type(&stat) {
            FileType::Symlink => {
                // In a sticky directory anyone may place a link; only root's count.
                if !trust.is_trusted() || stat.st_uid != 0 {
                    return Err(Unsafe::UntrustedSymlink { path: here });
                }
                followed += 1;
                if followed > MAX_SYMLINKS {
                    return Err(open_err(&here, Errno::LOOP));
                }
                let target = rustix::fs::readlinkat(&dir, name.as_os_str(), Vec::new()).map_err(|e| open_err(&here, e))?;
                let target = PathBuf::from(OsStr::from_bytes(target.as_bytes()));
                if target.is_absolute() {
                    dir = open_slash()?;
                    dir_path = PathBuf::from("/");
                }
                push_components(&mut components, &target);
            }
            FileType::Directory => {
                if name == ".." {
                    dir_path.pop();
                } else {
                    dir_path = here;
                }
                dir = next;
            }
            _ if components.is_empty() => {
                dir = next;
                dir_path = here;
            }
            _ => return Err(open_err(&here, Errno::NOTDIR)),
        }
    }
    Ok((dir, trust))
}

/// An `O_PATH` descriptor of a regular file reopened with `flags` through
/// `/proc/self/fd`, the one way to read what such a descriptor names.
fn reopen(fd: &OwnedFd, flags: OFlags) -> Result<OwnedFd, Errno> {
    use std::os::fd::AsRawFd;
    let proc_path = format!("/proc/self/fd/{}", fd.as_raw_fd());
    rustix::fs::open(proc_path.as_str(), flags | OFlags::CLOEXEC, Mode::empty())
}

/// Push the normal components of `path` so that the first is popped first.
fn push_components(stack: &mut Vec<std::ffi::OsString>, path: &Path) {
    let names: Vec<_> = path
        .components()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n.to_os_string()),
            Component::ParentDir => Some("..".into()),
            _ => None,
        })
        .collect();
    stack.extend(names.into_iter().rev());
}

/// Mark `trust` untrusted when `stat` (of `path`) is not root's alone. A
/// sticky directory's other-writability is allowed when `sticky_ok`: in it
/// nobody but root can rename or remove root's entries.
fn demote(trust: &mut Trust, path: &Path, stat: &Stat, sticky_ok: bool) {
    if !trust.is_trusted() {
        return;
    }
    if let Some(why) = ownership_doubt(path, stat, sticky_ok) {
        *trust = Trust::Untrusted(why);
    }
}

/// Like [`demote`], and also untrusted when `fd` (of `path`) is on a file
/// system users can mount: `nosuid` (udisks, user mounts in fstab) or FUSE.
/// Owners on such media are whatever the medium says.
fn demote_with_mount(trust: &mut Trust, path: &Path, fd: &OwnedFd, stat: &Stat, sticky_ok: bool) {
    demote(trust, path, stat, sticky_ok);
    if !trust.is_trusted() {
        return;
    }
    let user_mountable = match (rustix::fs::fstatvfs(fd), rustix::fs::fstatfs(fd)) {
        (Ok(vfs), Ok(fs)) => {
            vfs.f_flag.contains(rustix::fs::StatVfsMountFlags::NOSUID) || fs.f_type == FUSE_SUPER_MAGIC
        }
        // What cannot be told is not trusted.
        _ => true,
    };
    if user_mountable {
        *trust = Trust::Untrusted(format!(
            "{} is on a file system mounted nosuid or through FUSE, as removable and user-mounted media are",
            path.display()
        ));
    }
}

/// `FUSE_SUPER_MAGIC` of statfs(2).
const FUSE_SUPER_MAGIC: i64 = 0x6573_7546;

/// Why `stat` (of `path`) is not root's alone, if it is not.
fn ownership_doubt(path: &Path, stat: &Stat, sticky_ok: bool) -> Option<String> {
    let mode = stat.st_mode;
    let sticky = mode & 0o1000 != 0 && sticky_ok;
    if stat.st_uid != 0 {
        Some(format!("{} is owned by uid {}, not root", path.display(), stat.st_uid))
    } else if mode & 0o020 != 0 && !sticky {
        Some(format!("{} is writable by its group", path.display()))
    } else if mode & 0o002 != 0 && !sticky {
        Some(format!("{} is writable by everyone", path.display()))
    } else {
        None
    }
}

/// Check every entry of the image directory `root` (a layout's
/// `index.json`, `oci-layout` and `blobs/<algorithm>/<digest>`, or a `dir:`
/// image's files): regular files and directories only, inside the image
/// directory, and for trust root's alone.
fn walk_layout(root: &OwnedFd, path: &Path, trust: &mut Trust) -> Result<(), Unsafe> {
    let mut dirs = vec![PathBuf::new()];
    while let Some(rel) = dirs.pop() {
        let listing = if rel.as_os_str().is_empty() {
            rustix::fs::openat(root, ".", OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty())
        } else {
            open_beneath(root, &rel, OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW, trust)
        }
        .map_err(|e| beneath_error(path, &rel, e))?;
        let entries = rustix::fs::Dir::read_from(&listing).map_err(|e| beneath_error(path, &rel, e))?;
        for entry in entries {
            let entry = entry.map_err(|e| beneath_error(path, &rel, e))?;
            let name = OsStr::from_bytes(entry.file_name().to_bytes());
            if name == "." || name == ".." {
                continue;
            }
            let child = rel.join(name);
            let fd = open_beneath(root, &child, OFlags::PATH, trust).map_err(|e| beneath_error(path, &child, e))?;
            let stat = fstat(&fd, &path.join(&child))?;
            match file_type(&stat) {
                FileType::Directory => dirs.push(child.clone()),
                FileType::RegularFile => {}
                other => return Err(not_regular(&path.join(&child), type_name(other))),
            }
            demote(trust, &path.join(&child), &stat, false);
        }
    }
    Ok(())
}

/// `openat2` of `rel` below `root`: symlinks that stay inside are followed
/// on a trusted path, none on an untrusted one; magic links never.
fn open_beneath(root: &OwnedFd, rel: impl rustix::path::Arg, flags: OFlags, trust: &Trust) -> Result<OwnedFd, Errno> {
    let mut resolve = ResolveFlags::BENEATH | ResolveFlags::NO_MAGICLINKS;
    if !trust.is_trusted() {
        resolve |= ResolveFlags::NO_SYMLINKS;
    }
    rustix::fs::openat2(root.as_fd(), rel, flags | OFlags::CLOEXEC, Mode::empty(), resolve)
}

/// An `openat2` failure of `rel` in the image at `path`, named: `EXDEV` is
/// a symlink leaving the directory, `ELOOP` one on an untrusted path.
fn beneath_error(path: &Path, rel: &Path, e: Errno) -> Unsafe {
    let full = path.join(rel);
    match e {
        Errno::XDEV => Unsafe::SymlinkEscapes { path: full },
        Errno::LOOP => Unsafe::UntrustedSymlink { path: full },
        e => Unsafe::Open { path: full, source: e.into() },
    }
}

fn fstat(fd: &OwnedFd, path: &Path) -> Result<Stat, Unsafe> {
    rustix::fs::fstat(fd).map_err(|e| Unsafe::Open { path: path.to_path_buf(), source: e.into() })
}

fn file_type(stat: &Stat) -> FileType {
    FileType::from_raw_mode(stat.st_mode)
}

fn not_regular(path: &Path, kind: &'static str) -> Unsafe {
    Unsafe::NotRegular { path: path.to_path_buf(), kind }
}

fn type_name(t: FileType) -> &'static str {
    match t {
        FileType::Fifo => "FIFO",
        FileType::Socket => "socket",
        FileType::CharacterDevice | FileType::BlockDevice => "device",
        FileType::Symlink => "symlink",
        FileType::Directory => "directory",
        _ => "special file",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn layout(dir: &Path) {
        std::fs::create_dir_all(dir.join("blobs/sha256")).unwrap();
        std::fs::write(dir.join("index.json"), br#"{"schemaVersion":2,"manifests":[]}"#).unwrap();
        std::fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
        std::fs::write(dir.join("blobs/sha256/aa"), b"blob").unwrap();
    }

    fn private_dir() -> tempfile::TempDir {
        // Under a root-owned 0755 directory, so the path can be trusted
        // when the tests run as root.
        tempfile::Builder::new().prefix("hostd-local-source-").tempdir_in("/var/tmp").unwrap()
    }

    fn is_root() -> bool {
        rustix::process::getuid().is_root()
    }

    #[test]
    fn a_root_owned_layout_is_trusted_and_its_index_read() {
        let t = private_dir();
        let img = t.path().join("os");
        layout(&img);
        let found = inspect(&img, LocalKind::OciDir).unwrap();
        if is_root() {
            assert_eq!(found.trust, Trust::Trusted);
        }
        assert!(found.read_index().is_some());
    }

    #[test]
    fn a_group_writable_directory_makes_the_path_untrusted() {
        let t = private_dir();
        let img = t.path().join("os");
        layout(&img);
        std::fs::set_permissions(&img, std::fs::Permissions::from_mode(0o775)).unwrap();
        let Trust::Untrusted(why) = inspect(&img, LocalKind::OciDir).unwrap().trust else { panic!("trusted") };
        assert!(why.contains("os") && (why.contains("group") || why.contains("uid")), "{why}");
    }

    #[test]
    fn a_symlink_leaving_the_image_is_refused() {
        let t = private_dir();
        let img = t.path().join("os");
        layout(&img);
        std::fs::write(t.path().join("secret"), b"root only").unwrap();
        std::fs::remove_file(img.join("blobs/sha256/aa")).unwrap();
        std::os::unix::fs::symlink(t.path().join("secret"), img.join("blobs/sha256/aa")).unwrap();
        let e = inspect(&img, LocalKind::OciDir).unwrap_err();
        assert!(matches!(e, Unsafe::SymlinkEscapes { .. }), "{e}");
        assert!(!e.to_string().contains("root only"));
    }

    #[test]
    fn a_fifo_index_is_refused_without_blocking() {
        let t = private_dir();
        let img = t.path().join("os");
        layout(&img);
        std::fs::remove_file(img.join("index.json")).unwrap();
        nix::unistd::mkfifo(&img.join("index.json"), nix::sys::stat::Mode::from_bits_truncate(0o644)).unwrap();
        let e = inspect(&img, LocalKind::OciDir).unwrap_err();
        assert!(matches!(e, Unsafe::NotRegular { kind: "FIFO", .. }), "{e}");
    }

    #[test]
    fn a_symlink_inside_the_image_is_followed_on_a_trusted_path_only() {
        let t = private_dir();
        let img = t.path().join("os");
        layout(&img);
        std::fs::rename(img.join("index.json"), img.join("index-v1.json")).unwrap();
        std::os::unix::fs::symlink("index-v1.json", img.join("index.json")).unwrap();
        let found = inspect(&img, LocalKind::OciDir).unwrap();
        if is_root() {
            assert!(found.read_index().is_some());
            std::fs::set_permissions(&img, std::fs::Permissions::from_mode(0o777)).unwrap();
            let e = inspect(&img, LocalKind::OciDir).unwrap_err();
            assert!(matches!(e, Unsafe::UntrustedSymlink { .. }), "{e}");
        }
    }

    #[test]
    fn a_symlink_a_user_placed_in_a_sticky_directory_is_not_followed() {
        if !is_root() {
            return;
        }
        let t = private_dir();
        let img = t.path().join("os");
        layout(&img);
        let sticky = t.path().join("shared");
        std::fs::create_dir(&sticky).unwrap();
        std::fs::set_permissions(&sticky, std::fs::Permissions::from_mode(0o1777)).unwrap();
        let link = sticky.join("current");
        std::os::unix::fs::symlink(&img, &link).unwrap();
        let as_root = inspect(&link, LocalKind::OciDir).unwrap();
        assert_eq!(as_root.trust, Trust::Trusted, "root's own link in a sticky directory");
        let user = nix::unistd::Uid::from_raw(4102);
        nix::unistd::fchownat(None, &link, Some(user), None, nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW).unwrap();
        let e = inspect(&link, LocalKind::OciDir).unwrap_err();
        assert!(matches!(e, Unsafe::UntrustedSymlink { .. }), "{e}");
    }

    /// A tar file with empty members named `members`.
    fn archive(path: &Path, members: &[&str]) {
        let mut tar = tar::Builder::new(std::fs::File::create(path).unwrap());
        for name in members {
            let mut header = tar::Header::new_gnu();
            header.set_size(0);
            header.set_mode(0o644);
            header.set_entry_type(tar::EntryType::Regular);
            tar.append_data(&mut header, name, std::io::empty()).unwrap();
        }
        tar.finish().unwrap();
    }

    fn found(e: Unsafe) -> Found {
        match e {
            Unsafe::WrongFormat { found, .. } => found,
            other => panic!("not a format error: {other}"),
        }
    }

    #[test]
    fn an_archive_is_told_by_its_members_and_refused_under_another_transport() {
        let t = private_dir();
        let docker = t.path().join("docker.tar");
        archive(&docker, &["0123.tar", "cafe.json", "manifest.json", "repositories"]);
        let oci = t.path().join("oci.tar");
        archive(&oci, &["blobs/sha256/aa", "index.json", "oci-layout"]);
        assert!(inspect(&docker, LocalKind::DockerArchive).is_ok());
        assert!(inspect(&oci, LocalKind::OciArchive).is_ok());
        let e = inspect(&docker, LocalKind::OciArchive).unwrap_err();
        assert!(e.to_string().contains("give --transport docker-archive"), "{e}");
        assert_eq!(found(e), Found::Image(LocalKind::DockerArchive));
        assert_eq!(found(inspect(&oci, LocalKind::DockerArchive).unwrap_err()), Found::Image(LocalKind::OciArchive));
        assert_eq!(found(inspect(&oci, LocalKind::OciDir).unwrap_err()), Found::Image(LocalKind::OciArchive));
        // Docker 25 writes both; either transport reads it.
        let both = t.path().join("both.tar");
        archive(&both, &["index.json", "manifest.json", "oci-layout"]);
        assert!(inspect(&both, LocalKind::DockerArchive).is_ok() && inspect(&both, LocalKind::OciArchive).is_ok());
        let text = t.path().join("notes.txt");
        std::fs::write(&text, "not an image\n").unwrap();
        assert_eq!(found(inspect(&text, LocalKind::DockerArchive).unwrap_err()), Found::NotAnArchive);
        let other = t.path().join("other.tar");
        archive(&other, &["etc/hosts"]);
        assert_eq!(found(inspect(&other, LocalKind::OciArchive).unwrap_err()), Found::OtherArchive);
        // A compressed archive is skopeo's to read.
        let gz = t.path().join("os.tar.gz");
        std::fs::write(&gz, b"\x1f\x8b\x08\x00rest").unwrap();
        assert!(inspect(&gz, LocalKind::DockerArchive).is_ok());
    }

    /// A GNU header of `kind` for `name` claiming `size` bytes of content.
    fn header(name: &str, kind: tar::EntryType, size: u64) -> tar::Header {
        let mut header = tar::Header::new_gnu();
        header.set_path(name).unwrap();
        header.set_size(size);
        header.set_mode(0o644);
        header.set_entry_type(kind);
        header.set_cksum();
        header
    }

    /// The end of a tar archive: two zero blocks.
    const END: [u8; 1024] = [0; 1024];

    fn malformed(e: Unsafe) -> String {
        match e {
            Unsafe::MalformedArchive { what, .. } => what,
            other => panic!("not a malformed archive: {other}"),
        }
    }

    #[test]
    fn a_huge_long_name_entry_is_skipped_unread() {
        use std::io::{Seek, SeekFrom, Write};
        let t = private_dir();
        let path = t.path().join("huge.tar");
        // One GNU long-name entry claiming 64 GiB, in a sparse file: the
        // tar crate reads such an entry whole into memory.
        let claimed = 64u64 << 30;
        let mut file = std::fs::File::create(&path).unwrap();
        file.write_all(header("././@LongLink", tar::EntryType::GNULongName, claimed).as_bytes()).unwrap();
        file.seek(SeekFrom::Start(512 + claimed)).unwrap();
        file.write_all(header("manifest.json", tar::EntryType::Regular, 0).as_bytes()).unwrap();
        file.write_all(&END).unwrap();
        drop(file);
        let started = std::time::Instant::now();
        assert!(inspect(&path, LocalKind::DockerArchive).is_ok());
        assert_eq!(found(inspect(&path, LocalKind::OciArchive).unwrap_err()), Found::Image(LocalKind::DockerArchive));
        assert!(started.elapsed() < TRUST_CHECK_LIMIT, "took {:?}", started.elapsed());
        // Claiming more than the file holds is malformed, not read.
        let cut = t.path().join("cut.tar");
        let mut file = std::fs::File::create(&cut).unwrap();
        file.write_all(header("././@LongLink", tar::EntryType::GNULongName, claimed).as_bytes()).unwrap();
        file.set_len(4096).unwrap();
        drop(file);
        let what = malformed(inspect(&cut, LocalKind::DockerArchive).unwrap_err());
        assert!(what.contains("past the end of the file"), "{what}");
    }

    #[test]
    fn a_pax_header_before_the_manifest_is_skipped_and_its_size_used() {
        use std::io::Write;
        let t = private_dir();
        let path = t.path().join("pax.tar");
        let records = b"30 mtime=1700000000.123456789\n13 size=1024\n";
        let mut file = std::fs::File::create(&path).unwrap();
        file.write_all(header("PaxHeaders/layer.tar", tar::EntryType::XHeader, records.len() as u64).as_bytes()).unwrap();
        let mut content = records.to_vec();
        content.resize(512, 0);
        file.write_all(&content).unwrap();
        // The member's own size field says 0; the pax record gives 1024.
        file.write_all(header("layer.tar", tar::EntryType::Regular, 0).as_bytes()).unwrap();
        file.write_all(&[0xaa; 1024]).unwrap();
        file.write_all(header("manifest.json", tar::EntryType::Regular, 0).as_bytes()).unwrap();
        file.write_all(&END).unwrap();
        drop(file);
        assert!(inspect(&path, LocalKind::DockerArchive).is_ok());
        assert_eq!(found(inspect(&path, LocalKind::OciArchive).unwrap_err()), Found::Image(LocalKind::DockerArchive));
    }

    #[test]
    fn a_base_256_size_is_read() {
        use std::io::Write;
        let t = private_dir();
        let path = t.path().join("base256.tar");
        let mut layer = header("layer.tar", tar::EntryType::Regular, 0);
        // GNU's binary form, as writers use for members over 8 GiB.
        let field = &mut layer.as_mut_bytes()[124..136];
        field.fill(0);
        field[0] = 0x80;
        field[10..].copy_from_slice(&1536u16.to_be_bytes());
        layer.set_cksum();
        let mut file = std::fs::File::create(&path).unwrap();
        file.write_all(layer.as_bytes()).unwrap();
        file.write_all(&[0xaa; 1536]).unwrap();
        file.write_all(header("index.json", tar::EntryType::Regular, 0).as_bytes()).unwrap();
        file.write_all(&END).unwrap();
        drop(file);
        assert!(inspect(&path, LocalKind::OciArchive).is_ok());
        assert_eq!(found(inspect(&path, LocalKind::DockerArchive).unwrap_err()), Found::Image(LocalKind::OciArchive));
    }

    #[test]
    fn a_truncated_or_corrupt_header_is_a_malformed_archive() {
        let t = private_dir();
        let truncated = t.path().join("truncated.tar");
        archive(&truncated, &["manifest.json", "repositories"]);
        std::fs::File::options().write(true).open(&truncated).unwrap().set_len(512 + 300).unwrap();
        let e = inspect(&truncated, LocalKind::DockerArchive).unwrap_err();
        assert!(e.to_string().contains("truncated.tar is a malformed tar archive"), "{e}");
        assert!(malformed(e).contains("header at byte 512 is cut short"));
        let corrupt = t.path().join("corrupt.tar");
        archive(&corrupt, &["manifest.json", "repositories"]);
        let mut bytes = std::fs::read(&corrupt).unwrap();
        bytes[512] = b'R';
        std::fs::write(&corrupt, &bytes).unwrap();
        let what = malformed(inspect(&corrupt, LocalKind::DockerArchive).unwrap_err());
        assert!(what.contains("header at byte 512 has a bad checksum"), "{what}");
        // A size field that is no number, under a good checksum.
        let mut bad_size = header("manifest.json", tar::EntryType::Regular, 0);
        bad_size.as_mut_bytes()[124..136].copy_from_slice(b"12x45670000\0");
        bad_size.set_cksum();
        let sized = t.path().join("sized.tar");
        std::fs::write(&sized, [bad_size.as_bytes().as_slice(), &END].concat()).unwrap();
        let what = malformed(inspect(&sized, LocalKind::DockerArchive).unwrap_err());
        assert!(what.contains("header at byte 0 has a size field that is no number"), "{what}");
    }

    #[test]
    fn a_directory_is_told_by_its_files() {
        let t = private_dir();
        let img = t.path().join("os");
        layout(&img);
        let e = inspect(&img, LocalKind::DockerArchive).unwrap_err();
        assert!(e.to_string().contains("an OCI layout directory; give --transport oci"), "{e}");
        assert_eq!(found(inspect(&img, LocalKind::Dir).unwrap_err()), Found::Image(LocalKind::OciDir));
        let dir_image = t.path().join("dir-image");
        std::fs::create_dir(&dir_image).unwrap();
        std::fs::write(dir_image.join("manifest.json"), b"{}").unwrap();
        std::fs::write(dir_image.join("version"), b"Directory Transport Version: 1.1\n").unwrap();
        assert!(inspect(&dir_image, LocalKind::Dir).is_ok());
        assert_eq!(found(inspect(&dir_image, LocalKind::OciDir).unwrap_err()), Found::Image(LocalKind::Dir));
    }

    #[test]
    fn a_symlinked_image_path_resolves_through_trusted_directories() {
        let t = private_dir();
        let img = t.path().join("os-v1");
        layout(&img);
        std::os::unix::fs::symlink("os-v1", t.path().join("current")).unwrap();
        let found = inspect(&t.path().join("current"), LocalKind::OciDir).unwrap();
        assert!(found.read_index().is_some());
        let missing = inspect(&t.path().join("missing"), LocalKind::OciDir).unwrap_err();
        assert_eq!(missing.errno(), Some(Errno::NOENT));
    }
}
