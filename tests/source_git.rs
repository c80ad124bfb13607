//! `pennant::source::git::fetch` against a real Git server (Debian's `git http-backend`, see
//! `e2e/tools/gitserver.py`): refs, revision strings, the no-download path, auth, TLS, errors.

#[path = "support/gitserver.rs"]
mod gitserver;

use std::path::Path;
use std::time::{Duration, Instant};

use gitserver::{GitServer, ServerOptions, TempDir, files as tree, noise};
use pennant::source::git::{FetchRequest, Fetched, GitAuth, GitError, GitRef, fetch};

fn request(url: &str, reference: GitRef, dest: &Path) -> FetchRequest {
    FetchRequest {
        url: url.to_string(),
        reference,
        auth: GitAuth::None,
        ca_pem: None,
        timeout: Duration::from_secs(20),
        last_revision: None,
        dest: dest.to_path_buf(),
        interrupt: Default::default(),
        recurse_submodules: false,
        sparse_checkout: vec![],
    }
}

fn checked(r: Result<Fetched, GitError>) -> (String, String, String) {
    match r.unwrap_or_else(|e| panic!("fetch failed: {e}")) {
        Fetched::Checked {
            revision,
            commit_sha,
            commit_message,
        } => (revision, commit_sha, commit_message),
        other => panic!("expected a checkout, got {other:?}"),
    }
}

fn branch(name: &str) -> GitRef {
    GitRef::Branch(name.into())
}

#[test]
fn branch_fetch_new_commit_and_unchanged_without_download() {
    let server = GitServer::start(ServerOptions::default());
    let repo = server.create_repo("app");
    let sha1 = repo.commit(
        "main",
        &[("deploy/app.yaml", "kind: A\n"), ("README.md", "hi\n")],
        "first commit\n\nbody",
    );
    let tmp = TempDir::new("pennant-git-test");

    let dest = tmp.path().join("one");
    let (rev, sha, msg) = checked(fetch(&request(&server.url("app"), branch("main"), &dest)));
    assert_eq!(rev, format!("main@sha1:{sha1}"));
    assert_eq!(sha, sha1);
    assert_eq!(msg, "first commit");
    assert_eq!(
        std::fs::read_to_string(dest.join("deploy/app.yaml")).unwrap(),
        "kind: A\n"
    );
    assert!(!dest.join(".git").exists(), "no .git in the checkout");
    assert_eq!(server.fetch_count(), 1);

    // Unchanged remote: Unchanged, dest untouched, no pack fetched.
    let dest2 = tmp.path().join("two");
    let mut req = request(&server.url("app"), branch("main"), &dest2);
    req.last_revision = Some(rev.clone());
    let got = fetch(&req).unwrap();
    assert_eq!(
        got,
        Fetched::Unchanged {
            revision: rev.clone()
        }
    );
    assert!(!dest2.exists());
    assert_eq!(server.fetch_count(), 1, "{:#?}", server.requests());

    // The legacy `main/<sha>` form is understood too (Flux compares only the hash).
    req.last_revision = Some(format!("main/{sha1}"));
    assert!(matches!(fetch(&req).unwrap(), Fetched::Unchanged { .. }));

    // A new commit: a new revision and the new tree, shallow (one commit).
    let sha2 = repo.commit("main", &[("deploy/app.yaml", "kind: B\n")], "second");
    req.last_revision = Some(rev);
    let (rev2, _, msg2) = checked(fetch(&req));
    assert_eq!(rev2, format!("main@sha1:{sha2}"));
    assert_eq!(msg2, "second");
    assert_eq!(
        std::fs::read_to_string(dest2.join("deploy/app.yaml")).unwrap(),
        "kind: B\n"
    );
    assert_eq!(server.fetch_count(), 2);
    // Every pack download was shallow.
    let fetches: Vec<String> = server
        .requests()
        .into_iter()
        .filter(|l| l.contains(" fetch"))
        .collect();
    assert!(
        fetches.iter().all(|l| l.ends_with("fetch deepen=1")),
        "{fetches:#?}"
    );
}

