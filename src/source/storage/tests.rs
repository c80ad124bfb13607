use super::*;
use std::time::UNIX_EPOCH;

fn storage(root: &Path) -> Storage {
    Storage::new(
        root,
        "source-controller.flux-system.svc.cluster.local.",
        Retention::default(),
    )
}

fn at(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(secs)
}

fn set_mtime(path: &Path, t: SystemTime) {
    File::options()
        .write(true)
        .open(path)
        .unwrap()
        .set_modified(t)
        .unwrap();
}

fn dir_names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn paths_are_plain_components_under_the_kind_in_lowercase() {
    assert_eq!(
        Storage::artifact_path("GitRepository", "flux-system", "podinfo", "abc.tar.gz").unwrap(),
        "gitrepository/flux-system/podinfo/abc.tar.gz"
    );
    assert_eq!(
        Storage::artifact_path("OCIRepository", "ns", "n", "sha256:ab.tar.gz").unwrap(),
        "ocirepository/ns/n/sha256:ab.tar.gz"
    );
    for (ns, name, file) in [
        ("..", "n", "f"),
        ("ns", "a/b", "f"),
        ("ns", "", "f"),
        ("ns", "n", "../../etc/passwd"),
        ("ns", "n", ".tmp-x"),
        ("ns", "n", "."),
        ("ns", ".", "f"),
        ("ns", "n\\m", "f"),
    ] {
        let err = Storage::artifact_path("GitRepository", ns, name, file).unwrap_err();
        assert!(
            matches!(err, StorageError::InvalidName(_)),
            "{ns}/{name}/{file}"
        );
    }
    let s = storage(Path::new("/data"));
    assert_eq!(
        s.local_path("gitrepository/ns/n/f.tar.gz"),
        Some(PathBuf::from("/data/gitrepository/ns/n/f.tar.gz"))
    );
    for bad in ["", "../x", "a/../../x", "a/./b", "/"] {
        assert_eq!(s.local_path(bad), None, "{bad}");
    }
}

#[test]
fn url_uses_the_advertised_address_and_keeps_its_scheme() {
    let cases = [
        (
            "source-controller.flux-system.svc.cluster.local.",
            "http://source-controller.flux-system.svc.cluster.local./gitrepository/ns/n/a.tar.gz",
        ),
        (
            "127.0.0.1:9090",
            "http://127.0.0.1:9090/gitrepository/ns/n/a.tar.gz",
        ),
        (
            "https://artifacts.example",
            "https://artifacts.example/gitrepository/ns/n/a.tar.gz",
        ),
        (
            "http://host:80/",
            "http://host:80/gitrepository/ns/n/a.tar.gz",
        ),
    ];
    for (adv, want) in cases {
        let s = Storage::new("/data", adv, Retention::default());
        assert_eq!(s.url_for("gitrepository/ns/n/a.tar.gz"), want);
        assert_eq!(s.url_for("/gitrepository/ns/n/a.tar.gz"), want);
    }
}

#[test]
fn archive_dir_stores_atomically_with_digest_size_and_mode() {
    let root = tempfile::tempdir().unwrap();
    let src = tempfile::tempdir().unwrap();
    fs::write(src.path().join("app.yaml"), "kind: ConfigMap\n").unwrap();
    let s = storage(root.path());
    let rules = IgnoreRules::from_patterns(None).unwrap();
    let a = s
        .archive_dir(
            "GitRepository",
            "ns",
            "app",
            "abc.tar.gz",
            src.path(),
            &rules,
        )
        .unwrap();
    assert_eq!(a.path, "gitrepository/ns/app/abc.tar.gz");
    assert_eq!(
        a.url,
        "http://source-controller.flux-system.svc.cluster.local./gitrepository/ns/app/abc.tar.gz"
    );
    let file = root.path().join(&a.path);
    let bytes = fs::read(&file).unwrap();
    assert_eq!(a.size, bytes.len() as u64);
    assert_eq!(a.digest, artifact::sha256_digest(bytes.as_slice()).unwrap());
    assert_eq!(
        fs::metadata(&file).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert!(s.verify(&a.path, &a.digest));
    assert!(s.exists(&a.path));
    assert_eq!(dir_names(file.parent().unwrap()), vec!["abc.tar.gz"]);
    let age = Timestamp::now().duration_since(a.last_update_time);
    assert!(age.as_secs() < 60);
}

/// A failed write (here a file over the limit) leaves the artifact already at that path as it
/// was, and no temp file behind.
#[test]
fn failed_archive_keeps_the_previous_artifact_and_no_temp_file() {
    let root = tempfile::tempdir().unwrap();
    let src = tempfile::tempdir().unwrap();
    fs::write(src.path().join("small.yaml"), "x").unwrap();
    let mut s = storage(root.path());
    s.max_file_size = Some(10);
    let rules = IgnoreRules::from_patterns(None).unwrap();
    let first = s
        .archive_dir("GitRepository", "ns", "app", "a.tar.gz", src.path(), &rules)
        .unwrap();
    fs::write(src.path().join("big.yaml"), "y".repeat(11)).unwrap();
    let err = s
        .archive_dir("GitRepository", "ns", "app", "a.tar.gz", src.path(), &rules)
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "file 'big.yaml' is 11 bytes, over the limit of 10 bytes"
    );
    assert!(s.verify(&first.path, &first.digest));
    assert_eq!(
        dir_names(&root.path().join("gitrepository/ns/app")),
        vec!["a.tar.gz"]
    );
}

