//! Artifact archives: the deterministic `tar.gz` of a source tree, and a safe extraction.
//!
//! [`archive_dir`] follows Flux's `storage.Archive` (`fluxcd/pkg/artifact`) so that the tar
//! stream is the same bytes as Flux's for the same tree: a pre-order walk with names sorted
//! bytewise (Go's `filepath.Walk`), the root written as a `.` directory entry, only regular files
//! and directories (symlinks and special files skipped), the ignore filter applied per path,
//! names relative to the root, uid/gid 0, empty user and group names, zero times, modes `0750`
//! for directories, `0700` for files with any execute bit and `0600` for the others, and the
//! headers laid out as Go's `archive/tar` writes them (USTAR, a prefix split for long names,
//! PAX `path` records for names USTAR cannot hold). The gzip layer is `flate2`'s, whose deflate
//! output differs from Go's `compress/gzip`, so the `.tar.gz` digest differs from Flux's for the
//! same tree; the digest is still a pure function of the tree and the ignore rules.
//!
//! [`untar_gz`] and [`untar`] extract archives from elsewhere (artifacts of other sources, OCI layers, chart
//! tarballs) and treats them as hostile: see its docs.

use std::collections::HashSet;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use flate2::Compression;
use flate2::read::MultiGzDecoder;
use flate2::write::GzEncoder;
use sha2::{Digest, Sha256};

use super::ignore::IgnoreRules;

/// Mode of directories in an artifact (Flux's `DefaultDirMode`).
pub const DIR_MODE: u32 = 0o750;
/// Mode of files with any execute bit (Flux's `DefaultExeFileMode`).
pub const EXE_FILE_MODE: u32 = 0o700;
/// Mode of other files (Flux's `DefaultFileMode`).
pub const FILE_MODE: u32 = 0o600;

/// Limits on what [`archive_dir`] accepts.
#[derive(Clone, Debug, Default)]
pub struct ArchiveLimits {
    /// The largest file, in bytes, allowed into an archive; `None`: no limit.
    pub max_file_size: Option<u64>,
}

/// What [`archive_dir`] wrote.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ArchiveSummary {
    /// `sha256:<hex>` of the `.tar.gz` bytes (Flux's `artifact.digest`).
    pub digest: String,
    /// Bytes of the `.tar.gz`.
    pub size: u64,
    /// Regular files written.
    pub files: u64,
}

/// Why an archive could not be written.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error("invalid dir path: {0}")]
    NotADirectory(PathBuf),
    #[error("file '{path}' is {size} bytes, over the limit of {limit} bytes")]
    FileTooLarge { path: String, size: u64, limit: u64 },
    #[error("file '{0}' changed size while it was archived")]
    FileChanged(String),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("writing the archive: {0}")]
    Write(#[source] io::Error),
}

fn io_at(path: &Path) -> impl FnOnce(io::Error) -> ArchiveError + '_ {
    move |source| ArchiveError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// A writer that hashes (sha256) and counts what passes through it.
pub struct HashingWriter<W> {
    inner: W,
    hasher: Sha256,
    written: u64,
}

impl<W: Write> HashingWriter<W> {
    pub fn new(inner: W) -> Self {
        HashingWriter {
            inner,
            hasher: Sha256::new(),
            written: 0,
        }
    }

