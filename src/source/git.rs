//! Fetching a Git source the way Flux's source-controller does (flux.md §1.2), with gix.
//!
//! [`fetch`] is blocking (gix's blocking client; run it with `tokio::task::spawn_blocking`). It
//! resolves the reference with one handshake + `ls-refs`; when the remote commit is the one of
//! `last_revision` it returns [`Fetched::Unchanged`] without downloading any object (Flux's
//! "optimised clone"). Otherwise it fetches that one commit shallowly (depth 1) into a private
//! object store and checks its tree out into `dest` (no `.git` there).
//!
//! With `recurse_submodules` (Flux's `spec.recurseSubmodules`), each submodule of the checked
//! out tree (a gitlink with a `.gitmodules` entry) is fetched the same way, at the commit the
//! tree records, and checked out into its path; recursively, up to
//! [`MAX_SUBMODULE_DEPTH`] levels (go-git's default, which Flux uses). A relative URL
//! (`./x`, `../x`) resolves against the superproject's URL ([`submodule_url`]); the parent's
//! credentials are sent only to the parent's host. The revision stays the parent's.
//! `sparse_checkout` (Flux's `spec.sparseCheckout`) checks out only the files under the given
//! directories (and fetches only the submodules there).
//!
//! Transports: `http`/`https` (basic auth or bearer token, custom CA bundle merged with the
//! system roots; gix's reqwest backend), `ssh` (gix runs the `ssh` program with the identity and
//! `known_hosts` written to private temporary files) and `file` (tests, local mirrors).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use gix::bstr::ByteSlice;
use gix::protocol::handshake::Ref;
use gix::protocol::transport::client::blocking_io::http;
use gix::remote::Direction;

/// Which commit to fetch; precedence is the caller's (pennant rejects ambiguous refs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GitRef {
    /// `ref.branch`; revision `<branch>@sha1:<hex>`.
    Branch(String),
    /// `ref.tag`; revision `<tag>@sha1:<hex>`.
    Tag(String),
    /// `ref.semver`: the highest tag matching this Masterminds constraint
    /// ([`crate::source::semver`]); revision `<tag>@sha1:<hex>`.
    Semver(String),
    /// `ref.commit` (40 hex), optionally with `ref.branch`; revision `<branch>@sha1:<hex>`, or
    /// `sha1:<hex>` without a branch.
    Commit { sha: String, branch: Option<String> },
    /// `ref.name`, a full ref such as `refs/heads/main` or `refs/pull/1/head`; revision
    /// `<full ref>@sha1:<hex>`.
    Name(String),
}

impl Default for GitRef {
    /// Flux's default when `spec.ref` is empty: branch `master`.
    fn default() -> Self {
        GitRef::Branch("master".into())
    }
}

/// Credentials from the `secretRef` Secret (Flux's keys in comments).
#[derive(Clone, Default)]
pub enum GitAuth {
    #[default]
    None,
    /// `username` + `password`, sent pre-emptively as HTTP basic auth.
    Basic { username: String, password: String },
    /// `bearerToken`, sent as `Authorization: Bearer`.
    Bearer(String),
    /// `identity` (PEM/OpenSSH private key), `known_hosts`, optional `password` of the key.
    Ssh {
        identity: Vec<u8>,
        known_hosts: Vec<u8>,
        password: Option<String>,
    },
}

impl std::fmt::Debug for GitAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print secrets, not even in debug logs.
        f.write_str(match self {
            GitAuth::None => "None",
            GitAuth::Basic { .. } => "Basic(***)",
            GitAuth::Bearer(_) => "Bearer(***)",
            GitAuth::Ssh { .. } => "Ssh(***)",
        })
    }
}

/// One fetch. Owned so it can move into `spawn_blocking`.
#[derive(Debug, Clone)]
pub struct FetchRequest {
    /// `http://`, `https://`, `ssh://` or `file://` URL (Flux accepts the first three; scp-like
    /// `git@host:path` is rejected as in Flux).
    pub url: String,
    pub reference: GitRef,
    pub auth: GitAuth,
    /// PEM bundle (`ca.crt`) trusted for https in addition to the system roots.
    pub ca_pem: Option<Vec<u8>>,
    /// Bound on the whole fetch (Flux's `spec.timeout`, default 60 s): past it the transfer and
    /// checkout are interrupted and the result is a [`GitError::GitOperationFailed`] naming
    /// the timeout. Also each HTTP request's and the ssh connect's bound.
    pub timeout: Duration,
    /// `status.artifact.revision` of the last stored artifact, any Flux form (`main@sha1:<hex>`,
    /// `sha1:<hex>`, legacy `main/<hex>`): only its commit hash is compared, as Flux does.
    pub last_revision: Option<String>,
    /// Directory the tree is checked out into; must be empty or absent. Untouched when
    /// the result is [`Fetched::Unchanged`]; removed again on an error when it was absent.
    /// The fetch's private object store is created beside it (in its parent directory) and
    /// removed before [`fetch`] returns, whatever the result: a caller that owns the parent
    /// owns every byte of the fetch.
    pub dest: PathBuf,
    /// Set by the caller (e.g. on shutdown) to stop the fetch: gix checks it while receiving
    /// the pack and checking out, and [`fetch`] between its phases; the result is then a
    /// [`GitError::GitOperationFailed`] saying it was interrupted.
    pub interrupt: Arc<AtomicBool>,
    /// Fetch and check out the submodules too (see the module docs).
    pub recurse_submodules: bool,
    /// Directories (relative to the repository root; a leading `./` and trailing `/` are
    /// ignored) whose files alone are checked out; everything when empty. A directory that is
    /// not in the tree is a [`GitError::SparseCheckout`].
    pub sparse_checkout: Vec<String>,
}

/// How deep submodules of submodules are fetched (go-git's `DefaultSubmoduleRecursionDepth`).
pub const MAX_SUBMODULE_DEPTH: u32 = 10;

