//! A real Git server for tests: `e2e/tools/gitserver.py` (Debian's `git http-backend` behind a
//! small HTTP server) on a temporary root, and repositories made with the `git` CLI.
//!
//! ```ignore
//! let server = GitServer::start(ServerOptions::default());
//! let repo = server.create_repo("app");
//! let sha = repo.commit("main", &[("deploy.yaml", "kind: X")], "first");
//! let url = server.url("app"); // http://127.0.0.1:PORT/app.git
//! ```
//! The server is killed and the directory removed on drop.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};

/// A directory under the system temp dir, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(prefix: &str) -> TempDir {
        static N: AtomicUsize = AtomicUsize::new(0);
        let p = std::env::temp_dir().join(format!(
            "{prefix}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[derive(Default, Clone)]
pub struct ServerOptions {
    /// `user:password` required as basic auth.
    pub user: Option<String>,
    /// Bearer token accepted.
    pub token: Option<String>,
    /// Serve https with this certificate and key (PEM files).
    pub tls: Option<(PathBuf, PathBuf)>,
    /// Send every response body at about this many bytes a second.
    pub rate: Option<u64>,
}

pub struct GitServer {
    child: Child,
    opts: ServerOptions,
    pub port: u16,
    pub root: PathBuf,
    pub log: PathBuf,
    scheme: &'static str,
    dir: TempDir,
}

impl GitServer {
    pub fn start(opts: ServerOptions) -> GitServer {
        let dir = TempDir::new("pennant-gitserver");
        let root = dir.path().join("root");
        std::fs::create_dir_all(&root).unwrap();
        let log = dir.path().join("requests.log");
        let (child, port) = spawn(&opts, &root, &log, 0);
        GitServer {
            child,
            port,
            root,
            log,
            scheme: if opts.tls.is_some() { "https" } else { "http" },
            opts,
            dir,
        }
    }

    /// Kills the server (kill -9): clients get "connection refused" until [`Self::restart`].
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts the server again on the same port, root and options (after [`Self::stop`]).
    pub fn restart(&mut self) {
        self.stop();
        let (child, port) = spawn(&self.opts, &self.root, &self.log, self.port);
        assert_eq!(port, self.port, "gitserver.py restarted on another port");
        self.child = child;
    }

    /// `http(s)://127.0.0.1:PORT/<name>.git`
    pub fn url(&self, name: &str) -> String {
        format!("{}://127.0.0.1:{}/{name}.git", self.scheme, self.port)
    }

    /// A new bare repository `<name>.git` under the root, with a work clone to commit from.
    pub fn create_repo(&self, name: &str) -> Repo {
        let bare = self.root.join(format!("{name}.git"));
        git(
            &self.root,
            &["init", "-q", "--bare", "-b", "main", bare.to_str().unwrap()],
        );
        let work = self.dir.path().join(format!("work-{name}"));
        git(
            self.dir.path(),
            &["init", "-q", "-b", "main", work.to_str().unwrap()],
        );
        git(&work, &["remote", "add", "origin", bare.to_str().unwrap()]);
        Repo { bare, work }
    }

    /// The request log: `<status> <METHOD> <path> [<v2 command> [deepen=N]]` per line.
    pub fn requests(&self) -> Vec<String> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }

    /// How many protocol-v2 `fetch` commands (pack downloads) the server answered.
    pub fn fetch_count(&self) -> usize {
        self.requests()
            .iter()
            .filter(|l| l.contains("git-upload-pack fetch"))
            .count()
    }
}

/// `gitserver.py` on `root` (port 0: any free port): the process and its port.
fn spawn(opts: &ServerOptions, root: &Path, log: &Path, port: u16) -> (Child, u16) {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/e2e/tools/gitserver.py");
    let python = if Path::new("/usr/bin/python3").exists() {
        "/usr/bin/python3"
    } else {
        "python3"
    };
    let mut cmd = Command::new(python);
    cmd.arg(script)
        .arg("--root")
        .arg(root)
        .arg("--log")
        .arg(log)
        .args(["--port", &port.to_string()]);
    if let Some(u) = &opts.user {
        cmd.args(["--user", u]);
    }
    if let Some(t) = &opts.token {
        cmd.args(["--token", t]);
    }
    if let Some(rate) = opts.rate {
        cmd.args(["--rate", &rate.to_string()]);
    }
    if let Some((cert, key)) = &opts.tls {
        cmd.arg("--cert").arg(cert).arg("--key").arg(key);
    }
    let mut child = cmd
        .stdout(Stdio::piped())
        .spawn()
        .expect("start e2e/tools/gitserver.py");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let port = line
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("gitserver.py printed {line:?} instead of its port"));
    (child, port)
}

