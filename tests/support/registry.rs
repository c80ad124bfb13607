//! A private OCI registry on loopback: the same `registry` binary (distribution v3) that
//! `e2e/cluster up` starts, run by the test on a free port with its own storage, optionally
//! behind htpasswd basic auth (which the shared one has not). Plain HTTP, so clients need their
//! insecure option (`flux push artifact --insecure-registry`, OCIRepository `insecure: true`).
//!
//! ```ignore
//! let reg = Registry::start(Some(REGISTRY_USER));   // 401 without ociuser / s3cret-oci
//! let url = format!("oci://{}/team/app", reg.addr);
//! ```

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{free_port, tool};

/// The user of an authenticated [`Registry`]: `(username, password)`.
pub const REGISTRY_USER: (&str, &str) = ("ociuser", "s3cret-oci");
/// bcrypt (cost 5) of [`REGISTRY_USER`]'s password, the only hash distribution's htpasswd reads;
/// made once with `crypt(3)` so tests need no htpasswd tool.
const REGISTRY_USER_BCRYPT: &str = "$2b$05$dty8JjWCXtTRCUWGv7YzSePVb1FdmBS/q4rCq5XfZjQgvOy8K97Oy";

/// A running registry; dropping it stops the process and removes its storage.
pub struct Registry {
    /// `127.0.0.1:<port>`.
    pub addr: String,
    dir: PathBuf,
    child: Child,
}

/// The `registry` binary built by `e2e/cluster build`: `$PENNANT_REGISTRY`, else the cache.
pub fn registry_bin() -> String {
    tool("PENNANT_REGISTRY", "registry")
}

impl Registry {
    /// Start a registry; with `basic_auth` (must be [`REGISTRY_USER`]) every request without
    /// those credentials gets 401 `WWW-Authenticate: Basic`. Waits until `/v2/` answers.
    pub fn start(basic_auth: Option<(&str, &str)>) -> Registry {
        let port = free_port();
        let dir =
            std::env::temp_dir().join(format!("pennant-registry-{}-{port}", std::process::id()));
        std::fs::create_dir_all(dir.join("storage")).unwrap();
        let mut config = format!(
            "version: 0.1\nlog:\n  level: warn\n  formatter: text\n\
             storage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\n\
             http:\n  addr: 127.0.0.1:{port}\n  secret: pennant-test-only\n",
            dir.join("storage").display()
        );
        if let Some(user) = basic_auth {
            assert_eq!(user, REGISTRY_USER, "only REGISTRY_USER has a hash");
            let htpasswd = dir.join("htpasswd");
            std::fs::write(&htpasswd, format!("{}:{REGISTRY_USER_BCRYPT}\n", user.0)).unwrap();
            config.push_str(&format!(
                "auth:\n  htpasswd:\n    realm: pennant-test\n    path: {}\n",
                htpasswd.display()
            ));
        }
        std::fs::write(dir.join("config.yml"), config).unwrap();
        let log = std::fs::File::create(dir.join("registry.log")).unwrap();
        let child = Command::new(registry_bin())
            .arg("serve")
            .arg(dir.join("config.yml"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("{}: {e} (run `e2e/cluster build`)", registry_bin()));
        let reg = Registry {
            addr: format!("127.0.0.1:{port}"),
            dir,
            child,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if std::net::TcpStream::connect(&reg.addr).is_ok() {
                return reg;
            }
            assert!(
                Instant::now() < deadline,
                "registry did not start: {}",
                std::fs::read_to_string(reg.dir.join("registry.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Registry {
    /// The request lines of the access log so far (`"GET /v2/…/blobs/sha256:… HTTP/1.1" 200`
    /// …), oldest first: lets a test check what a client downloaded.
    pub fn requests(&self) -> Vec<String> {
        std::fs::read_to_string(self.dir.join("registry.log"))
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains("\"GET /v2/") || l.contains("\"HEAD /v2/"))
            .map(str::to_string)
            .collect()
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