/// What [`fetch`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fetched {
    /// The remote still points at the commit of `last_revision`; nothing was downloaded.
    /// `revision` is the current revision string (it changes when only the ref changed).
    Unchanged { revision: String },
    /// The tree of `commit_sha` is in `dest`.
    Checked {
        /// Flux's RFC-0005 revision, e.g. `main@sha1:<40 hex>`.
        revision: String,
        /// 40 hex.
        commit_sha: String,
        /// First line of the commit message (Flux's "stored artifact for commit '…'").
        commit_message: String,
    },
}

impl Fetched {
    pub fn revision(&self) -> &str {
        match self {
            Fetched::Unchanged { revision } | Fetched::Checked { revision, .. } => revision,
        }
    }
}

/// Why a fetch failed; [`GitError::reason`] is the `FetchFailed` condition reason Flux uses.
/// Messages never contain credentials (URL userinfo, passwords, tokens are redacted).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GitError {
    #[error("invalid Git URL: {0}")]
    UrlInvalid(String),
    #[error("authentication failed: {0}")]
    AuthenticationFailed(String),
    #[error("{0}")]
    GitOperationFailed(String),
    /// A `sparse_checkout` directory is not in the fetched tree (Flux's message).
    #[error("failed to sparse checkout directories : {0}")]
    SparseCheckout(String),
}

impl GitError {
    /// `URLInvalid`, `AuthenticationFailed` or `GitOperationFailed` (Flux's condition reasons).
    pub fn reason(&self) -> &'static str {
        match self {
            GitError::UrlInvalid(_) => "URLInvalid",
            GitError::AuthenticationFailed(_) => "AuthenticationFailed",
            GitError::GitOperationFailed(_) | GitError::SparseCheckout(_) => "GitOperationFailed",
        }
    }
}

/// Flux's RFC-0005 revision for `commit` (40 hex) fetched through `reference`; `resolved_ref` is
/// the full ref it came from (`refs/tags/v1.2.3` for a semver pick).
pub fn revision(reference: &GitRef, resolved_ref: &str, commit: &str) -> String {
    let short = |full: &str| {
        // Same as Flux's `Commit.String()`: drop the first two path segments.
        full.splitn(3, '/').nth(2).unwrap_or(full).to_string()
    };
    match reference {
        GitRef::Name(name) => format!("{name}@sha1:{commit}"),
        GitRef::Commit { branch: None, .. } => format!("sha1:{commit}"),
        GitRef::Commit {
            branch: Some(b), ..
        } => format!("{b}@sha1:{commit}"),
        _ => format!("{}@sha1:{commit}", short(resolved_ref)),
    }
}

/// The commit hash in a stored revision (`main@sha1:<hex>`, `sha1:<hex>`, `main/<hex>`).
pub fn revision_hash(revision: &str) -> &str {
    if let Some((_, h)) = revision.rsplit_once(':') {
        return h;
    }
    revision.rsplit_once('/').map_or(revision, |(_, h)| h)
}

/// Fetches `req` (see the module docs). Blocking; returns by `req.timeout` (plus the time
/// gix takes to notice the interrupt, well under a second) or soon after `req.interrupt` is set.
pub fn fetch(req: &FetchRequest) -> Result<Fetched, GitError> {
    let secrets = Secrets::of(req);
    // A watchdog raises `stop` at the deadline or when the caller interrupts: gix takes a
    // single flag, and the caller's must not be set by a timeout.
    let stop = Arc::new(AtomicBool::new(false));
    let timed_out = Arc::new(AtomicBool::new(false));
    let (done, finished) = std::sync::mpsc::channel::<()>();
    let deadline = std::time::Instant::now() + req.timeout;
    let watchdog = {
        let (stop, timed_out, external) = (stop.clone(), timed_out.clone(), req.interrupt.clone());
        std::thread::spawn(move || {
            while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) =
                finished.recv_timeout(Duration::from_millis(50))
            {
                if std::time::Instant::now() >= deadline {
                    timed_out.store(true, Ordering::SeqCst);
                } else if !external.load(Ordering::SeqCst) {
                    continue;
                }
                stop.store(true, Ordering::SeqCst);
                return;
            }
        })
    };
    let dest_existed = req.dest.exists();
    let result = fetch_at(req, &stop, req.dest.parent(), 0);
    drop(done);
    let _ = watchdog.join();
    let result = match result {
        // (an HTTP request's own timeout may fire first: same cause)
        Err(_) if timed_out.load(Ordering::SeqCst) || std::time::Instant::now() >= deadline => {
            Err(GitError::GitOperationFailed(format!(
                "timeout of {:?} (spec.timeout) reached, fetch interrupted",
                req.timeout
            )))
        }
        Err(_) if stop.load(Ordering::SeqCst) => Err(GitError::GitOperationFailed(
            "fetch interrupted (the controller is stopping or gave up)".into(),
        )),
        r => r,
    };
    if result.is_err() && !dest_existed {
        let _ = std::fs::remove_dir_all(&req.dest);
    }
    result.map_err(|e| secrets.redact(e))
}

/// An error when `stop` is set (checked between the fetch's phases).
fn check(stop: &AtomicBool) -> Result<(), GitError> {
    if stop.load(Ordering::SeqCst) {
        return Err(GitError::GitOperationFailed("interrupted".into()));
    }
    Ok(())
}