    /// The inner writer, `sha256:<hex>` of the bytes written and their count.
    pub fn finish(self) -> (W, String, u64) {
        let hex: String = self
            .hasher
            .finalize()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        (self.inner, format!("sha256:{hex}"), self.written)
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// `sha256:<hex>` of everything `reader` yields (Flux's digest format).
pub fn sha256_digest(mut reader: impl Read) -> io::Result<String> {
    let mut w = HashingWriter::new(io::sink());
    io::copy(&mut reader, &mut w)?;
    Ok(w.finish().1)
}

/// Writes the deterministic `tar.gz` of `src` (a directory) to `out`, leaving out what `rules`
/// ignore, and returns `out` with the summary (digest and size of the gzip bytes, computed while
/// writing). Same entries, order and headers as Flux's `storage.Archive` (module docs).
///
/// Errors: `src` is not a directory; a file over `limits.max_file_size` (named); a file that
/// changed size while read; I/O.
pub fn archive_dir<W: Write>(
    src: &Path,
    rules: &IgnoreRules,
    limits: &ArchiveLimits,
    out: W,
) -> Result<(W, ArchiveSummary), ArchiveError> {
    if !fs::metadata(src).map(|m| m.is_dir()).unwrap_or(false) {
        return Err(ArchiveError::NotADirectory(src.to_path_buf()));
    }
    let gz = GzEncoder::new(HashingWriter::new(out), Compression::default());
    let mut tar = tar::Builder::new(gz);
    let mut files = 0;
    write_entry(&mut tar, b".", true, DIR_MODE, 0, io::empty()).map_err(ArchiveError::Write)?;
    walk(&mut tar, src, &mut Vec::new(), rules, limits, &mut files)?;
    let gz = tar.into_inner().map_err(ArchiveError::Write)?;
    let (out, digest, size) = gz.finish().map_err(ArchiveError::Write)?.finish();
    Ok((
        out,
        ArchiveSummary {
            digest,
            size,
            files,
        },
    ))
}

/// Pre-order walk of `src/rel`, children sorted bytewise like Go's `filepath.Walk`. As in Flux,
/// an ignored directory's entry is left out but its files are still looked at (a later `!`
/// pattern may include them), unless no pattern re-includes anything.
fn walk<W: Write>(
    tar: &mut tar::Builder<W>,
    src: &Path,
    rel: &mut Vec<u8>,
    rules: &IgnoreRules,
    limits: &ArchiveLimits,
    files: &mut u64,
) -> Result<(), ArchiveError> {
    let dir = src.join(Path::new(std::ffi::OsStr::from_bytes(rel)));
    let mut names: Vec<_> = fs::read_dir(&dir)
        .map_err(io_at(&dir))?
        .map(|e| e.map(|e| e.file_name()))
        .collect::<Result<_, _>>()
        .map_err(io_at(&dir))?;
    names.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
    for name in names {
        let path = dir.join(&name);
        let meta = fs::symlink_metadata(&path).map_err(io_at(&path))?;
        let is_dir = meta.is_dir();
        if !(is_dir || meta.is_file()) {
            continue;
        }
        let len = rel.len();
        if !rel.is_empty() {
            rel.push(b'/');
        }
        rel.extend_from_slice(name.as_bytes());
        let rel_path = Path::new(std::ffi::OsStr::from_bytes(rel));
        let ignored = rules.is_ignored(rel_path, is_dir);
        if is_dir {
            if !ignored {
                write_entry(tar, rel, true, DIR_MODE, 0, io::empty())
                    .map_err(ArchiveError::Write)?;
            }
            if !ignored || !rules.prunes_ignored_dirs() {
                walk(tar, src, rel, rules, limits, files)?;
            }
        } else if !ignored {
            let shown = || String::from_utf8_lossy(rel).into_owned();
            let size = meta.len();
            if let Some(limit) = limits.max_file_size.filter(|l| size > *l) {
                return Err(ArchiveError::FileTooLarge {
                    path: shown(),
                    size,
                    limit,
                });
            }
            let mode = if meta.permissions().mode() & 0o111 != 0 {
                EXE_FILE_MODE
            } else {
                FILE_MODE
            };
            let file = File::open(&path).map_err(io_at(&path))?;
            let mut counted = CountingReader::new(file.take(size));
            write_entry(tar, rel, false, mode, size, &mut counted).map_err(ArchiveError::Write)?;
            let mut probe = [0u8; 1];
            let grew = counted.inner.into_inner().read(&mut probe).unwrap_or(0) > 0;
            if counted.count != size || grew {
                return Err(ArchiveError::FileChanged(shown()));
            }
            *files += 1;
        }
        rel.truncate(len);
    }
    Ok(())
}

struct CountingReader<R> {
    inner: R,
    count: u64,
}

impl<R> CountingReader<R> {
    fn new(inner: R) -> Self {
        CountingReader { inner, count: 0 }
    }
}

impl<R: Read> Read for CountingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count += n as u64;
        Ok(n)
    }
}

