//! The artifact storage: files under `<root>/<kind lowercase>/<namespace>/<name>/<file>`, written
//! atomically, garbage-collected, served over HTTP ([`Storage::routes`]).
//!
//! Same layout, URLs and retention as Flux's `fluxcd/pkg/artifact/storage` (source-controller's
//! `--storage-path`, `--storage-adv-addr`, `--artifact-retention-ttl`,
//! `--artifact-retention-records`). Differences, each on purpose:
//! - temp files are named `.tmp-*` and are never served nor counted by GC (Flux's temp files sit
//!   next to the artifact under a name its file server would serve); stale ones (a crash
//!   mid-write) are removed by GC once older than the TTL;
//! - the per-artifact lock is an in-process mutex per object directory, not a `<file>.lock`
//!   file: one pennant process (the leader) writes the storage, so a file lock only adds files;
//! - GC keeps exactly `records` files when TTL and count both apply (Flux's loop double-counts
//!   the files it already collected and can keep more), and orders files of equal mtime by name
//!   (Flux keys a map by mtime and can drop one of them from the ordering);
//! - the `latest.tar.gz` / `index.yaml` symlinks point at the file name (relative), and their
//!   URL keeps a scheme given in the advertised address as the artifact URL does.
//!
//! All methods do blocking file I/O: call them from `spawn_blocking`.

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use k8s_openapi::jiff::Timestamp;

use super::artifact::{self, ArchiveError, ArchiveLimits, HashingWriter};
use super::ignore::IgnoreRules;

/// Temp files start with this; no artifact name may.
pub const TEMP_PREFIX: &str = ".tmp-";

/// At most this many files of one object directory are looked at by GC (Flux's
/// `GarbageCountLimit`).
pub const GC_FILE_LIMIT: usize = 1000;

/// How many old artifacts are kept (Flux's `--artifact-retention-records` and
/// `--artifact-retention-ttl`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Retention {
    /// Files kept per object directory, the current one included (default 2).
    pub records: usize,
    /// Files other than the current one older than this (by mtime) are removed (default 60 s).
    pub ttl: Duration,
}

impl Default for Retention {
    fn default() -> Self {
        Retention {
            records: 2,
            ttl: Duration::from_secs(60),
        }
    }
}

/// A stored artifact: what a source's `status.artifact` reports (minus `revision`, which the
/// controller knows).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredArtifact {
    /// Relative to the storage root: `<kind lowercase>/<namespace>/<name>/<file>`.
    pub path: String,
    /// `http://<advertised address>/<path>` ([`Storage::url_for`]).
    pub url: String,
    /// `sha256:<hex>` of the file's bytes.
    pub digest: String,
    /// Bytes.
    pub size: u64,
    /// When the file was written.
    pub last_update_time: Timestamp,
}

impl StoredArtifact {
    /// The `status.artifact` of this file: its `revision` and `metadata` (e.g. an OCI
    /// manifest's annotations) are the kind's.
    pub fn into_artifact(
        self,
        revision: String,
        metadata: Option<std::collections::BTreeMap<String, String>>,
    ) -> crate::api::source::Artifact {
        crate::api::source::Artifact {
            path: self.path,
            url: self.url,
            revision,
            digest: self.digest,
            last_update_time: k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                self.last_update_time,
            ),
            size: i64::try_from(self.size).ok(),
            metadata,
        }
    }
}