#[test]
fn tags_semver_commit_and_name() {
    let server = GitServer::start(ServerOptions::default());
    let repo = server.create_repo("app");
    let url = server.url("app");
    let c1 = repo.commit("main", &[("v", "1.0.0")], "one");
    repo.tag("v1.0.0", false);
    let c2 = repo.commit("main", &[("v", "1.2.0")], "two");
    repo.tag("v1.2.0", true); // annotated: peeled to the commit
    let c3 = repo.commit("main", &[("v", "2.0.0")], "three");
    repo.tag("v2.0.0", false);
    repo.tag("v1.3.0-rc.1", false);
    repo.push_ref("refs/pull/7/head");
    let tmp = TempDir::new("pennant-git-test");
    let dest = |n: &str| tmp.path().join(n);

    let (rev, sha, _) = checked(fetch(&request(
        &url,
        GitRef::Tag("v1.2.0".into()),
        &dest("tag"),
    )));
    assert_eq!((rev, sha), (format!("v1.2.0@sha1:{c2}"), c2.clone()));
    assert_eq!(
        std::fs::read_to_string(dest("tag").join("v")).unwrap(),
        "1.2.0"
    );

    let semver =
        |c: &str, d: &str| checked(fetch(&request(&url, GitRef::Semver(c.into()), &dest(d)))).0;
    assert_eq!(semver("1.x", "s1"), format!("v1.2.0@sha1:{c2}"));
    assert_eq!(
        semver(">=1.0.0-0 <2.0.0", "s2"),
        format!("v1.3.0-rc.1@sha1:{c3}")
    );
    assert_eq!(semver("*", "s3"), format!("v2.0.0@sha1:{c3}"));
    assert_eq!(semver("~1.0", "s4"), format!("v1.0.0@sha1:{c1}"));
    // A newer matching tag moves the pick.
    repo.commit("main", &[("v", "1.4.0")], "four");
    repo.tag("v1.4.0", false);
    let c4 = repo.head();
    assert_eq!(semver("1.x", "s5"), format!("v1.4.0@sha1:{c4}"));
    let err = fetch(&request(&url, GitRef::Semver("5.x".into()), &dest("s6"))).unwrap_err();
    assert_eq!(err.reason(), "GitOperationFailed");
    assert!(
        err.to_string().contains("no match found for semver"),
        "{err}"
    );

    // Commit pin: bare, and with a branch.
    let (rev, _, msg) = checked(fetch(&request(
        &url,
        GitRef::Commit {
            sha: c1.clone(),
            branch: None,
        },
        &dest("c1"),
    )));
    assert_eq!(
        (rev.as_str(), msg.as_str()),
        (format!("sha1:{c1}").as_str(), "one")
    );
    assert_eq!(
        std::fs::read_to_string(dest("c1").join("v")).unwrap(),
        "1.0.0"
    );
    let (rev, _, _) = checked(fetch(&request(
        &url,
        GitRef::Commit {
            sha: c2.clone(),
            branch: Some("main".into()),
        },
        &dest("c2"),
    )));
    assert_eq!(rev, format!("main@sha1:{c2}"));

    // ref.name keeps the absolute ref.
    let (rev, _, _) = checked(fetch(&request(
        &url,
        GitRef::Name("refs/pull/7/head".into()),
        &dest("n"),
    )));
    assert_eq!(rev, format!("refs/pull/7/head@sha1:{c3}"));
    let (rev, _, _) = checked(fetch(&request(
        &url,
        GitRef::Name("refs/heads/main".into()),
        &dest("n2"),
    )));
    assert_eq!(rev, format!("refs/heads/main@sha1:{c4}"));

    // Missing refs are clear errors.
    let err = fetch(&request(&url, branch("nope"), &dest("x"))).unwrap_err();
    assert_eq!(err.reason(), "GitOperationFailed");
    assert!(err.to_string().contains("refs/heads/nope"), "{err}");
}