/// One repository's fetch and checkout (the parent's, or a submodule's at `depth` > 0), its
/// private object store in `scratch`.
fn fetch_at(
    req: &FetchRequest,
    stop: &AtomicBool,
    scratch: Option<&Path>,
    depth: u32,
) -> Result<Fetched, GitError> {
    // reqwest is built without a default crypto provider; the binary installs ring, so do tests.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let url = parse_url(&req.url)?;
    if matches!(req.auth, GitAuth::Ssh { .. }) && url.scheme != gix::url::Scheme::Ssh {
        return Err(GitError::UrlInvalid(
            "ssh credentials given for a non-ssh URL".into(),
        ));
    }
    if let GitRef::Commit { sha, .. } = &req.reference
        && !(sha.len() == 40 && sha.bytes().all(|b| b.is_ascii_hexdigit()))
    {
        return Err(GitError::GitOperationFailed(format!(
            "invalid commit '{sha}': want 40 hex digits"
        )));
    }

    let names = match &req.reference {
        GitRef::Branch(n) | GitRef::Tag(n) | GitRef::Name(n) => vec![n],
        GitRef::Commit {
            branch: Some(b), ..
        } => vec![b],
        _ => vec![],
    };
    if let Some(bad) = names.into_iter().find(|n| !valid_ref_name(n)) {
        return Err(GitError::GitOperationFailed(format!(
            "invalid reference name '{bad}'"
        )));
    }

    let work = TempDir::new(scratch)?;
    let ssh_command = ssh_command(req, &work)?;
    let mut overrides = vec![
        "protocol.version=2".to_string(),
        "gitoxide.credentials.terminalPrompt=false".to_string(),
        "ssh.variant=ssh".to_string(),
    ];
    if let Some(cmd) = ssh_command {
        overrides.push(format!("core.sshCommand={cmd}"));
    }
    let repo = gix::ThreadSafeRepository::init_opts(
        work.path.join("repo.git"),
        gix::create::Kind::Bare,
        gix::create::Options::default(),
        gix::open::Options::isolated().config_overrides(overrides),
    )
    .map_err(op("cannot create the local repository"))?
    .to_thread_local();

    // 1. Handshake + ls-refs only.
    let listing = match &req.reference {
        GitRef::Branch(b)
        | GitRef::Commit {
            branch: Some(b), ..
        } => format!("refs/heads/{b}"),
        GitRef::Tag(t) => format!("refs/tags/{t}"),
        GitRef::Semver(_) => "refs/tags/*:refs/tags/*".into(),
        GitRef::Name(n) => n.clone(),
        GitRef::Commit { branch: None, .. } => "HEAD".into(),
    };
    let ssh = url.scheme == gix::url::Scheme::Ssh;
    let diagnose = |e: GitError| if ssh { ssh_diagnosis(&work.path, e) } else { e };
    let refs = list_refs(&repo, req, &url, &listing).map_err(diagnose)?;
    check(stop)?;
    let (full_ref, remote_commit) = resolve(&req.reference, &refs)?;
    let rev = |commit: &str| revision(&req.reference, &full_ref, commit);

    // A commit on a branch is reused only under the same revision string: with another branch
    // it has not been checked to be on that one.
    let pinned_on_branch = matches!(
        &req.reference,
        GitRef::Commit {
            branch: Some(_),
            ..
        }
    );
    if let Some(last) = &req.last_revision
        && revision_hash(last).eq_ignore_ascii_case(&remote_commit)
        && (!pinned_on_branch || *last == rev(&remote_commit))
    {
        return Ok(Fetched::Unchanged {
            revision: rev(&remote_commit),
        });
    }

    // 2. Shallow fetch of exactly that ref (or commit). A commit with a branch: the branch's
    // whole history (one branch only, as Flux's clone), so that the commit is proven to be on
    // it; this costs the branch's history once per new revision (the fetch is skipped while
    // the stored artifact is of the same revision).
    let (spec, local) = match &req.reference {
        GitRef::Commit { sha, branch: None } => (
            format!("{sha}:refs/pennant/pinned"),
            "refs/pennant/pinned".to_string(),
        ),
        _ => (format!("+{full_ref}:{full_ref}"), full_ref.clone()),
    };
    let remote = remote(&repo, &url, &spec)?;
    let (conn, asked) = connect(&remote, req, &url).map_err(diagnose)?;
    let shallow = if pinned_on_branch {
        gix::remote::fetch::Shallow::NoChange
    } else {
        gix::remote::fetch::Shallow::DepthAtRemote(1.try_into().expect("non-zero"))
    };
    conn.prepare_fetch(gix::progress::Discard, Default::default())
        .map_err(|e| diagnose(classify(&asked, "cannot list remote refs", &e)))?
        .with_shallow(shallow)
        .receive(gix::progress::Discard, stop)
        .map_err(|e| diagnose(classify(&asked, "fetch failed", &e)))?;
    check(stop)?;
    if pinned_on_branch {
        on_branch(&repo, &local, &remote_commit)?;
    }

    let commit = if pinned_on_branch {
        let id = gix::ObjectId::from_hex(remote_commit.as_bytes()).map_err(op("invalid commit"))?;
        repo.find_commit(id).map_err(op("commit missing"))?
    } else {
        repo.find_reference(local.as_str())
            .map_err(op("fetched ref missing"))?
            .peel_to_commit()
            .map_err(op(&format!("'{full_ref}' does not point to a commit")))?
    };
    let commit_sha = commit.id.to_string();
    let message = commit
        .message_raw_sloppy()
        .lines()
        .next()
        .map(|l| l.to_str_lossy().trim_end().to_string())
        .unwrap_or_default();
    let tree = commit.tree_id().map_err(op("commit has no tree"))?.detach();
    let gitlinks = checkout(&repo, tree, &req.dest, &req.sparse_checkout, stop)?;
    check(stop)?;
    if req.recurse_submodules && depth < MAX_SUBMODULE_DEPTH && !gitlinks.is_empty() {
        let scratch = scratch.map(Path::to_path_buf);
        drop(work);
        submodules(req, &url, gitlinks, stop, scratch.as_deref(), depth)?;
    }
    Ok(Fetched::Checked {
        revision: rev(&commit_sha),
        commit_sha,
        commit_message: message,
    })
}