/// Why a storage operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("invalid artifact path component '{0}'")]
    InvalidName(String),
    #[error(transparent)]
    Archive(#[from] ArchiveError),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

fn io_at(path: &Path) -> impl FnOnce(io::Error) -> StorageError + '_ {
    move |source| StorageError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The storage directory of the process. Cheap to clone (the locks are shared).
#[derive(Clone, Debug)]
pub struct Storage {
    /// The storage root (Flux's `--storage-path`).
    pub root: PathBuf,
    /// Host (and port) or URL prefix in artifact URLs (Flux's `--storage-adv-addr`).
    pub advertised_addr: String,
    pub retention: Retention,
    /// Largest file allowed into an archive ([`Storage::archive_dir`]); `None`: no limit.
    pub max_file_size: Option<u64>,
    /// One mutex per object directory (`kind/ns/name`); entries live as long as the process.
    locks: Arc<Mutex<HashMap<String, Arc<Mutex<()>>>>>,
}

/// Whether `s` is one plain path component: not empty, not `.` or `..`, no `/`, `\` or NUL.
pub(crate) fn valid_component(s: &str) -> bool {
    !s.is_empty() && s != "." && s != ".." && !s.contains(['/', '\\', '\0'])
}

/// A file name an artifact may have: a plain component that is not hidden (temp files are).
pub(crate) fn valid_file_name(s: &str) -> bool {
    valid_component(s) && !s.starts_with('.')
}

impl Storage {
    pub fn new(
        root: impl Into<PathBuf>,
        advertised_addr: impl Into<String>,
        retention: Retention,
    ) -> Storage {
        Storage {
            root: root.into(),
            advertised_addr: advertised_addr.into(),
            retention,
            max_file_size: None,
            locks: Arc::default(),
        }
    }

    /// `<kind lowercase>/<ns>/<name>`, checked to be three plain components (Flux's
    /// `ArtifactDir`, with its secure join's guarantee: nothing leaves the root).
    pub fn artifact_dir(kind: &str, ns: &str, name: &str) -> Result<String, StorageError> {
        let kind = kind.to_lowercase();
        for c in [kind.as_str(), ns, name] {
            if !valid_component(c) {
                return Err(StorageError::InvalidName(c.to_string()));
            }
        }
        Ok(format!("{kind}/{ns}/{name}"))
    }

    /// `<kind lowercase>/<ns>/<name>/<file>` (Flux's `ArtifactPath`); `file` may not be hidden.
    pub fn artifact_path(
        kind: &str,
        ns: &str,
        name: &str,
        file: &str,
    ) -> Result<String, StorageError> {
        if !valid_file_name(file) {
            return Err(StorageError::InvalidName(file.to_string()));
        }
        Ok(format!("{}/{file}", Self::artifact_dir(kind, ns, name)?))
    }

    /// The local path of a relative artifact path; `None` if it has anything but plain
    /// components (so it cannot leave the root).
    pub fn local_path(&self, rel_path: &str) -> Option<PathBuf> {
        let rel = rel_path.trim_start_matches('/');
        rel.split('/')
            .all(valid_component)
            .then(|| self.root.join(rel))
    }

    /// The artifact URL: `http://<advertised address>/<path>`, or `<address>/<path>` when the
    /// address already has an `http://` or `https://` scheme (Flux's `SetArtifactURL`).
    pub fn url_for(&self, rel_path: &str) -> String {
        let path = rel_path.trim_start_matches('/');
        let adv = &self.advertised_addr;
        if adv.starts_with("http://") || adv.starts_with("https://") {
            format!("{}/{path}", adv.trim_end_matches('/'))
        } else {
            format!("http://{adv}/{path}")
        }
    }

    fn lock(&self, dir: &str) -> Arc<Mutex<()>> {
        let mut locks = self.locks.lock().unwrap_or_else(|e| e.into_inner());
        locks.entry(dir.to_string()).or_default().clone()
    }

    /// Writes `file_name` of the object atomically: `write` fills a temp file in the same
    /// directory through a hashing writer; the file is fsynced, chmod 0600 and renamed into
    /// place, under the object's lock. A failure removes the temp file; nothing half-written is
    /// ever at the artifact's path.
    fn write_atomic<T>(
        &self,
        kind: &str,
        ns: &str,
        name: &str,
        file_name: &str,
        write: impl FnOnce(HashingWriter<File>) -> Result<(HashingWriter<File>, T), StorageError>,
    ) -> Result<(StoredArtifact, T), StorageError> {
        let path = Self::artifact_path(kind, ns, name, file_name)?;
        let dir_rel = Self::artifact_dir(kind, ns, name)?;
        let dir = self.root.join(&dir_rel);
        let lock = self.lock(&dir_rel);
        let _held = lock.lock().unwrap_or_else(|e| e.into_inner());
        fs::DirBuilder::new()
            .recursive(true)
            .create(&dir)
            .map_err(io_at(&dir))?;
        let tmp = tempfile::Builder::new()
            .prefix(TEMP_PREFIX)
            .tempfile_in(&dir)
            .map_err(io_at(&dir))?;
        let file = tmp.as_file().try_clone().map_err(io_at(tmp.path()))?;
        let (w, extra) = write(HashingWriter::new(file))?;
        let (file, digest, size) = w.finish();
        file.sync_all().map_err(io_at(tmp.path()))?;
        fs::set_permissions(tmp.path(), fs::Permissions::from_mode(0o600))
            .map_err(io_at(tmp.path()))?;
        let target = dir.join(file_name);
        tmp.persist(&target).map_err(|e| StorageError::Io {
            path: target.clone(),
            source: e.error,
        })?;
        // The rename is durable once the directory is.
        File::open(&dir)
            .and_then(|d| d.sync_all())
            .map_err(io_at(&dir))?;
        Ok((
            StoredArtifact {
                url: self.url_for(&path),
                path,
                digest,
                size,
                last_update_time: Timestamp::now(),
            },
            extra,
        ))
    }

    /// Archives `src_dir` (Flux's `Archive`: [`artifact::archive_dir`] with `rules` and
    /// `self.max_file_size`) into `<kind>/<ns>/<name>/<file_name>`, atomically.
    ///
    /// Errors: an invalid name, an archive error (a file over the limit is named), I/O.
    pub fn archive_dir(
        &self,
        kind: &str,
        ns: &str,
        name: &str,
        file_name: &str,
        src_dir: &Path,
        rules: &IgnoreRules,
    ) -> Result<StoredArtifact, StorageError> {
        let limits = ArchiveLimits {
            max_file_size: self.max_file_size,
        };
        let (stored, _) = self.write_atomic(kind, ns, name, file_name, |w| {
            let (w, summary) = artifact::archive_dir(src_dir, rules, &limits, w)?;
            Ok((w, summary))
        })?;
        Ok(stored)
    }

    /// Stores what `reader` yields (e.g. a downloaded chart `.tgz` or `index.yaml`, streamed)
    /// as `<kind>/<ns>/<name>/<file_name>`, atomically.
    pub fn store_reader(
        &self,
        kind: &str,
        ns: &str,
        name: &str,
        file_name: &str,
        mut reader: impl Read,
    ) -> Result<StoredArtifact, StorageError> {
        let (stored, _) = self.write_atomic(kind, ns, name, file_name, |mut w| {
            io::copy(&mut reader, &mut w).map_err(|source| StorageError::Io {
                path: PathBuf::from(file_name),
                source,
            })?;
            w.flush().map_err(io_at(Path::new(file_name)))?;
            Ok((w, ()))
        })?;
        Ok(stored)
    }

    /// [`Storage::store_reader`] of a file on disk.
    pub fn store_file(
        &self,
        kind: &str,
        ns: &str,
        name: &str,
        file_name: &str,
        src: &Path,
    ) -> Result<StoredArtifact, StorageError> {
        let f = File::open(src).map_err(io_at(src))?;
        self.store_reader(kind, ns, name, file_name, f)
    }

    /// [`Storage::store_reader`] of bytes in memory.
    pub fn store_bytes(
        &self,
        kind: &str,
        ns: &str,
        name: &str,
        file_name: &str,
        bytes: &[u8],
    ) -> Result<StoredArtifact, StorageError> {
        self.store_reader(kind, ns, name, file_name, bytes)
    }

    /// Whether the artifact at `rel_path` is a regular file (Flux's `ArtifactExist`).
    pub fn exists(&self, rel_path: &str) -> bool {
        self.local_path(rel_path)
            .and_then(|p| fs::symlink_metadata(p).ok())
            .is_some_and(|m| m.is_file())
    }

    /// Whether the file at `rel_path` re-hashes to `digest` (`sha256:<hex>`; Flux's
    /// `VerifyArtifact`). False when missing, unreadable, or of another algorithm.
    pub fn verify(&self, rel_path: &str, digest: &str) -> bool {
        let Some(path) = self.local_path(rel_path) else {
            return false;
        };
        digest.starts_with("sha256:")
            && File::open(path)
                .and_then(artifact::sha256_digest)
                .is_ok_and(|d| d == digest)
    }

    /// Points `<dir>/<link_name>` (e.g. `latest.tar.gz`, `index.yaml`) at `file_name` in the same
    /// directory, atomically (a temp link renamed over it), and returns the link's URL (Flux's
    /// `Symlink`, for `status.url`).
    pub fn symlink(
        &self,
        kind: &str,
        ns: &str,
        name: &str,
        file_name: &str,
        link_name: &str,
    ) -> Result<String, StorageError> {
        Self::artifact_path(kind, ns, name, file_name)?;
        let link_path = Self::artifact_path(kind, ns, name, link_name)?;
        let dir_rel = Self::artifact_dir(kind, ns, name)?;
        let dir = self.root.join(&dir_rel);
        let lock = self.lock(&dir_rel);
        let _held = lock.lock().unwrap_or_else(|e| e.into_inner());
        let tmp = dir.join(format!("{TEMP_PREFIX}{link_name}"));
        match fs::remove_file(&tmp) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(io_at(&tmp)(e)),
            _ => {}
        }
        std::os::unix::fs::symlink(file_name, &tmp).map_err(io_at(&tmp))?;
        let link = dir.join(link_name);
        fs::rename(&tmp, &link).map_err(io_at(&link))?;
        Ok(self.url_for(&link_path))
    }

    /// Removes old artifacts of the object (Flux's `GarbageCollect`, algorithm in [`garbage`])
    /// and temp files older than the TTL; `current_file` is never removed. Returns the removed
    /// paths. A missing directory is no garbage.
    pub fn gc(
        &self,
        kind: &str,
        ns: &str,
        name: &str,
        current_file: Option<&str>,
        now: SystemTime,
    ) -> Result<Vec<PathBuf>, StorageError> {
        let dir_rel = Self::artifact_dir(kind, ns, name)?;
        let dir = self.root.join(&dir_rel);
        let lock = self.lock(&dir_rel);
        let _held = lock.lock().unwrap_or_else(|e| e.into_inner());
        let entries = match fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(vec![]),
            Err(e) => return Err(io_at(&dir)(e)),
        };
        let mut files = vec![];
        let mut removed = vec![];
        for entry in entries {
            if files.len() >= GC_FILE_LIMIT {
                break;
            }
            let entry = entry.map_err(io_at(&dir))?;
            let meta = entry.metadata().map_err(io_at(&entry.path()))?;
            let file_name = entry.file_name().to_string_lossy().into_owned();
            if !meta.is_file() || file_name.ends_with(".lock") {
                continue;
            }
            let mtime = meta.modified().map_err(io_at(&entry.path()))?;
            if file_name.starts_with(TEMP_PREFIX) {
                if expired(now, mtime, self.retention.ttl) {
                    remove(&entry.path(), &mut removed)?;
                }
                continue;
            }
            files.push((file_name, mtime));
        }
        for file in garbage(&files, current_file, now, &self.retention) {
            remove(&dir.join(file), &mut removed)?;
        }
        Ok(removed)
    }

    /// Removes the object's whole directory (on deletion of the object; Flux's `RemoveAll`).
    /// Returns whether there was one.
    pub fn remove_all(&self, kind: &str, ns: &str, name: &str) -> Result<bool, StorageError> {
        let dir_rel = Self::artifact_dir(kind, ns, name)?;
        let dir = self.root.join(&dir_rel);
        let lock = self.lock(&dir_rel);
        let _held = lock.lock().unwrap_or_else(|e| e.into_inner());
        match fs::remove_dir_all(&dir) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(io_at(&dir)(e)),
        }
    }
}