#[test]
fn basic_auth_and_bearer() {
    let server = GitServer::start(ServerOptions {
        user: Some("flux:s3cr3t-pass".into()),
        token: Some("t0ken-value".into()),
        ..Default::default()
    });
    let repo = server.create_repo("private");
    let sha = repo.commit("main", &[("a", "b")], "x");
    let tmp = TempDir::new("pennant-git-test");
    let url = server.url("private");

    let mut req = request(&url, branch("main"), &tmp.path().join("basic"));
    req.auth = GitAuth::Basic {
        username: "flux".into(),
        password: "s3cr3t-pass".into(),
    };
    assert_eq!(checked(fetch(&req)).1, sha);

    let mut req = request(&url, branch("main"), &tmp.path().join("bearer"));
    req.auth = GitAuth::Bearer("t0ken-value".into());
    assert_eq!(checked(fetch(&req)).1, sha);

    let mut req = request(&url, branch("main"), &tmp.path().join("wrong"));
    req.auth = GitAuth::Basic {
        username: "flux".into(),
        password: "wrong-pa55".into(),
    };
    let err = fetch(&req).unwrap_err();
    eprintln!("{}: {err}", err.reason());
    assert_eq!(err.reason(), "AuthenticationFailed", "{err}");
    assert!(!err.to_string().contains("wrong-pa55"), "{err}");
    assert!(!format!("{err:?}").contains("wrong-pa55"), "{err:?}");

    let mut req = request(&url, branch("main"), &tmp.path().join("badtoken"));
    req.auth = GitAuth::Bearer("bad-t0ken".into());
    let err = fetch(&req).unwrap_err();
    eprintln!("{}: {err}", err.reason());
    assert_eq!(err.reason(), "AuthenticationFailed", "{err}");
    assert!(!err.to_string().contains("bad-t0ken"), "{err}");

    let err = fetch(&request(&url, branch("main"), &tmp.path().join("none"))).unwrap_err();
    assert_eq!(err.reason(), "AuthenticationFailed", "{err}");

    // Credentials in the URL never show up in a message.
    let leaky = url.replace("http://", "http://flux:url-pa55@");
    let err = fetch(&request(&leaky, branch("nope"), &tmp.path().join("u"))).unwrap_err();
    assert!(!err.to_string().contains("url-pa55"), "{err}");
}

#[test]
fn https_with_custom_ca() {
    let tmp = TempDir::new("pennant-git-tls");
    let (ca, cert, key) = gitserver::make_tls(tmp.path());
    let server = GitServer::start(ServerOptions {
        tls: Some((cert, key)),
        ..Default::default()
    });
    let repo = server.create_repo("secure");
    let sha = repo.commit("main", &[("a", "b")], "x");
    let url = server.url("secure");
    assert!(url.starts_with("https://"));

    let mut req = request(&url, branch("main"), &tmp.path().join("ok"));
    req.ca_pem = Some(std::fs::read(&ca).unwrap());
    assert_eq!(checked(fetch(&req)).1, sha);

    // Without the CA the server is not trusted.
    let err = fetch(&request(
        &url,
        branch("main"),
        &tmp.path().join("untrusted"),
    ))
    .unwrap_err();
    assert_eq!(err.reason(), "GitOperationFailed", "{err}");
}

#[test]
fn unreachable_server_and_bad_urls_fail_clearly() {
    // A port that was free a moment ago: connection refused, well within the timeout.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let tmp = TempDir::new("pennant-git-test");
    let mut req = request(
        &format!("http://127.0.0.1:{port}/x.git"),
        branch("main"),
        &tmp.path().join("d"),
    );
    req.timeout = Duration::from_secs(5);
    let start = Instant::now();
    let err = fetch(&req).unwrap_err();
    eprintln!("{}: {err}", err.reason());
    assert!(
        start.elapsed() < Duration::from_secs(10),
        "{:?}",
        start.elapsed()
    );
    assert_eq!(err.reason(), "GitOperationFailed", "{err}");

    // A server that accepts but never answers: bounded by the timeout.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let mut req = request(
        &format!("http://127.0.0.1:{port}/x.git"),
        branch("main"),
        &tmp.path().join("e"),
    );
    req.timeout = Duration::from_secs(2);
    let start = Instant::now();
    let err = fetch(&req).unwrap_err();
    eprintln!("{}: {err}", err.reason());
    assert!(
        start.elapsed() < Duration::from_secs(8),
        "took {:?}: {err}",
        start.elapsed()
    );
    drop(listener);

    for bad in [
        "git@github.com:org/repo.git",
        "ftp://example.com/repo",
        "not a url at all",
    ] {
        let err = fetch(&request(bad, branch("main"), &tmp.path().join("f"))).unwrap_err();
        assert_eq!(err.reason(), "URLInvalid", "{bad}: {err}");
    }
}