/// An error unless `sha` is in the history of the fetched `branch_ref` (Flux clones only the
/// branch, so a commit elsewhere is "object not found" there too).
fn on_branch(repo: &gix::Repository, branch_ref: &str, sha: &str) -> Result<(), GitError> {
    let tip = repo
        .find_reference(branch_ref)
        .map_err(op("fetched ref missing"))?
        .peel_to_commit()
        .map_err(op(&format!("'{branch_ref}' does not point to a commit")))?
        .id;
    let walk = repo
        .rev_walk([tip])
        .all()
        .map_err(op("cannot walk the branch's history"))?;
    let want = gix::ObjectId::from_hex(sha.as_bytes()).map_err(op("invalid commit"))?;
    for info in walk {
        if info.map_err(op("cannot walk the branch's history"))?.id == want {
            return Ok(());
        }
    }
    let branch = branch_ref.strip_prefix("refs/heads/").unwrap_or(branch_ref);
    Err(GitError::GitOperationFailed(format!(
        "unable to resolve commit object for '{sha}': object not found on branch '{branch}'"
    )))
}

/// A ref name git would accept and that cannot alter a refspec (`git check-ref-format` rules
/// for what matters here: no `:`, globs, `..`, spaces or control characters).
fn valid_ref_name(n: &str) -> bool {
    !n.is_empty()
        && !n.contains("..")
        && !n.contains("@{")
        && !n.starts_with(['/', '-', '+'])
        && !n.ends_with(['/', '.'])
        && !n
            .bytes()
            .any(|b| b.is_ascii_control() || b" :*?[\\^~".contains(&b))
}

fn parse_url(raw: &str) -> Result<gix::Url, GitError> {
    let url = gix::url::parse(gix::bstr::BStr::new(raw))
        .map_err(|_| GitError::UrlInvalid(format!("cannot parse '{}'", strip_userinfo(raw))))?;
    if url.serialize_alternative_form {
        // scp-like `git@host:path` or a bare path.
        return Err(GitError::UrlInvalid(format!(
            "'{}' must start with http://, https:// or ssh://",
            strip_userinfo(raw)
        )));
    }
    use gix::url::Scheme;
    match url.scheme {
        Scheme::Http | Scheme::Https | Scheme::Ssh | Scheme::File => Ok(url),
        _ => Err(GitError::UrlInvalid(format!(
            "unsupported scheme in '{}': want http, https or ssh",
            strip_userinfo(raw)
        ))),
    }
}

fn strip_userinfo(raw: &str) -> String {
    match (raw.find("://"), raw.rfind('@')) {
        (Some(s), Some(at)) if at > s => format!("{}***@{}", &raw[..s + 3], &raw[at + 1..]),
        _ => raw.to_string(),
    }
}

type Connection<'a, 'r> = gix::remote::Connection<
    'a,
    'static,
    'r,
    Box<dyn gix::protocol::transport::client::blocking_io::Transport + Send>,
>;

/// The remote at `url` fetching `spec`.
fn remote<'r>(
    repo: &'r gix::Repository,
    url: &gix::Url,
    spec: &str,
) -> Result<gix::Remote<'r>, GitError> {
    repo.remote_at(url.clone())
        .map_err(|e| GitError::UrlInvalid(chain(&e)))?
        .with_refspecs([spec], Direction::Fetch)
        .map_err(op(&format!("invalid reference '{spec}'")))
}

/// A connection with the request's transport options, and a flag set when the server asks for
/// credentials: that is how an auth failure is told apart from other errors, whatever the
/// transport's error text.
fn connect<'a, 'r>(
    remote: &'a gix::Remote<'r>,
    req: &FetchRequest,
    url: &gix::Url,
) -> Result<(Connection<'a, 'r>, Arc<AtomicBool>), GitError> {
    let auth_asked = Arc::new(AtomicBool::new(false));
    let asked = auth_asked.clone();
    let conn = remote
        .connect(Direction::Fetch)
        .map_err(|e| classify(&auth_asked, "cannot connect", &e))?
        // Never ask a credential helper or a terminal: credentials come from the request only.
        .with_credentials(move |_| {
            asked.store(true, Ordering::SeqCst);
            Ok(None)
        });
    let conn = match url.scheme {
        gix::url::Scheme::Http | gix::url::Scheme::Https => {
            conn.with_transport_options(Box::new(http_options(req)?))
        }
        _ => conn,
    };
    Ok((conn, auth_asked))
}

fn classify(auth_asked: &AtomicBool, what: &str, e: &dyn std::error::Error) -> GitError {
    if auth_asked.load(Ordering::SeqCst) {
        // gix's own text here speaks of credential helpers, which we never use.
        return GitError::AuthenticationFailed(format!(
            "{what}: the server answered 401: the credentials from the request were missing or rejected"
        ));
    }
    let msg = format!("{what}: {}", chain(e));
    let lower = msg.to_lowercase();
    if lower.contains("permission denied") || lower.contains("host key verification failed") {
        GitError::AuthenticationFailed(msg)
    } else {
        GitError::GitOperationFailed(msg)
    }
}

fn http_options(req: &FetchRequest) -> Result<http::Options, GitError> {
    let timeout = req.timeout;
    let certs = match &req.ca_pem {
        Some(pem) => reqwest::Certificate::from_pem_bundle(pem).map_err(|e| {
            GitError::GitOperationFailed(format!("invalid CA certificate (ca.crt): {e}"))
        })?,
        None => Vec::new(),
    };
    let header = match &req.auth {
        GitAuth::Basic { username, password } => {
            use base64::Engine;
            let raw = format!("{username}:{password}");
            Some(format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(raw)
            ))
        }
        GitAuth::Bearer(token) => Some(format!("Bearer {token}")),
        _ => None,
    };
    let backend = http::reqwest::Options {
        configure_client: Some(Box::new(move |b| {
            Ok(b.timeout(timeout)
                .connect_timeout(timeout)
                .tls_certs_merge(certs.clone()))
        })),
        configure_request: Some(Box::new(move |r| {
            if let Some(h) = &header {
                let mut value = reqwest::header::HeaderValue::from_str(h)
                    .map_err(|_| gix::error::message("credentials contain invalid characters"))?;
                value.set_sensitive(true);
                r.headers_mut()
                    .insert(reqwest::header::AUTHORIZATION, value);
            }
            Ok(())
        })),
    };
    Ok(http::Options {
        connect_timeout: Some(timeout),
        backend: Some(Arc::new(Mutex::new(backend))),
        ..Default::default()
    })
}