impl Drop for GitServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub struct Repo {
    pub bare: PathBuf,
    pub work: PathBuf,
}

impl Repo {
    /// Writes `files` on `branch` (created from the current HEAD if new), commits and pushes;
    /// returns the commit's 40-hex sha.
    pub fn commit(&self, branch: &str, files: &[(&str, &str)], message: &str) -> String {
        let has_head = Command::new("git")
            .args(["rev-parse", "--verify", "-q", "HEAD"])
            .current_dir(&self.work)
            .stdout(Stdio::null())
            .status()
            .unwrap()
            .success();
        if has_head {
            git(&self.work, &["checkout", "-q", "-B", branch]);
        } else {
            git(&self.work, &["checkout", "-q", "--orphan", branch]);
        }
        for (path, content) in files {
            let p = self.work.join(path);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, content).unwrap();
        }
        git(&self.work, &["add", "-A"]);
        git(
            &self.work,
            &["commit", "-q", "--allow-empty", "-m", message],
        );
        git(
            &self.work,
            &[
                "push",
                "-q",
                "-f",
                "origin",
                &format!("HEAD:refs/heads/{branch}"),
            ],
        );
        self.head()
    }

    /// Tags HEAD (annotated when `annotated`) and pushes the tag.
    pub fn tag(&self, name: &str, annotated: bool) {
        if annotated {
            git(&self.work, &["tag", "-a", "-m", name, name]);
        } else {
            git(&self.work, &["tag", name]);
        }
        git(
            &self.work,
            &["push", "-q", "origin", &format!("refs/tags/{name}")],
        );
    }

    /// Pushes HEAD to an arbitrary ref, e.g. `refs/pull/1/head`.
    pub fn push_ref(&self, full_ref: &str) {
        git(
            &self.work,
            &["push", "-q", "-f", "origin", &format!("HEAD:{full_ref}")],
        );
    }

    pub fn head(&self) -> String {
        git(&self.work, &["rev-parse", "HEAD"]).trim().to_string()
    }

    /// Records a submodule at `path` (its `.gitmodules` entry with `url`, a gitlink to
    /// `commit`) in the work clone, for the next [`Repo::commit`]; nothing is cloned.
    pub fn set_submodule(&self, path: &str, url: &str, commit: &str) {
        for (key, value) in [("path", path), ("url", url)] {
            git(
                &self.work,
                &[
                    "config",
                    "-f",
                    ".gitmodules",
                    &format!("submodule.{path}.{key}"),
                    value,
                ],
            );
        }
        // an empty directory: an uninitialized submodule, left alone by `git add -A`
        std::fs::create_dir_all(self.work.join(path)).unwrap();
        git(
            &self.work,
            &[
                "update-index",
                "--add",
                "--cacheinfo",
                &format!("160000,{commit},{path}"),
            ],
        );
    }
}

/// Every regular file under `dir`, relative path -> content.
pub fn files(dir: &Path) -> std::collections::BTreeMap<String, String> {
    fn walk(root: &Path, dir: &Path, out: &mut std::collections::BTreeMap<String, String>) {
        for e in std::fs::read_dir(dir).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(root, &p, out);
            } else {
                let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
                out.insert(rel, std::fs::read_to_string(&p).unwrap());
            }
        }
    }
    let mut out = std::collections::BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

/// Runs `git` in `dir` with a fixed identity and no user or system config; panics on failure.
pub fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .args([
            "-c",
            "user.name=pennant-test",
            "-c",
            "user.email=test@pennant.invalid",
        ])
        .args(["-c", "commit.gpgsign=false", "-c", "tag.gpgsign=false"])
        .args(args)
        .current_dir(dir)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .output()
        .expect("run git");
    assert!(
        out.status.success(),
        "git {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A CA and a server certificate for 127.0.0.1 made with `openssl`: (ca.crt, server.crt,
/// server.key) in `dir`.
pub fn make_tls(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let run = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("run openssl");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    run(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "2",
        "-subj",
        "/CN=pennant test CA",
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
    ]);
    run(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        "/CN=127.0.0.1",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
    ]);
    std::fs::write(
        dir.join("ext.cnf"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n",
    )
    .unwrap();
    run(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        "ext.cnf",
        "-out",
        "server.crt",
    ]);
    (
        dir.join("ca.crt"),
        dir.join("server.crt"),
        dir.join("server.key"),
    )
}