#[test]
fn ssh_with_identity_and_known_hosts() {
    let server = GitServer::start(ServerOptions::default());
    let sshd = gitserver::SshServer::start(&server.root);
    let repo = server.create_repo("over-ssh");
    let sha = repo.commit("main", &[("k", "v")], "via ssh");
    let tmp = TempDir::new("pennant-git-ssh");
    let url = sshd.url("over-ssh");

    let mut req = request(&url, branch("main"), &tmp.path().join("ok"));
    req.auth = GitAuth::Ssh {
        identity: sshd.identity.clone(),
        known_hosts: sshd.known_hosts.clone(),
        password: None,
    };
    let (rev, _, msg) = checked(fetch(&req));
    assert_eq!(
        (rev.as_str(), msg.as_str()),
        (format!("main@sha1:{sha}").as_str(), "via ssh")
    );
    assert_eq!(
        std::fs::read_to_string(tmp.path().join("ok/k")).unwrap(),
        "v"
    );

    req.dest = tmp.path().join("again");
    req.last_revision = Some(rev.clone());
    assert_eq!(fetch(&req).unwrap(), Fetched::Unchanged { revision: rev });

    // An unknown host key is refused: AuthenticationFailed, as Flux reports it.
    req.last_revision = None;

    // The same key encrypted with a passphrase (`password` in the Secret).
    let enc = tmp.path().join("encrypted_key");
    std::fs::write(&enc, &sshd.identity).unwrap();
    std::fs::set_permissions(&enc, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let out = std::process::Command::new("ssh-keygen")
        .args(["-q", "-p", "-P", "", "-N", "k3y-pass", "-f"])
        .arg(&enc)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let encrypted = std::fs::read(&enc).unwrap();
    req.dest = tmp.path().join("encrypted");
    req.auth = GitAuth::Ssh {
        identity: encrypted.clone(),
        known_hosts: sshd.known_hosts.clone(),
        password: Some("k3y-pass".into()),
    };
    assert_eq!(checked(fetch(&req)).1, sha);
    req.dest = tmp.path().join("encrypted-wrong");
    req.auth = GitAuth::Ssh {
        identity: encrypted,
        known_hosts: sshd.known_hosts.clone(),
        password: Some("not-the-pass".into()),
    };
    let err = fetch(&req).unwrap_err();
    eprintln!("{}: {err}", err.reason());
    assert_eq!(err.reason(), "AuthenticationFailed", "{err}");
    assert!(!err.to_string().contains("not-the-pass"), "{err}");

    req.dest = tmp.path().join("hostkey");
    req.auth = GitAuth::Ssh {
        identity: sshd.identity.clone(),
        known_hosts: format!("[127.0.0.1]:{} ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIDWrong0000000000000000000000000000000000000\n", sshd.port).into_bytes(),
        password: None,
    };
    let err = fetch(&req).unwrap_err();
    eprintln!("{}: {err}", err.reason());
    assert_eq!(err.reason(), "AuthenticationFailed", "{err}");

    // A key the server does not know.
    let other = TempDir::new("pennant-git-ssh-key");
    let out = std::process::Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(other.path().join("k"))
        .output()
        .unwrap();
    assert!(out.status.success());
    req.dest = tmp.path().join("badkey");
    req.auth = GitAuth::Ssh {
        identity: std::fs::read(other.path().join("k")).unwrap(),
        known_hosts: sshd.known_hosts.clone(),
        password: None,
    };
    let err = fetch(&req).unwrap_err();
    eprintln!("{}: {err}", err.reason());
    assert_eq!(err.reason(), "AuthenticationFailed", "{err}");
}

/// The controller runs `fetch` under tokio with `spawn_blocking` (reqwest's blocking client owns
/// its own runtime: it must not be created or dropped on an async worker).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fetch_runs_in_spawn_blocking() {
    let server = GitServer::start(ServerOptions::default());
    let repo = server.create_repo("app");
    let sha = repo.commit("main", &[("a", "b")], "x");
    let tmp = TempDir::new("pennant-git-test");
    let req = request(&server.url("app"), branch("main"), &tmp.path().join("d"));
    let got = tokio::task::spawn_blocking(move || fetch(&req))
        .await
        .unwrap();
    assert_eq!(checked(got).1, sha);
}

/// A repository whose pack takes ~20 s to arrive from a throttled server.
fn slow_server() -> (GitServer, String) {
    let server = GitServer::start(ServerOptions {
        rate: Some(100_000),
        ..Default::default()
    });
    let repo = server.create_repo("big");
    repo.commit("main", &[("blob.txt", &noise(2_000_000))], "big");
    let url = server.url("big");
    (server, url)
}

#[test]
fn timeout_stops_the_fetch_and_leaves_no_temporary_files() {
    let (_server, url) = slow_server();
    let tmp = TempDir::new("pennant-git-timeout");
    let mut req = request(&url, branch("main"), &tmp.path().join("tree"));
    req.timeout = Duration::from_secs(2);
    let start = Instant::now();
    let err = fetch(&req).unwrap_err();
    let took = start.elapsed();
    assert!(took < Duration::from_secs(4), "took {took:?}");
    assert_eq!(err.reason(), "GitOperationFailed");
    assert!(err.to_string().contains("timeout of 2s"), "{err}");
    let left: Vec<_> = std::fs::read_dir(tmp.path()).unwrap().collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}