fn list_refs(
    repo: &gix::Repository,
    req: &FetchRequest,
    url: &gix::Url,
    spec: &str,
) -> Result<Vec<Ref>, GitError> {
    let remote = remote(repo, url, spec)?;
    let (conn, asked) = connect(&remote, req, url)?;
    let (map, _) = conn
        .ref_map(gix::progress::Discard, Default::default())
        .map_err(|e| classify(&asked, "cannot list remote refs", &e))?;
    Ok(map.remote_refs)
}

/// The ref the request names and the commit it points at (annotated tags peeled).
fn resolve(reference: &GitRef, refs: &[Ref]) -> Result<(String, String), GitError> {
    let target = |r: &Ref| -> (String, String) {
        match r {
            Ref::Peeled {
                full_ref_name,
                object,
                ..
            }
            | Ref::Direct {
                full_ref_name,
                object,
            }
            | Ref::Symbolic {
                full_ref_name,
                object,
                ..
            } => (full_ref_name.to_string(), object.to_string()),
            Ref::Unborn { full_ref_name, .. } => (full_ref_name.to_string(), String::new()),
        }
    };
    let find = |name: &str| {
        refs.iter()
            .map(target)
            .find(|(n, c)| n == name && !c.is_empty())
            .ok_or_else(|| {
                GitError::GitOperationFailed(format!("couldn't find remote ref '{name}'"))
            })
    };
    match reference {
        GitRef::Branch(b) => find(&format!("refs/heads/{b}")),
        GitRef::Tag(t) => find(&format!("refs/tags/{t}")),
        GitRef::Name(n) => find(n),
        GitRef::Commit {
            sha,
            branch: Some(b),
        } => {
            let (name, _) = find(&format!("refs/heads/{b}"))?;
            Ok((name, sha.to_lowercase()))
        }
        GitRef::Commit { sha, branch: None } => Ok(("HEAD".into(), sha.to_lowercase())),
        GitRef::Semver(constraint) => {
            let c = super::semver::Constraint::parse(constraint)
                .map_err(|e| GitError::GitOperationFailed(format!("semver parse error: {e}")))?;
            let all: Vec<(String, String)> = refs.iter().map(target).collect();
            let tags = all
                .iter()
                .filter_map(|(n, _)| n.strip_prefix("refs/tags/"))
                .filter(|n| !n.ends_with("^{}"));
            let (tag, _) = c.highest(tags).ok_or_else(|| {
                GitError::GitOperationFailed(format!("no match found for semver: {constraint}"))
            })?;
            find(&format!("refs/tags/{tag}"))
        }
    }
}

/// A submodule of a checked out tree: its path, the commit the tree records, and the URL
/// `.gitmodules` gives for that path (`None`: no entry, the directory stays empty).
#[derive(Debug)]
struct Gitlink {
    path: String,
    commit: String,
    url: Option<String>,
}

/// Checks the tree out into `dest`: only the files under `sparse` when it is not empty
/// (each directory must be in the tree), never the gitlinks, whose directories are created
/// empty and which are returned with their `.gitmodules` URL.
fn checkout(
    repo: &gix::Repository,
    tree: gix::ObjectId,
    dest: &Path,
    sparse: &[String],
    stop: &AtomicBool,
) -> Result<Vec<Gitlink>, GitError> {
    std::fs::create_dir_all(dest).map_err(op("cannot create the checkout directory"))?;
    let mut state = gix::index::State::from_tree(&tree, &repo.objects, Default::default())
        .map_err(op("cannot read the commit's tree"))?;
    let dirs: Vec<&str> = sparse.iter().map(|d| sparse_dir(d)).collect();
    if let Some(missing) = dirs.iter().zip(sparse).find_map(|(d, raw)| {
        let found = state
            .entries()
            .iter()
            .any(|e| in_dir(e.path(&state).to_str_lossy().as_ref(), d));
        (!found).then_some(raw)
    }) {
        return Err(GitError::SparseCheckout(format!(
            "sparse checkout dir '{missing}' does not exist in repository"
        )));
    }
    let modules = state
        .entry_by_path(".gitmodules".into())
        .map(|e| e.id)
        .and_then(|id| repo.find_object(id).ok())
        .map(|o| o.data.clone());
    let mut links = Vec::new();
    state.remove_entries(|_, path, e| {
        let path = path.to_str_lossy();
        if !dirs.is_empty() && !dirs.iter().any(|d| in_dir(&path, d)) {
            return true;
        }
        if e.mode == gix::index::entry::Mode::COMMIT {
            links.push(Gitlink {
                path: path.into_owned(),
                commit: e.id.to_string(),
                url: None,
            });
            return true;
        }
        false
    });
    if !links.is_empty() {
        let urls = modules.as_deref().map(gitmodules_urls).unwrap_or_default();
        for l in &mut links {
            l.url = urls
                .iter()
                .find(|(p, _)| *p == l.path)
                .map(|(_, u)| u.clone());
            std::fs::create_dir_all(dest.join(&l.path))
                .map_err(op("cannot create a submodule directory"))?;
        }
    }
    let mut index = gix::index::File::from_state(state, repo.git_dir().join("index"));
    let mut opts = repo
        .checkout_options(gix::worktree::stack::state::attributes::Source::IdMapping)
        .map_err(op("checkout options"))?;
    opts.destination_is_initially_empty = true;
    let objects = repo
        .objects
        .clone()
        .into_arc()
        .map_err(op("object database"))?;
    gix::worktree::state::checkout(
        &mut index,
        dest,
        objects,
        &gix::progress::Discard,
        &gix::progress::Discard,
        stop,
        opts,
    )
    .map_err(op("checkout failed"))?;
    Ok(links)
}

/// A `sparseCheckout` entry as a path prefix: `./a/b/` is `a/b` (Flux trims `./`).
fn sparse_dir(d: &str) -> &str {
    d.trim_start_matches("./").trim_end_matches('/')
}