fn expired(now: SystemTime, mtime: SystemTime, ttl: Duration) -> bool {
    now.duration_since(mtime).is_ok_and(|age| age > ttl)
}

fn remove(path: &Path, removed: &mut Vec<PathBuf>) -> Result<(), StorageError> {
    match fs::remove_file(path) {
        Ok(()) => removed.push(path.to_path_buf()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_at(path)(e)),
    }
    Ok(())
}

/// Which of an object's artifact `files` (name, mtime; lock files, symlinks and temp files
/// already left out) are garbage at `now` (Flux's `GetGarbageFiles`):
/// 1. every file but `current` older than the TTL;
/// 2. if more than `records` files remain, the oldest others too (by mtime, then name) until
///    `records` remain. `current` is never garbage and counts towards `records`.
pub fn garbage(
    files: &[(String, SystemTime)],
    current: Option<&str>,
    now: SystemTime,
    retention: &Retention,
) -> Vec<String> {
    let is_current = |f: &str| current == Some(f);
    let mut out: Vec<String> = files
        .iter()
        .filter(|(f, mtime)| !is_current(f) && expired(now, *mtime, retention.ttl))
        .map(|(f, _)| f.clone())
        .collect();
    let mut by_age: Vec<&(String, SystemTime)> = files.iter().collect();
    by_age.sort_by(|a, b| a.1.cmp(&b.1).then_with(|| a.0.cmp(&b.0)));
    for (f, _) in by_age {
        if files.len() - out.len() <= retention.records {
            break;
        }
        if !is_current(f) && !out.contains(f) {
            out.push(f.clone());
        }
    }
    out
}

#[cfg(test)]
mod tests;