// Offsets of the USTAR header fields.
const NAME: (usize, usize) = (0, 100);
const MODE: (usize, usize) = (100, 108);
const UID: (usize, usize) = (108, 116);
const GID: (usize, usize) = (116, 124);
const SIZE: (usize, usize) = (124, 136);
const MTIME: (usize, usize) = (136, 148);
const CHKSUM: (usize, usize) = (148, 156);
const TYPEFLAG: usize = 156;
const MAGIC: (usize, usize) = (257, 263);
const VERSION: (usize, usize) = (263, 265);
const DEVMAJOR: (usize, usize) = (329, 337);
const DEVMINOR: (usize, usize) = (337, 345);
const PREFIX: (usize, usize) = (345, 500);

/// Go's `formatString`: copy (truncating), NUL after the string when it fits.
fn put_str(b: &mut [u8; 512], (start, end): (usize, usize), s: &[u8]) {
    let n = s.len().min(end - start);
    b[start..start + n].copy_from_slice(&s[..n]);
    if start + n < end {
        b[start + n] = 0;
    }
}

/// Go's `formatOctal`: zero-padded octal, NUL-terminated.
fn put_octal(b: &mut [u8; 512], (start, end): (usize, usize), v: u64) {
    let s = format!("{v:o}");
    let width = end - start - 1;
    put_str(b, (start, end), format!("{s:0>width$}").as_bytes());
}

/// Go's `setFormat` for USTAR and PAX: magic, version and the checksum (six octal digits, NUL,
/// space).
fn finish_block(b: &mut [u8; 512]) {
    b[MAGIC.0..MAGIC.1].copy_from_slice(b"ustar\0");
    b[VERSION.0..VERSION.1].copy_from_slice(b"00");
    let sum: u64 = b
        .iter()
        .enumerate()
        .map(|(i, c)| {
            if (148..156).contains(&i) {
                32
            } else {
                *c as u64
            }
        })
        .sum();
    put_octal(b, (CHKSUM.0, CHKSUM.1 - 1), sum);
    b[CHKSUM.1 - 1] = b' ';
}

/// Go's `templateV7Plus` with zero ids, times, names and device numbers.
fn main_block(name: &[u8], prefix: &[u8], is_dir: bool, mode: u32, size: u64) -> [u8; 512] {
    let mut b = [0u8; 512];
    b[TYPEFLAG] = if is_dir { b'5' } else { b'0' };
    put_str(&mut b, NAME, name);
    put_octal(&mut b, MODE, mode as u64);
    put_octal(&mut b, UID, 0);
    put_octal(&mut b, GID, 0);
    put_octal(&mut b, SIZE, size);
    put_octal(&mut b, MTIME, 0);
    put_octal(&mut b, DEVMAJOR, 0);
    put_octal(&mut b, DEVMINOR, 0);
    put_str(&mut b, PREFIX, prefix);
    finish_block(&mut b);
    b
}

/// Go's `isASCII` (no NUL, nothing at or above 0x80).
fn is_ascii(s: &[u8]) -> bool {
    s.iter().all(|c| *c != 0 && *c < 0x80)
}

/// Go's `toASCII`.
fn to_ascii(s: &[u8]) -> Vec<u8> {
    s.iter().copied().filter(|c| *c != 0 && *c < 0x80).collect()
}

/// Go's `splitUSTARPath`: a name over 100 bytes split at a `/` into a prefix (≤ 155) and a name
/// (≤ 100).
fn split_ustar(name: &[u8]) -> Option<(&[u8], &[u8])> {
    let mut length = name.len();
    if length <= 100 || !is_ascii(name) {
        return None;
    } else if length > 156 {
        length = 156;
    } else if name[length - 1] == b'/' {
        length -= 1;
    }
    let i = name[..length].iter().rposition(|c| *c == b'/')?;
    let (plen, nlen) = (i, name.len() - i - 1);
    if i == 0 || nlen > 100 || nlen == 0 || plen > 155 {
        return None;
    }
    Some((&name[..i], &name[i + 1..]))
}