#[test]
fn interrupt_stops_the_fetch_and_leaves_no_temporary_files() {
    let (_server, url) = slow_server();
    let tmp = TempDir::new("pennant-git-interrupt");
    let mut req = request(&url, branch("main"), &tmp.path().join("tree"));
    req.timeout = Duration::from_secs(60);
    let flag = req.interrupt.clone();
    std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs(1));
        flag.store(true, std::sync::atomic::Ordering::SeqCst);
    });
    let start = Instant::now();
    let err = fetch(&req).unwrap_err();
    let took = start.elapsed();
    assert!(took < Duration::from_secs(3), "took {took:?}");
    assert!(err.to_string().contains("interrupted"), "{err}");
    let left: Vec<_> = std::fs::read_dir(tmp.path()).unwrap().collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}

#[test]
fn commit_pinned_to_a_branch_must_be_on_that_branch() {
    let server = GitServer::start(ServerOptions::default());
    let repo = server.create_repo("pins");
    let a = repo.commit("main", &[("f", "a")], "a");
    let b = repo.commit("main", &[("f", "b")], "b");
    // `dev` forks after b; its commit is not on main
    let d = repo.commit("dev", &[("f", "d")], "d");
    let url = server.url("pins");
    let tmp = TempDir::new("pennant-git-pins");
    let pin = |sha: &str, branch: &str| GitRef::Commit {
        sha: sha.into(),
        branch: Some(branch.into()),
    };

    // an older commit of the branch: its tree, under the branch's name
    let dest = tmp.path().join("old");
    let (rev, _, msg) = checked(fetch(&request(&url, pin(&a, "main"), &dest)));
    assert_eq!((rev, msg), (format!("main@sha1:{a}"), "a".to_string()));
    assert_eq!(std::fs::read_to_string(dest.join("f")).unwrap(), "a");

    // a commit only on dev: refused, as Flux's single-branch clone does
    let dest = tmp.path().join("other");
    let err = fetch(&request(&url, pin(&d, "main"), &dest)).unwrap_err();
    assert_eq!(err.reason(), "GitOperationFailed");
    let text = err.to_string();
    assert!(
        text.contains(&d) && text.contains("branch 'main'"),
        "{text}"
    );
    assert!(!dest.exists());
    // ... even when the stored artifact has that commit under another branch
    let mut req = request(&url, pin(&d, "main"), &dest);
    req.last_revision = Some(format!("dev@sha1:{d}"));
    assert!(fetch(&req).is_err());
    // while the same revision is still reused without a download
    let mut req = request(&url, pin(&b, "main"), &dest);
    req.last_revision = Some(format!("main@sha1:{b}"));
    assert!(matches!(fetch(&req).unwrap(), Fetched::Unchanged { .. }));
    // and on its own branch it is fine
    let (rev, _, _) = checked(fetch(&request(&url, pin(&d, "dev"), &dest)));
    assert_eq!(rev, format!("dev@sha1:{d}"));
}