#[test]
fn store_bytes_and_file_and_verify_detects_tampering() {
    let root = tempfile::tempdir().unwrap();
    let s = storage(root.path());
    let index = b"apiVersion: v1\nentries: {}\n";
    let a = s
        .store_bytes("HelmRepository", "ns", "repo", "index-abc.yaml", index)
        .unwrap();
    assert_eq!(a.path, "helmrepository/ns/repo/index-abc.yaml");
    assert_eq!(a.digest, artifact::sha256_digest(index.as_slice()).unwrap());
    assert_eq!(a.size, index.len() as u64);
    let src = root.path().join("chart.tgz");
    fs::write(&src, b"chart").unwrap();
    let c = s
        .store_file("HelmChart", "ns", "c", "podinfo-6.0.0.tgz", &src)
        .unwrap();
    assert!(s.verify(&c.path, &c.digest));
    assert!(!s.verify(&c.path, "sha512:00"));
    assert!(!s.verify("helmchart/ns/c/missing.tgz", &c.digest));
    assert!(!s.verify("../chart.tgz", &c.digest));
    fs::write(root.path().join(&c.path), b"tampered").unwrap();
    assert!(!s.verify(&c.path, &c.digest));
}

#[test]
fn symlink_points_at_the_current_file_and_moves_atomically() {
    let root = tempfile::tempdir().unwrap();
    let s = storage(root.path());
    s.store_bytes("HelmChart", "ns", "c", "a-1.0.0.tgz", b"one")
        .unwrap();
    s.store_bytes("HelmChart", "ns", "c", "a-1.1.0.tgz", b"two")
        .unwrap();
    let url = s
        .symlink("HelmChart", "ns", "c", "a-1.0.0.tgz", "latest.tar.gz")
        .unwrap();
    assert_eq!(
        url,
        "http://source-controller.flux-system.svc.cluster.local./helmchart/ns/c/latest.tar.gz"
    );
    let link = root.path().join("helmchart/ns/c/latest.tar.gz");
    assert_eq!(fs::read(&link).unwrap(), b"one");
    s.symlink("HelmChart", "ns", "c", "a-1.1.0.tgz", "latest.tar.gz")
        .unwrap();
    assert_eq!(fs::read(&link).unwrap(), b"two");
    assert_eq!(fs::read_link(&link).unwrap(), PathBuf::from("a-1.1.0.tgz"));
    assert!(
        s.symlink("HelmChart", "ns", "c", "../../x", "latest.tar.gz")
            .is_err()
    );
}

/// (case, files with mtimes, current, now in seconds, retention, garbage).
type GcCase = (
    &'static str,
    Vec<(String, SystemTime)>,
    Option<&'static str>,
    u64,
    Retention,
    Vec<&'static str>,
);

/// Flux's GetGarbageFiles.
#[test]
fn garbage_follows_fluxs_ttl_then_records() {
    let minute = Duration::from_secs(60);
    let keep2 = Retention::default();
    let files = |v: &[(&str, u64)]| -> Vec<(String, SystemTime)> {
        v.iter().map(|(n, t)| (n.to_string(), at(*t))).collect()
    };
    let cases: Vec<GcCase> = vec![
        (
            "nothing to do below records",
            files(&[("a", 100), ("b", 110)]),
            Some("b"),
            120,
            keep2.clone(),
            vec![],
        ),
        (
            "fresh files: the oldest go until records remain",
            files(&[("a", 100), ("b", 101), ("c", 102), ("d", 103), ("e", 104)]),
            Some("e"),
            110,
            keep2.clone(),
            vec!["a", "b", "c"],
        ),
        (
            "expired files go even below records",
            files(&[("a", 0), ("b", 10), ("c", 200)]),
            Some("c"),
            200,
            keep2.clone(),
            vec!["a", "b"],
        ),
        (
            "the current file is never garbage, however old",
            files(&[("cur", 0), ("b", 100), ("c", 101), ("d", 102)]),
            Some("cur"),
            110,
            keep2.clone(),
            vec!["b", "c"],
        ),
        (
            "ttl and records together keep exactly records (Flux keeps one more)",
            files(&[
                ("a", 0),
                ("b", 100),
                ("c", 101),
                ("d", 102),
                ("e", 103),
                ("f", 104),
            ]),
            Some("f"),
            110,
            keep2.clone(),
            vec!["a", "b", "c", "d"],
        ),
        (
            "equal mtimes are ordered by name",
            files(&[("b", 100), ("a", 100), ("c", 100)]),
            Some("c"),
            110,
            keep2.clone(),
            vec!["a"],
        ),
        (
            "no current artifact yet",
            files(&[("a", 100), ("b", 101), ("c", 102)]),
            None,
            110,
            Retention {
                records: 1,
                ttl: minute,
            },
            vec!["a", "b"],
        ),
        (
            "records 0 with a long ttl keeps only the current",
            files(&[("a", 100), ("b", 101)]),
            Some("b"),
            110,
            Retention {
                records: 0,
                ttl: 10 * minute,
            },
            vec!["a"],
        ),
        (
            "a file from the future (clock skew) is not expired",
            files(&[("a", 500), ("b", 100)]),
            Some("b"),
            110,
            keep2.clone(),
            vec![],
        ),
    ];
    for (name, files, current, now, retention, want) in cases {
        let got = garbage(&files, current, at(now), &retention);
        assert_eq!(got, want, "{name}");
    }
}