/// Go's `formatPAXRecord`: `"<len> <key>=<value>\n"`, the length counting itself.
fn pax_record(key: &str, value: &[u8]) -> Vec<u8> {
    let mut size = key.len() + value.len() + 3;
    size += size.to_string().len();
    let rec = |size: usize| {
        let mut r = format!("{size} {key}=").into_bytes();
        r.extend_from_slice(value);
        r.push(b'\n');
        r
    };
    let r = rec(size);
    if r.len() != size { rec(r.len()) } else { r }
}

/// Writes one entry as Go's `tar.Writer.WriteHeader` would for Flux's sanitized header.
fn write_entry<W: Write>(
    tar: &mut tar::Builder<W>,
    name: &[u8],
    is_dir: bool,
    mode: u32,
    size: u64,
    data: impl Read,
) -> io::Result<()> {
    if size > 0o77777777777 {
        return Err(io::Error::other(format!(
            "'{}' is over 8 GiB, which an artifact cannot hold",
            String::from_utf8_lossy(name)
        )));
    }
    let block = if is_ascii(name) && name.len() <= 100 {
        main_block(name, b"", is_dir, mode, size)
    } else if let Some((prefix, rest)) = split_ustar(name) {
        main_block(rest, prefix, is_dir, mode, size)
    } else {
        // PAX: an extended header named `<dir>/PaxHeaders.0/<file>` carrying the path, then the
        // main header with the name made ASCII and truncated (Go's `writePAXHeader`).
        let records = pax_record("path", name);
        let split = name.iter().rposition(|c| *c == b'/').map_or(0, |i| i + 1);
        let mut pax_name = name[..split].to_vec();
        pax_name.extend_from_slice(b"PaxHeaders.0/");
        pax_name.extend_from_slice(&name[split..]);
        let mut pax_name = to_ascii(&pax_name);
        pax_name.truncate(100);
        while pax_name.last() == Some(&b'/') {
            pax_name.pop();
        }
        let mut b = [0u8; 512];
        b[TYPEFLAG] = b'x';
        put_str(&mut b, NAME, &pax_name);
        put_octal(&mut b, MODE, 0);
        put_octal(&mut b, UID, 0);
        put_octal(&mut b, GID, 0);
        put_octal(&mut b, SIZE, records.len() as u64);
        put_octal(&mut b, MTIME, 0);
        finish_block(&mut b);
        tar.append(&header(b), records.as_slice())?;
        main_block(&to_ascii(name), b"", is_dir, mode, size)
    };
    tar.append(&header(block), data)
}

fn header(block: [u8; 512]) -> tar::Header {
    let mut h = tar::Header::new_old();
    h.as_mut_bytes().copy_from_slice(&block);
    h
}

/// Limits for [`untar_gz`]; the defaults are Flux's (`DefaultMaxUntarSize`, 100 MiB) and
/// links are refused, as Flux's `Untar` without `WithSkipSymlinks`.
#[derive(Clone, Debug)]
pub struct UntarLimits {
    /// The sum of the entries' sizes, in bytes (a gzip bomb stops here).
    pub max_total_size: u64,
    /// The largest single file, in bytes.
    pub max_file_size: u64,
    /// The most entries (a bomb of empty files stops here).
    pub max_entries: u64,
    /// Skip symbolic and hard links instead of failing.
    pub skip_links: bool,
}

impl Default for UntarLimits {
    fn default() -> Self {
        UntarLimits {
            max_total_size: 100 << 20,
            max_file_size: 100 << 20,
            max_entries: 100_000,
            skip_links: false,
        }
    }
}

/// What [`untar_gz`] extracted.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UntarSummary {
    pub files: u64,
    pub dirs: u64,
    /// Sum of the files' sizes.
    pub bytes: u64,
    /// Links skipped (only with `skip_links`).
    pub skipped_links: u64,
}