#[test]
fn submodules_are_fetched_at_their_recorded_commits_with_the_parents_credentials() {
    let server = GitServer::start(ServerOptions {
        user: Some("git:s3cret".into()),
        ..Default::default()
    });
    let deep = server.create_repo("deep");
    let deep_sha = deep.commit("main", &[("deep.txt", "deep\n")], "deep");
    let lib = server.create_repo("lib");
    // lib has a submodule of its own (relative URL), then moves on past the recorded commit
    lib.set_submodule("deep", "../deep.git", &deep_sha);
    let lib_v1 = lib.commit("main", &[("lib.yaml", "v: 1\n")], "lib v1");
    lib.commit("main", &[("lib.yaml", "v: 2\n")], "lib v2");
    let app = server.create_repo("app");
    app.set_submodule("libs/lib", "../lib.git", &lib_v1);
    app.set_submodule("vendor/deep", &server.url("deep"), &deep_sha);
    let app_sha = app.commit("main", &[("app.yaml", "app\n")], "app");

    let tmp = TempDir::new("pennant-git-test");
    let auth = GitAuth::Basic {
        username: "git".into(),
        password: "s3cret".into(),
    };
    let mut req = request(&server.url("app"), branch("main"), &tmp.path().join("with"));
    req.auth = auth.clone();
    req.recurse_submodules = true;
    let (rev, _, _) = checked(fetch(&req));
    assert_eq!(rev, format!("main@sha1:{app_sha}"), "the parent's revision");
    let files = tree(&req.dest);
    assert_eq!(
        files.get("libs/lib/lib.yaml").map(String::as_str),
        Some("v: 1\n")
    );
    assert_eq!(
        files.get("libs/lib/deep/deep.txt").map(String::as_str),
        Some("deep\n"),
        "nested submodule: {files:?}"
    );
    assert_eq!(
        files.get("vendor/deep/deep.txt").map(String::as_str),
        Some("deep\n"),
        "absolute URL on the same host: {files:?}"
    );
    assert!(!files.contains_key(".git"), "{files:?}");
    // each submodule was fetched at one commit: a shallow fetch of that commit
    let fetches = server.fetch_count();
    assert_eq!(fetches, 4, "app, lib, lib's deep, vendor/deep");

    // without recurseSubmodules: the submodule directories stay empty
    let mut plain = request(
        &server.url("app"),
        branch("main"),
        &tmp.path().join("without"),
    );
    plain.auth = auth;
    checked(fetch(&plain));
    assert!(plain.dest.join("libs/lib").is_dir());
    let files = tree(&plain.dest);
    assert!(files.keys().all(|k| !k.starts_with("libs/")), "{files:?}");
    assert_eq!(server.fetch_count(), fetches + 1);
}

#[test]
fn a_submodule_that_cannot_be_fetched_fails_naming_it() {
    let server = GitServer::start(ServerOptions::default());
    let lib = server.create_repo("lib");
    let lib_sha = lib.commit("main", &[("lib.yaml", "v: 1\n")], "lib");
    let app = server.create_repo("app");
    app.set_submodule("libs/x", "../missing.git", &lib_sha);
    app.commit("main", &[("app.yaml", "app\n")], "app");
    let tmp = TempDir::new("pennant-git-test");
    let mut req = request(&server.url("app"), branch("main"), &tmp.path().join("a"));
    req.recurse_submodules = true;
    let e = fetch(&req).unwrap_err();
    assert_eq!(e.reason(), "GitOperationFailed", "{e}");
    assert!(
        e.to_string()
            .starts_with("failed to update submodule 'libs/x' from '../missing.git': "),
        "{e}"
    );
    assert!(!req.dest.exists(), "nothing left behind");

    // a commit the submodule's repository does not have
    let gone = "0123456789012345678901234567890123456789";
    app.set_submodule("libs/x", "../lib.git", gone);
    app.commit("main", &[], "bad pointer");
    let e = fetch(&req).unwrap_err();
    assert!(
        e.to_string()
            .starts_with("failed to update submodule 'libs/x' from '../lib.git': "),
        "{e}"
    );

    // a submodule URL climbing above the host
    app.set_submodule("libs/x", "../../../lib.git", &lib_sha);
    app.commit("main", &[], "bad url");
    let e = fetch(&req).unwrap_err();
    assert_eq!(e.reason(), "URLInvalid", "{e}");
    assert!(e.to_string().contains("climbs above the host"), "{e}");
}

#[test]
fn sparse_checkout_keeps_only_the_named_directories() {
    let server = GitServer::start(ServerOptions::default());
    let app = server.create_repo("app");
    app.commit(
        "main",
        &[
            ("apps/a.yaml", "a\n"),
            ("apps-old/x.yaml", "x\n"),
            ("infra/base/b.yaml", "b\n"),
            ("README.md", "hi\n"),
        ],
        "first",
    );
    let tmp = TempDir::new("pennant-git-test");
    let mut req = request(&server.url("app"), branch("main"), &tmp.path().join("s"));
    req.sparse_checkout = vec!["./apps/".into(), "infra/base".into()];
    checked(fetch(&req));
    let files: Vec<String> = tree(&req.dest).into_keys().collect();
    assert_eq!(files, ["apps/a.yaml", "infra/base/b.yaml"]);

    req.dest = tmp.path().join("missing");
    req.sparse_checkout = vec!["apps".into(), "nope".into()];
    let e = fetch(&req).unwrap_err();
    assert_eq!(e.reason(), "GitOperationFailed");
    assert_eq!(
        e.to_string(),
        "failed to sparse checkout directories : sparse checkout dir 'nope' does not exist in repository"
    );
}