/// Debian's `sshd` on loopback as the current user, serving the repositories of a
/// [`GitServer`]'s root through `git-shell` (an authorized key restricted to it), with a fresh
/// host key and client key. Killed on drop.
pub struct SshServer {
    child: Child,
    pub port: u16,
    /// The client's private key (OpenSSH format), for `GitAuth::Ssh.identity`.
    pub identity: Vec<u8>,
    /// `[127.0.0.1]:PORT <host key>`, for `GitAuth::Ssh.known_hosts`.
    pub known_hosts: Vec<u8>,
    root: PathBuf,
    user: String,
    dir: TempDir,
}

impl SshServer {
    pub fn start(root: &Path) -> SshServer {
        let dir = TempDir::new("pennant-sshd");
        let d = dir.path();
        let keygen = |name: &str| {
            let out = Command::new("ssh-keygen")
                .args(["-q", "-t", "ed25519", "-N", "", "-f"])
                .arg(d.join(name))
                .output()
                .expect("ssh-keygen");
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        keygen("host_key");
        keygen("client_key");
        let client_pub = std::fs::read_to_string(d.join("client_key.pub")).unwrap();
        std::fs::write(
            d.join("authorized_keys"),
            format!(
                "command=\"git-shell -c \\\"$SSH_ORIGINAL_COMMAND\\\"\",no-port-forwarding,\
                 no-X11-forwarding,no-agent-forwarding,no-pty {client_pub}"
            ),
        )
        .unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        std::fs::write(
            d.join("sshd_config"),
            format!(
                "ListenAddress 127.0.0.1\nPort {port}\nHostKey {d}/host_key\n\
                 AuthorizedKeysFile {d}/authorized_keys\nPidFile {d}/sshd.pid\n\
                 PasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\n\
                 StrictModes no\nPermitRootLogin prohibit-password\nAcceptEnv GIT_PROTOCOL\n\
                 LogLevel ERROR\n",
                d = d.display()
            ),
        )
        .unwrap();
        // sshd wants its privilege separation directory even when not run as a service.
        let _ = std::fs::create_dir_all("/run/sshd");
        let child = Command::new("/usr/sbin/sshd")
            .args(["-D", "-e", "-f"])
            .arg(d.join("sshd_config"))
            .stderr(std::fs::File::create(d.join("sshd.log")).unwrap())
            .spawn()
            .expect("start /usr/sbin/sshd (apt-get install openssh-server)");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "sshd did not listen: {}",
                std::fs::read_to_string(d.join("sshd.log")).unwrap_or_default()
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        let host_pub = std::fs::read_to_string(d.join("host_key.pub")).unwrap();
        let host_pub: Vec<&str> = host_pub.split_whitespace().take(2).collect();
        let user = String::from_utf8(Command::new("id").arg("-un").output().unwrap().stdout)
            .unwrap()
            .trim()
            .to_string();
        SshServer {
            child,
            port,
            identity: std::fs::read(d.join("client_key")).unwrap(),
            known_hosts: format!("[127.0.0.1]:{port} {}\n", host_pub.join(" ")).into_bytes(),
            root: root.to_path_buf(),
            user,
            dir,
        }
    }

    /// `ssh://USER@127.0.0.1:PORT/<root>/<name>.git`
    pub fn url(&self, name: &str) -> String {
        format!(
            "ssh://{}@127.0.0.1:{}{}/{name}.git",
            self.user,
            self.port,
            self.root.display()
        )
    }
}

impl Drop for SshServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `n` bytes of hex from a fixed LCG: text git cannot compress much (a slow pack with
/// [`ServerOptions::rate`]).
pub fn noise(n: usize) -> String {
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    let mut out = String::with_capacity(n);
    while out.len() < n {
        x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
        out.push_str(&format!("{:016x}", x >> 1));
    }
    out
}