/// Why an archive was not (fully) extracted. Entry names are shown as in the archive.
#[derive(Debug, thiserror::Error)]
pub enum UntarError {
    #[error("reading the archive: {0}")]
    Read(#[source] io::Error),
    #[error("tar contained invalid name '{0}'")]
    UnsafePath(String),
    #[error("tar entry '{0}' is a link, which is not allowed in this context")]
    Link(String),
    #[error("tar entry '{name}' has unsupported type {kind}")]
    Unsupported { name: String, kind: String },
    #[error("tar entry '{name}' is {size} bytes, over the limit of {limit} bytes")]
    FileTooLarge { name: String, size: u64, limit: u64 },
    #[error("tar is bigger than the max archive size of {limit} bytes")]
    TotalTooLarge { limit: u64 },
    #[error("tar has more than {limit} entries")]
    TooManyEntries { limit: u64 },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// Extracts the `tar.gz` read from `reader` into `dest`: [`untar`] of the gunzipped stream
/// (multi-member gzip read whole, as Go's reader does). The limits count decompressed bytes.
pub fn untar_gz(
    reader: impl Read,
    dest: &Path,
    limits: &UntarLimits,
) -> Result<UntarSummary, UntarError> {
    untar(MultiGzDecoder::new(reader), dest, limits)
}

/// Extracts the plain tar read from `reader` into `dest` (created if missing), treating the
/// archive as hostile: an absolute name, a `..` component, a path through a symlink already
/// under `dest`, a device, FIFO or other special entry, a file over `limits.max_file_size`, more than
/// `limits.max_total_size` bytes in all (counted from the headers before anything is written,
/// and on the (decompressed) stream) or more than `limits.max_entries` entries is an error, and
/// nothing is ever written outside `dest`. Links (symbolic and hard) are an error unless
/// `skip_links`, then skipped: no link is ever created. File modes keep their execute and read
/// bits, never group/other write, setuid or sticky; times are not restored.
///
/// Like Flux's `fluxcd/pkg/tar.Untar`; an error leaves what was extracted so far in `dest` (the
/// caller extracts into a fresh directory and removes it).
pub fn untar(
    reader: impl Read,
    dest: &Path,
    limits: &UntarLimits,
) -> Result<UntarSummary, UntarError> {
    fs::create_dir_all(dest).map_err(|source| UntarError::Io {
        path: dest.to_path_buf(),
        source,
    })?;
    // Headers and padding add at most a few blocks per entry; this caps what is decompressed
    // even if the tar reader buffers something the headers do not account for (PAX records).
    let cap = limits
        .max_total_size
        .saturating_add(limits.max_entries.saturating_mul(3 * 512))
        .saturating_add(1 << 20);
    let decoded = CappedReader {
        inner: reader,
        left: cap,
        limit: limits.max_total_size,
    };
    let mut archive = tar::Archive::new(decoded);
    let mut summary = UntarSummary::default();
    let mut entries_seen = 0u64;
    let mut total = 0u64;
    let mut checked_dirs: HashSet<PathBuf> = HashSet::new();
    for entry in archive.entries().map_err(map_read)? {
        let mut entry = entry.map_err(map_read)?;
        entries_seen += 1;
        if entries_seen > limits.max_entries {
            return Err(UntarError::TooManyEntries {
                limit: limits.max_entries,
            });
        }
        let raw_name = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        let kind = entry.header().entry_type();
        if kind.is_pax_global_extensions() {
            continue;
        }
        let rel = safe_rel_path(&entry.path().map_err(map_read)?)
            .ok_or_else(|| UntarError::UnsafePath(raw_name.clone()))?;
        let size = entry.size();
        total = total.saturating_add(size);
        if total > limits.max_total_size {
            return Err(UntarError::TotalTooLarge {
                limit: limits.max_total_size,
            });
        }
        if kind.is_symlink() || kind.is_hard_link() {
            if limits.skip_links {
                summary.skipped_links += 1;
                continue;
            }
            return Err(UntarError::Link(raw_name));
        }
        let is_file = kind.is_file() || kind.is_contiguous();
        if !(is_file || kind.is_dir()) {
            return Err(UntarError::Unsupported {
                name: raw_name,
                kind: format!("{kind:?}"),
            });
        }
        if rel.as_os_str().is_empty() {
            if kind.is_dir() {
                continue; // `.` or `./`: dest itself
            }
            return Err(UntarError::UnsafePath(raw_name));
        }
        let target = dest.join(&rel);
        let io = |source| UntarError::Io {
            path: target.clone(),
            source,
        };
        // Never write through a symlink that was in `dest` before (we create none).
        check_no_symlink(dest, &rel, &mut checked_dirs)
            .map_err(|_| UntarError::UnsafePath(raw_name.clone()))?;
        if kind.is_dir() {
            fs::create_dir_all(&target).map_err(io)?;
            summary.dirs += 1;
            continue;
        }
        if size > limits.max_file_size {
            return Err(UntarError::FileTooLarge {
                name: raw_name,
                size,
                limit: limits.max_file_size,
            });
        }
        if let Some(parent) = target.parent() {
            fs::create_dir_all(parent).map_err(io)?;
        }
        if let Ok(m) = fs::symlink_metadata(&target)
            && !m.is_file()
        {
            return Err(UntarError::UnsafePath(raw_name));
        }
        let mode = entry.header().mode().unwrap_or(FILE_MODE) & 0o755 | 0o600;
        let mut out = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&target)
            .map_err(io)?;
        let written = io::copy(&mut (&mut entry).take(size), &mut out).map_err(map_read)?;
        if written != size {
            return Err(UntarError::Read(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("'{raw_name}' is truncated"),
            )));
        }
        fs::set_permissions(&target, fs::Permissions::from_mode(mode)).map_err(io)?;
        summary.files += 1;
        summary.bytes += size;
    }
    Ok(summary)
}