/// Whether `path` is `dir` or under it (`dir` empty or `.`: everything).
fn in_dir(path: &str, dir: &str) -> bool {
    dir.is_empty()
        || dir == "."
        || path == dir
        || path.strip_prefix(dir).is_some_and(|r| r.starts_with('/'))
}

/// `(path, url)` of each submodule in a `.gitmodules` file (entries without either skipped).
fn gitmodules_urls(data: &[u8]) -> Vec<(String, String)> {
    let Ok(file) = gix::config::File::from_bytes_no_includes(
        data,
        gix::config::file::Metadata::api(),
        Default::default(),
    ) else {
        return vec![];
    };
    let Some(sections) = file.sections_by_name("submodule") else {
        return vec![];
    };
    sections
        .filter_map(|s| {
            let path = s
                .value("path")?
                .to_str_lossy()
                .trim_end_matches('/')
                .to_string();
            let url = s.value("url")?.to_str_lossy().into_owned();
            (!path.is_empty() && !url.is_empty()).then_some((path, url))
        })
        .collect()
}

/// The URL a submodule is fetched from: `url` as `.gitmodules` gives it, a relative one
/// (`./x`, `../x`, as git resolves it) against the superproject's `parent` URL: each `../`
/// drops the last path segment of `parent` (trailing `/` ignored), `./` none. Errors: a
/// relative URL climbing above the host, an empty one.
pub fn submodule_url(parent: &str, url: &str) -> Result<String, GitError> {
    if !(url.starts_with("./") || url.starts_with("../")) {
        if url.trim().is_empty() {
            return Err(GitError::UrlInvalid("empty submodule URL".into()));
        }
        return Ok(url.to_string());
    }
    let (scheme_end, mut base) = match parent.find("://") {
        Some(i) => (i + 3, parent.trim_end_matches('/').to_string()),
        None => {
            return Err(GitError::UrlInvalid(format!(
                "cannot resolve the relative submodule URL '{url}' against '{}'",
                strip_userinfo(parent)
            )));
        }
    };
    // the authority (host[:port], userinfo) is never dropped by `../`
    let root = base[scheme_end..]
        .find('/')
        .map_or(base.len(), |i| scheme_end + i);
    let mut rest = url;
    loop {
        if let Some(r) = rest.strip_prefix("./") {
            rest = r;
        } else if let Some(r) = rest.strip_prefix("../") {
            let Some(cut) = base.rfind('/').filter(|&i| i >= root) else {
                return Err(GitError::UrlInvalid(format!(
                    "the relative submodule URL '{url}' climbs above the host of '{}'",
                    strip_userinfo(parent)
                )));
            };
            base.truncate(cut);
            rest = r;
        } else {
            break;
        }
    }
    let rest = rest.trim_start_matches('/');
    Ok(if rest.is_empty() {
        base
    } else {
        format!("{base}/{rest}")
    })
}

/// Whether `a` and `b` are on the same server (scheme, host, port): the parent's credentials
/// go to a submodule only then.
fn same_host(a: &gix::Url, b: &gix::Url) -> bool {
    a.scheme == b.scheme && a.host() == b.host() && a.port_or_default() == b.port_or_default()
}

/// Fetches each submodule of a checked out tree at its recorded commit into its path (see the
/// module docs). An error names the submodule's path and URL (without credentials).
fn submodules(
    req: &FetchRequest,
    parent: &gix::Url,
    links: Vec<Gitlink>,
    stop: &AtomicBool,
    scratch: Option<&Path>,
    depth: u32,
) -> Result<(), GitError> {
    for link in links {
        check(stop)?;
        let Some(raw) = &link.url else { continue };
        let wrap = |e: GitError| {
            let what = format!(
                "failed to update submodule '{}' from '{}'",
                link.path,
                strip_userinfo(raw)
            );
            match e {
                GitError::UrlInvalid(m) => GitError::UrlInvalid(format!("{what}: {m}")),
                GitError::AuthenticationFailed(m) => {
                    GitError::AuthenticationFailed(format!("{what}: {m}"))
                }
                GitError::GitOperationFailed(m) | GitError::SparseCheckout(m) => {
                    GitError::GitOperationFailed(format!("{what}: {m}"))
                }
            }
        };
        let url = submodule_url(&req.url, raw).map_err(wrap)?;
        let parsed = parse_url(&url).map_err(wrap)?;
        // a repository on the controller's disk is reachable only from one there
        if parsed.scheme == gix::url::Scheme::File && parent.scheme != gix::url::Scheme::File {
            return Err(wrap(GitError::UrlInvalid(
                "a file:// submodule of a remote repository is not fetched".into(),
            )));
        }
        let same = same_host(parent, &parsed);
        let sub = FetchRequest {
            url,
            reference: GitRef::Commit {
                sha: link.commit.clone(),
                branch: None,
            },
            auth: if same {
                req.auth.clone()
            } else {
                GitAuth::None
            },
            ca_pem: req.ca_pem.clone(),
            timeout: req.timeout,
            last_revision: None,
            dest: req.dest.join(&link.path),
            interrupt: req.interrupt.clone(),
            recurse_submodules: true,
            sparse_checkout: vec![],
        };
        // (an ssh key for another host would be refused anyway; nothing is sent there)
        if matches!(sub.auth, GitAuth::None) && parsed.scheme == gix::url::Scheme::Ssh && !same {
            return Err(wrap(GitError::AuthenticationFailed(
                "no credentials for an ssh submodule on another host".into(),
            )));
        }
        // (userinfo a .gitmodules URL may carry is scrubbed like the parent's)
        fetch_at(&sub, stop, scratch, depth + 1)
            .map_err(|e| Secrets::of(&sub).redact(e))
            .map_err(wrap)?;
    }
    Ok(())
}

/// Where ssh's stderr goes (in the fetch's private directory): gix only passes on some of its
/// lines, and "Host key verification failed" is not one of them.
const SSH_STDERR: &str = "ssh.stderr";