#[test]
fn gc_removes_garbage_and_stale_temp_files_only() {
    let root = tempfile::tempdir().unwrap();
    let s = storage(root.path());
    let dir = root.path().join("gitrepository/ns/app");
    fs::create_dir_all(&dir).unwrap();
    let now = at(10_000);
    for (name, t) in [
        ("old.tar.gz", 1_000),
        ("older.tar.gz", 900),
        ("prev.tar.gz", 9_990),
        ("cur.tar.gz", 9_995),
        ("cur.tar.gz.lock", 100),
        (".tmp-stale", 100),
        (".tmp-writing", 9_999),
    ] {
        fs::write(dir.join(name), name).unwrap();
        set_mtime(&dir.join(name), at(t));
    }
    std::os::unix::fs::symlink("old.tar.gz", dir.join("latest.tar.gz")).unwrap();
    let mut removed = s
        .gc("GitRepository", "ns", "app", Some("cur.tar.gz"), now)
        .unwrap();
    removed.sort();
    assert_eq!(
        removed,
        vec![
            dir.join(".tmp-stale"),
            dir.join("old.tar.gz"),
            dir.join("older.tar.gz")
        ]
    );
    assert_eq!(
        dir_names(&dir),
        vec![
            ".tmp-writing",
            "cur.tar.gz",
            "cur.tar.gz.lock",
            "latest.tar.gz",
            "prev.tar.gz"
        ]
    );
    assert!(
        s.gc("GitRepository", "ns", "gone", None, now)
            .unwrap()
            .is_empty()
    );
}

/// Flux looks at no more than 1000 files per GC (`GarbageCountLimit`).
#[test]
fn gc_looks_at_no_more_than_a_thousand_files() {
    let root = tempfile::tempdir().unwrap();
    let s = storage(root.path());
    let dir = root.path().join("gitrepository/ns/app");
    fs::create_dir_all(&dir).unwrap();
    for i in 0..1005 {
        fs::write(dir.join(format!("{i:04}.tar.gz")), b"x").unwrap();
    }
    let removed = s
        .gc(
            "GitRepository",
            "ns",
            "app",
            Some("1004.tar.gz"),
            SystemTime::now(),
        )
        .unwrap();
    assert_eq!(removed.len(), GC_FILE_LIMIT - 2);
    assert!(dir.join("1004.tar.gz").exists());
}

#[test]
fn remove_all_removes_the_object_directory_only() {
    let root = tempfile::tempdir().unwrap();
    let s = storage(root.path());
    s.store_bytes("GitRepository", "ns", "a", "1.tar.gz", b"1")
        .unwrap();
    s.store_bytes("GitRepository", "ns", "b", "1.tar.gz", b"1")
        .unwrap();
    assert!(s.remove_all("GitRepository", "ns", "a").unwrap());
    assert!(!s.remove_all("GitRepository", "ns", "a").unwrap());
    assert!(!root.path().join("gitrepository/ns/a").exists());
    assert!(root.path().join("gitrepository/ns/b/1.tar.gz").exists());
    assert!(s.remove_all("GitRepository", "..", "a").is_err());
}

/// Writers of one object are serialised by its lock: concurrent writes of many files all land
/// whole, and GC running meanwhile never sees a half-written file as an artifact.
#[test]
fn concurrent_writes_and_gc_of_one_object_are_serialised() {
    let root = tempfile::tempdir().unwrap();
    let s = Storage::new(
        root.path(),
        "h",
        Retention {
            records: 100,
            ttl: Duration::from_secs(3600),
        },
    );
    let threads: Vec<_> = (0..8)
        .map(|i| {
            let s = s.clone();
            std::thread::spawn(move || {
                let body = vec![i as u8; 256 * 1024];
                let a = s
                    .store_bytes("Bucket", "ns", "b", &format!("{i}.tar.gz"), &body)
                    .unwrap();
                s.gc(
                    "Bucket",
                    "ns",
                    "b",
                    Some(&format!("{i}.tar.gz")),
                    SystemTime::now(),
                )
                .unwrap();
                a
            })
        })
        .collect();
    for t in threads {
        let a = t.join().unwrap();
        assert!(s.verify(&a.path, &a.digest), "{}", a.path);
    }
    assert_eq!(dir_names(&root.path().join("bucket/ns/b")).len(), 8);
}