/// The relative path an entry name stands for, `None` if it would leave the destination.
fn safe_rel_path(name: &Path) -> Option<PathBuf> {
    let mut rel = PathBuf::new();
    for c in name.components() {
        match c {
            Component::Normal(part) => rel.push(part),
            Component::CurDir => {}
            Component::ParentDir | Component::RootDir | Component::Prefix(_) => return None,
        }
    }
    Some(rel)
}

/// Errs when a directory on the way from `dest` to `rel` is a symlink.
fn check_no_symlink(dest: &Path, rel: &Path, checked: &mut HashSet<PathBuf>) -> io::Result<()> {
    let mut at = PathBuf::new();
    let parts: Vec<_> = rel.components().collect();
    for part in &parts[..parts.len().saturating_sub(1)] {
        at.push(part);
        if checked.contains(&at) {
            continue;
        }
        match fs::symlink_metadata(dest.join(&at)) {
            Ok(m) if m.file_type().is_symlink() => {
                return Err(io::Error::other("path through a symlink"));
            }
            Ok(_) => {
                checked.insert(at.clone());
            }
            Err(_) => {} // not there yet: created by us as a directory
        }
    }
    Ok(())
}

fn map_read(e: io::Error) -> UntarError {
    if let Some(limit) = e
        .get_ref()
        .and_then(|i| i.downcast_ref::<OverLimit>())
        .map(|o| o.0)
    {
        return UntarError::TotalTooLarge { limit };
    }
    UntarError::Read(e)
}

#[derive(Debug)]
struct OverLimit(u64);

impl std::fmt::Display for OverLimit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "decompressed archive over {} bytes", self.0)
    }
}

impl std::error::Error for OverLimit {}

/// Fails once more than `left` bytes were read: the hard cap on decompression.
struct CappedReader<R> {
    inner: R,
    left: u64,
    limit: u64,
}

impl<R: Read> Read for CappedReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.left == 0 {
            // One byte more tells a stream that ends exactly here from one that goes on.
            let mut probe = [0u8; 1];
            return match self.inner.read(&mut probe)? {
                0 => Ok(0),
                _ => Err(io::Error::other(OverLimit(self.limit))),
            };
        }
        let max = buf.len().min(self.left.min(usize::MAX as u64) as usize);
        let n = self.inner.read(&mut buf[..max])?;
        self.left -= n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests;