/// The last line ssh printed, and whether it means the credentials or host key were refused.
fn ssh_diagnosis(work: &Path, e: GitError) -> GitError {
    let text = std::fs::read_to_string(work.join(SSH_STDERR)).unwrap_or_default();
    let Some(line) = text.lines().rev().map(str::trim).find(|l| !l.is_empty()) else {
        return e;
    };
    let auth = text.contains("Host key verification failed")
        || text.contains("Permission denied")
        || text.contains("REMOTE HOST IDENTIFICATION HAS CHANGED");
    match e {
        GitError::GitOperationFailed(m) | GitError::AuthenticationFailed(m) if auth => {
            GitError::AuthenticationFailed(format!("{m}: ssh: {line}"))
        }
        GitError::GitOperationFailed(m) => {
            GitError::GitOperationFailed(format!("{m}: ssh: {line}"))
        }
        other => other,
    }
}

/// `ssh -i … -o UserKnownHostsFile=…` for [`GitAuth::Ssh`], with the key files in `work`.
fn ssh_command(req: &FetchRequest, work: &TempDir) -> Result<Option<String>, GitError> {
    let GitAuth::Ssh {
        identity,
        known_hosts,
        password,
    } = &req.auth
    else {
        return Ok(None);
    };
    let key = work.path.join("identity");
    let hosts = work.path.join("known_hosts");
    write_private(&key, identity)?;
    write_private(&hosts, known_hosts)?;
    // An encrypted key: ssh reads its passphrase from an askpass program that prints a private
    // file. Only public-key auth is allowed, so the passphrase is never sent as a login password.
    let askpass = match password {
        Some(p) => {
            let pass = work.path.join("passphrase");
            let script = work.path.join("askpass");
            write_private(&pass, p.as_bytes())?;
            write_private(
                &script,
                format!("#!/bin/sh\nexec cat '{}'\n", pass.display()).as_bytes(),
            )?;
            set_mode(&script, 0o700)?;
            format!(
                "SSH_ASKPASS={} SSH_ASKPASS_REQUIRE=force DISPLAY=none ",
                script.display()
            )
        }
        None => String::new(),
    };
    let batch = if password.is_some() { "no" } else { "yes" };
    let secs = req.timeout.as_secs().max(1);
    Ok(Some(format!(
        "{askpass}ssh -F /dev/null -i {} -o IdentitiesOnly=yes -o UserKnownHostsFile={} \
         -o StrictHostKeyChecking=yes -o BatchMode={batch} -o PreferredAuthentications=publickey \
         -o PasswordAuthentication=no -o KbdInteractiveAuthentication=no \
         -o ConnectTimeout={secs} 2>>{}",
        key.display(),
        hosts.display(),
        work.path.join(SSH_STDERR).display()
    )))
}

fn set_mode(path: &Path, mode: u32) -> Result<(), GitError> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(op("cannot set file permissions"))
}

fn write_private(path: &Path, data: &[u8]) -> Result<(), GitError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut data = data.to_vec();
    if !data.ends_with(b"\n") {
        data.push(b'\n'); // ssh rejects a key without a final newline
    }
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .and_then(|mut f| f.write_all(&data))
        .map_err(op("cannot write ssh credentials"))
}

/// A private directory removed on drop (the object store of one fetch).
struct TempDir {
    path: PathBuf,
}

impl TempDir {
    /// In `parent` (the system's temporary directory when `None`).
    fn new(parent: Option<&Path>) -> Result<TempDir, GitError> {
        static N: AtomicUsize = AtomicUsize::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let parent = parent
            .filter(|p| !p.as_os_str().is_empty())
            .map_or_else(std::env::temp_dir, Path::to_path_buf);
        let path = parent.join(format!(
            "pennant-git-{}-{}-{nanos}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        std::fs::create_dir_all(&parent)
            .and_then(|_| std::fs::create_dir(&path))
            .map_err(op("cannot create a temporary directory"))?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let _ = std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o700));
        }
        Ok(TempDir { path })
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// Everything secret in a request, to scrub from error messages.
struct Secrets(Vec<String>);

impl Secrets {
    fn of(req: &FetchRequest) -> Secrets {
        let mut s = Vec::new();
        match &req.auth {
            GitAuth::Basic { password, .. } => s.push(password.clone()),
            GitAuth::Bearer(t) => s.push(t.clone()),
            GitAuth::Ssh {
                password: Some(p), ..
            } => s.push(p.clone()),
            _ => {}
        }
        if let Ok(u) = gix::url::parse(gix::bstr::BStr::new(req.url.as_str()))
            && let Some(p) = u.password()
        {
            s.push(p.to_string());
        }
        s.retain(|x| !x.is_empty());
        Secrets(s)
    }

    fn redact(&self, e: GitError) -> GitError {
        let scrub = |m: String| {
            let mut m = m;
            for s in &self.0 {
                m = m.replace(s.as_str(), "***");
            }
            m
        };
        match e {
            GitError::UrlInvalid(m) => GitError::UrlInvalid(scrub(m)),
            GitError::AuthenticationFailed(m) => GitError::AuthenticationFailed(scrub(m)),
            GitError::GitOperationFailed(m) => GitError::GitOperationFailed(scrub(m)),
            GitError::SparseCheckout(m) => GitError::SparseCheckout(scrub(m)),
        }
    }
}

/// `what: cause: cause…`
fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut src = e.source();
    while let Some(s) = src {
        let m = s.to_string();
        if !out.contains(&m) {
            out.push_str(": ");
            out.push_str(&m);
        }
        src = s.source();
    }
    out
}

fn op<E: std::error::Error>(what: &str) -> impl FnOnce(E) -> GitError + '_ {
    move |e| GitError::GitOperationFailed(format!("{what}: {}", chain(&e)))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHA: &str = "5394cb7f48332b2de7c17dd8b8384bbc84b7e738";

    #[test]
    fn revisions_are_fluxs() {
        let r = |reference: GitRef, full: &str| revision(&reference, full, SHA);
        assert_eq!(
            r(GitRef::Branch("main".into()), "refs/heads/main"),
            format!("main@sha1:{SHA}")
        );
        assert_eq!(
            r(GitRef::Branch("feature/x".into()), "refs/heads/feature/x"),
            format!("feature/x@sha1:{SHA}")
        );
        assert_eq!(
            r(GitRef::Tag("v1.2.3".into()), "refs/tags/v1.2.3"),
            format!("v1.2.3@sha1:{SHA}")
        );
        assert_eq!(
            r(GitRef::Semver("1.x".into()), "refs/tags/v1.4.0"),
            format!("v1.4.0@sha1:{SHA}")
        );
        assert_eq!(
            r(GitRef::Name("refs/heads/main".into()), "refs/heads/main"),
            format!("refs/heads/main@sha1:{SHA}")
        );
        let pin = |branch: Option<&str>| GitRef::Commit {
            sha: SHA.into(),
            branch: branch.map(Into::into),
        };
        assert_eq!(r(pin(None), "HEAD"), format!("sha1:{SHA}"));
        assert_eq!(
            r(pin(Some("main")), "refs/heads/main"),
            format!("main@sha1:{SHA}")
        );
        assert_eq!(GitRef::default(), GitRef::Branch("master".into()));
    }

    #[test]
    fn revision_hash_reads_every_form() {
        for rev in [
            format!("main@sha1:{SHA}"),
            format!("sha1:{SHA}"),
            format!("main/{SHA}"),
            format!("feature/x/{SHA}"),
            SHA.to_string(),
        ] {
            assert_eq!(revision_hash(&rev), SHA, "{rev}");
        }
    }

    #[test]
    fn ref_names_cannot_alter_refspecs() {
        for ok in [
            "main",
            "feature/x",
            "v1.2.3",
            "refs/pull/1/head",
            "release-1.0",
        ] {
            assert!(valid_ref_name(ok), "{ok}");
        }
        for bad in [
            "",
            "a:b",
            "refs/heads/*",
            "a..b",
            "+main",
            "-x",
            "a b",
            "a~1",
            "x^",
            "a/",
            "a\n",
        ] {
            assert!(!valid_ref_name(bad), "{bad:?}");
        }
    }

    #[test]
    fn urls_are_checked_and_never_echo_credentials() {
        assert_eq!(strip_userinfo("https://u:p@h/r.git"), "https://***@h/r.git");
        assert_eq!(strip_userinfo("https://h/r.git"), "https://h/r.git");
        for bad in ["git@github.com:o/r.git", "ftp://h/r", "/local/path"] {
            assert_eq!(parse_url(bad).unwrap_err().reason(), "URLInvalid", "{bad}");
        }
        let secrets = Secrets(vec!["hunter2".into()]);
        let e = secrets.redact(GitError::AuthenticationFailed("bad hunter2 given".into()));
        assert_eq!(e.to_string(), "authentication failed: bad *** given");
        let auth = GitAuth::Basic {
            username: "u".into(),
            password: "hunter2".into(),
        };
        assert!(!format!("{auth:?}").contains("hunter2"));
    }

    #[test]
    fn relative_submodule_urls_resolve_against_the_parents_as_git_does() {
        let parent = "https://git.example/org/app.git";
        for (url, want) in [
            ("../lib.git", "https://git.example/org/lib.git"),
            ("../../other/lib.git", "https://git.example/other/lib.git"),
            ("./lib.git", "https://git.example/org/app.git/lib.git"),
            ("./../lib", "https://git.example/org/lib"),
            (
                "https://elsewhere.example/x.git",
                "https://elsewhere.example/x.git",
            ),
        ] {
            assert_eq!(submodule_url(parent, url).unwrap(), want, "{url}");
        }
        // a trailing slash on the parent is not a path segment; the port and userinfo stay
        assert_eq!(
            submodule_url("http://u:p@127.0.0.1:8080/app.git/", "../lib.git").unwrap(),
            "http://u:p@127.0.0.1:8080/lib.git"
        );
        assert_eq!(
            submodule_url("ssh://git@host:22/org/app", "../lib").unwrap(),
            "ssh://git@host:22/org/lib"
        );
        let e = submodule_url("https://u:hunter2@h/app.git", "../../x.git").unwrap_err();
        assert_eq!(e.reason(), "URLInvalid");
        assert!(e.to_string().contains("climbs above the host"), "{e}");
        assert!(!e.to_string().contains("hunter2"), "{e}");
        assert!(submodule_url(parent, " ").is_err());
    }

    #[test]
    fn credentials_go_only_to_the_parents_host() {
        let u = |s: &str| parse_url(s).unwrap();
        let parent = u("https://git.example/org/app.git");
        assert!(same_host(&parent, &u("https://git.example/org/lib.git")));
        assert!(same_host(&parent, &u("https://git.example:443/x.git")));
        assert!(!same_host(&parent, &u("https://other.example/org/lib.git")));
        assert!(!same_host(&parent, &u("http://git.example/org/lib.git")));
        assert!(!same_host(
            &parent,
            &u("https://git.example:8443/org/lib.git")
        ));
    }

    #[test]
    fn sparse_directories_match_whole_path_segments() {
        assert_eq!(sparse_dir("./apps/"), "apps");
        assert!(in_dir("apps/a.yaml", "apps"));
        assert!(in_dir("apps", "apps"));
        assert!(!in_dir("apps-old/x.yaml", "apps"));
        assert!(in_dir("anything", "."));
        assert!(in_dir("a/b/c", "a/b"));
        assert!(!in_dir("a/bc", "a/b"));
    }

    #[test]
    fn gitmodules_paths_and_urls() {
        let data = b"[submodule \"lib\"]\n\tpath = libs/lib\n\turl = ../lib.git\n[submodule \"nourl\"]\n\tpath = x\n";
        assert_eq!(
            gitmodules_urls(data),
            [("libs/lib".to_string(), "../lib.git".to_string())]
        );
        assert!(gitmodules_urls(b"not [ a config").is_empty());
    }
}
