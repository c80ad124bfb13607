use super::*;
use std::os::unix::fs::symlink;

fn write(root: &Path, rel: &str, content: &str) {
    let p = root.join(rel);
    fs::create_dir_all(p.parent().unwrap()).unwrap();
    fs::write(p, content).unwrap();
}

fn archive(root: &Path, rules: &IgnoreRules) -> (Vec<u8>, ArchiveSummary) {
    archive_dir(root, rules, &ArchiveLimits::default(), Vec::new()).unwrap()
}

fn defaults() -> IgnoreRules {
    IgnoreRules::from_patterns(None).unwrap()
}

fn gunzip(gz: &[u8]) -> Vec<u8> {
    let mut out = vec![];
    MultiGzDecoder::new(gz).read_to_end(&mut out).unwrap();
    out
}

/// (name, type flag, mode, size) of every entry, as a tar reader sees them.
fn entries(gz: &[u8]) -> Vec<(String, char, u32, u64)> {
    let mut a = tar::Archive::new(MultiGzDecoder::new(gz));
    a.entries()
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            let h = e.header();
            (
                e.path().unwrap().to_string_lossy().into_owned(),
                h.entry_type().as_byte() as char,
                h.mode().unwrap(),
                h.size().unwrap(),
            )
        })
        .collect()
}

/// The tree of Flux's own archive test, plus what Flux leaves out: a symlink, a FIFO-less
/// special case (symlinked dir), ignored files and an executable.
fn sample_tree(root: &Path) {
    write(root, "deploy/app.yaml", "kind: Deployment\n");
    write(root, "deploy/base/kustomization.yaml", "resources: []\n");
    write(root, "a.txt", "a");
    write(root, "a/b.txt", "b");
    write(root, "logo.png", "png");
    write(root, ".git/config", "[core]");
    write(root, ".github/workflows/ci.yaml", "on: push");
    write(root, "run.sh", "#!/bin/sh\n");
    fs::set_permissions(root.join("run.sh"), fs::Permissions::from_mode(0o755)).unwrap();
    fs::set_permissions(root.join("a.txt"), fs::Permissions::from_mode(0o644)).unwrap();
    symlink("a.txt", root.join("link.txt")).unwrap();
    symlink("deploy", root.join("linkdir")).unwrap();
}

#[test]
fn archive_entries_are_sorted_normalised_and_filtered_as_flux() {
    let tmp = tempfile::tempdir().unwrap();
    sample_tree(tmp.path());
    let (gz, summary) = archive(tmp.path(), &defaults());
    assert_eq!(
        entries(&gz),
        vec![
            (".".into(), '5', 0o750, 0),
            ("a".into(), '5', 0o750, 0),
            ("a/b.txt".into(), '0', 0o600, 1),
            ("a.txt".into(), '0', 0o600, 1),
            ("deploy".into(), '5', 0o750, 0),
            ("deploy/app.yaml".into(), '0', 0o600, 17),
            ("deploy/base".into(), '5', 0o750, 0),
            ("deploy/base/kustomization.yaml".into(), '0', 0o600, 14),
            ("run.sh".into(), '0', 0o700, 10),
        ]
    );
    assert_eq!(summary.files, 5);
    assert_eq!(summary.size, gz.len() as u64);
    assert_eq!(summary.digest, sha256_digest(gz.as_slice()).unwrap());
    // Every header: zero ids and times, empty names, USTAR magic.
    let tar_bytes = gunzip(&gz);
    let first = &tar_bytes[..512];
    assert_eq!(&first[UID.0..GID.1], b"0000000\x000000000\x00");
    assert_eq!(&first[MTIME.0..MTIME.1], b"00000000000\0");
    assert_eq!(&first[MAGIC.0..VERSION.1], b"ustar\x0000");
    assert!(
        first[265..329].iter().all(|b| *b == 0),
        "uname, gname empty"
    );
}

#[test]
fn digest_is_stable_across_runs_mtimes_and_creation_order() {
    let one = tempfile::tempdir().unwrap();
    let two = tempfile::tempdir().unwrap();
    for (rel, c) in [("x/1.yaml", "1"), ("b.yaml", "b"), ("a.yaml", "a")] {
        write(one.path(), rel, c);
    }
    for (rel, c) in [("a.yaml", "a"), ("b.yaml", "b"), ("x/1.yaml", "1")] {
        write(two.path(), rel, c);
    }
    let old = SystemTimeExt::epoch_plus(1_000_000);
    File::options()
        .write(true)
        .open(two.path().join("a.yaml"))
        .unwrap()
        .set_modified(old)
        .unwrap();
    let (gz1, s1) = archive(one.path(), &defaults());
    let (_, s1_again) = archive(one.path(), &defaults());
    let (gz2, s2) = archive(two.path(), &defaults());
    assert_eq!(s1, s1_again);
    assert_eq!(s1, s2);
    assert_eq!(gz1, gz2);
    // A content change changes the digest.
    write(two.path(), "a.yaml", "A");
    assert_ne!(archive(two.path(), &defaults()).1.digest, s1.digest);
}

struct SystemTimeExt;
impl SystemTimeExt {
    fn epoch_plus(secs: u64) -> std::time::SystemTime {
        std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs)
    }
}

#[test]
fn ignored_directory_entry_is_left_out_but_reincluded_files_are_kept() {
    let tmp = tempfile::tempdir().unwrap();
    write(tmp.path(), "dir/keep.yaml", "k");
    write(tmp.path(), "dir/drop.yaml", "d");
    let rules = IgnoreRules::from_patterns(Some("dir/\n!dir/keep.yaml")).unwrap();
    let names: Vec<_> = entries(&archive(tmp.path(), &rules).0)
        .into_iter()
        .map(|e| e.0)
        .collect();
    // Flux's walk filters each path on its own: no `dir` entry, but its re-included file.
    assert_eq!(names, vec![".", "dir/keep.yaml"]);
}

#[test]
fn file_over_the_limit_is_named() {
    let tmp = tempfile::tempdir().unwrap();
    write(tmp.path(), "small.yaml", "x");
    write(tmp.path(), "big/values.yaml", &"y".repeat(100));
    let limits = ArchiveLimits {
        max_file_size: Some(10),
    };
    let err = archive_dir(tmp.path(), &defaults(), &limits, Vec::new()).unwrap_err();
    assert_eq!(
        err.to_string(),
        "file 'big/values.yaml' is 100 bytes, over the limit of 10 bytes"
    );
    let err = archive_dir(
        &tmp.path().join("small.yaml"),
        &defaults(),
        &limits,
        Vec::new(),
    );
    assert!(matches!(err, Err(ArchiveError::NotADirectory(_))));
}

#[test]
fn long_and_non_ascii_names_use_ustar_prefix_or_pax_as_go() {
    let long_dir = "d".repeat(120);
    let ustar_name = format!("{long_dir}/file.yaml");
    assert_eq!(
        split_ustar(ustar_name.as_bytes()),
        Some((long_dir.as_bytes(), b"file.yaml".as_slice()))
    );
    assert_eq!(split_ustar(b"short"), None);
    assert_eq!(split_ustar(&[b'x'; 101]), None, "no slash to split at");
    assert_eq!(pax_record("path", b"a"), b"9 path=a\n");
    // 98 bytes without the length field, 100 with it, whose third digit makes it 101.
    let v = vec![b'v'; 91];
    let rec = pax_record("path", &v);
    assert_eq!(rec.len(), 101);
    assert!(rec.starts_with(b"101 path="));

    let tmp = tempfile::tempdir().unwrap();
    write(tmp.path(), &ustar_name, "u");
    write(tmp.path(), "ünïcode.yaml", "p");
    let (gz, _) = archive(tmp.path(), &defaults());
    let names: Vec<_> = entries(&gz).into_iter().map(|e| e.0).collect();
    assert_eq!(
        names,
        vec![".", long_dir.as_str(), &ustar_name, "ünïcode.yaml"]
    );
    let raw = gunzip(&gz);
    // The PAX extended headers are named as Go names them: ASCII only, at most 100 bytes.
    let pax_names: Vec<Vec<u8>> = raw
        .chunks(512)
        .filter(|b| b.len() == 512 && b[TYPEFLAG] == b'x')
        .map(|b| b[..100].iter().copied().take_while(|c| *c != 0).collect())
        .collect();
    let dir_pax = format!("PaxHeaders.0/{long_dir}").as_bytes()[..100].to_vec();
    assert_eq!(
        pax_names,
        vec![dir_pax, b"PaxHeaders.0/ncode.yaml".to_vec()]
    );
}

#[test]
fn untar_round_trips_an_artifact() {
    let tmp = tempfile::tempdir().unwrap();
    sample_tree(tmp.path());
    let (gz, _) = archive(tmp.path(), &defaults());
    let out = tempfile::tempdir().unwrap();
    let summary = untar_gz(gz.as_slice(), out.path(), &UntarLimits::default()).unwrap();
    assert_eq!(summary.files, 5);
    assert_eq!(summary.dirs, 3);
    assert_eq!(
        fs::read_to_string(out.path().join("deploy/app.yaml")).unwrap(),
        "kind: Deployment\n"
    );
    let mode = fs::metadata(out.path().join("run.sh"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o700);
    assert!(!out.path().join("link.txt").exists());
}

/// A gzip'd tar of raw blocks: each entry is (header block, data).
fn evil(entries: &[([u8; 512], Vec<u8>)]) -> Vec<u8> {
    let mut b = tar::Builder::new(GzEncoder::new(Vec::new(), Compression::fast()));
    for (h, data) in entries {
        b.append(&header(*h), data.as_slice()).unwrap();
    }
    b.into_inner().unwrap().finish().unwrap()
}

fn file_block(name: &str, size: u64) -> [u8; 512] {
    main_block(name.as_bytes(), b"", false, 0o644, size)
}

fn typed_block(name: &str, flag: u8, link: &str) -> [u8; 512] {
    let mut b = main_block(name.as_bytes(), b"", false, 0o777, 0);
    b[TYPEFLAG] = flag;
    put_str(&mut b, (157, 257), link.as_bytes());
    finish_block(&mut b);
    b
}

fn untar_err(gz: &[u8], limits: &UntarLimits) -> (UntarError, tempfile::TempDir) {
    let parent = tempfile::tempdir().unwrap();
    let dest = parent.path().join("dest");
    let err = untar_gz(gz, &dest, limits).unwrap_err();
    (err, parent)
}

#[test]
fn untar_rejects_paths_leaving_the_destination() {
    for name in [
        "../evil.txt",
        "a/../../evil.txt",
        "/tmp/evil.txt",
        "./../evil.txt",
    ] {
        let gz = evil(&[(file_block(name, 4), b"evil".to_vec())]);
        let (err, parent) = untar_err(&gz, &UntarLimits::default());
        assert_eq!(
            err.to_string(),
            format!("tar contained invalid name '{name}'")
        );
        assert!(!parent.path().join("evil.txt").exists());
    }
}

#[test]
fn untar_refuses_or_skips_links_and_never_creates_one() {
    let gz = evil(&[
        (typed_block("up", b'2', "../../etc"), vec![]),
        (typed_block("hard", b'1', "/etc/passwd"), vec![]),
        (file_block("up/passwd", 4), b"evil".to_vec()),
    ]);
    let (err, _parent) = untar_err(&gz, &UntarLimits::default());
    assert!(matches!(err, UntarError::Link(ref n) if n == "up"), "{err}");

    let out = tempfile::tempdir().unwrap();
    let skip = UntarLimits {
        skip_links: true,
        ..UntarLimits::default()
    };
    let summary = untar_gz(gz.as_slice(), out.path(), &skip).unwrap();
    assert_eq!(summary.skipped_links, 2);
    // `up` was skipped, so `up/passwd` is a plain directory and file inside dest.
    let up = fs::symlink_metadata(out.path().join("up")).unwrap();
    assert!(up.is_dir());
}

#[test]
fn untar_never_writes_through_a_symlink_already_in_dest() {
    let outside = tempfile::tempdir().unwrap();
    let dest = tempfile::tempdir().unwrap();
    symlink(outside.path(), dest.path().join("sub")).unwrap();
    symlink(outside.path().join("f"), dest.path().join("f")).unwrap();
    for name in ["sub/evil.txt", "f"] {
        let gz = evil(&[(file_block(name, 4), b"evil".to_vec())]);
        let err = untar_gz(gz.as_slice(), dest.path(), &UntarLimits::default()).unwrap_err();
        assert!(matches!(err, UntarError::UnsafePath(_)), "{name}: {err}");
    }
    assert_eq!(fs::read_dir(outside.path()).unwrap().count(), 0);
}

#[test]
fn untar_rejects_devices_and_fifos() {
    for (flag, kind) in [(b'3', "Char"), (b'4', "Block"), (b'6', "Fifo")] {
        let gz = evil(&[(typed_block("dev", flag, ""), vec![])]);
        let (err, _p) = untar_err(&gz, &UntarLimits::default());
        assert_eq!(
            err.to_string(),
            format!("tar entry 'dev' has unsupported type {kind}")
        );
    }
}

#[test]
fn untar_enforces_file_total_and_entry_limits() {
    let limits = UntarLimits {
        max_total_size: 1000,
        max_file_size: 100,
        max_entries: 5,
        skip_links: false,
    };
    let gz = evil(&[(file_block("big", 200), vec![b'x'; 200])]);
    let (err, _p) = untar_err(&gz, &limits);
    assert_eq!(
        err.to_string(),
        "tar entry 'big' is 200 bytes, over the limit of 100 bytes"
    );

    let many: Vec<_> = (0..11)
        .map(|i| (file_block(&format!("f{i}"), 100), vec![b'x'; 100]))
        .collect();
    let (err, _p) = untar_err(&evil(&many[..10]), &limits);
    assert!(
        matches!(err, UntarError::TooManyEntries { limit: 5 }),
        "{err}"
    );
    let generous = UntarLimits {
        max_entries: 100,
        ..limits.clone()
    };
    let (err, _p) = untar_err(&evil(&many), &generous);
    assert!(
        matches!(err, UntarError::TotalTooLarge { limit: 1000 }),
        "{err}"
    );
}

/// A gzip bomb: 64 MiB of zeros in one entry compresses to kilobytes; the header's size stops
/// it before a byte is written. A PAX header whose records are the bomb is stopped by the cap on
/// decompression (the tar reader would buffer it whole).
#[test]
fn untar_stops_a_gzip_bomb() {
    let size: u64 = 64 << 20;
    let limits = UntarLimits {
        max_total_size: 1 << 20,
        max_file_size: 1 << 20,
        max_entries: 10,
        skip_links: false,
    };
    let bomb = |flag: u8| {
        let mut b = tar::Builder::new(GzEncoder::new(Vec::new(), Compression::fast()));
        let mut h = file_block("bomb", size);
        h[TYPEFLAG] = flag;
        finish_block(&mut h);
        b.append(&header(h), io::repeat(0).take(size)).unwrap();
        b.append(&header(file_block("after", 1)), b"x".as_slice())
            .unwrap();
        b.into_inner().unwrap().finish().unwrap()
    };
    let gz = bomb(b'0');
    assert!(gz.len() < 1 << 20, "{}", gz.len());
    let (err, parent) = untar_err(&gz, &limits);
    assert!(
        matches!(err, UntarError::TotalTooLarge { limit } if limit == 1 << 20),
        "{err}"
    );
    assert!(!parent.path().join("dest/bomb").exists());
    let (err, _p) = untar_err(&bomb(b'x'), &limits);
    assert!(
        matches!(err, UntarError::TotalTooLarge { limit } if limit == 1 << 20),
        "{err}"
    );

    // Zeros after a tiny archive: past the end-of-archive blocks nothing more is read.
    let mut raw = vec![];
    {
        let mut t = tar::Builder::new(&mut raw);
        t.append(&header(file_block("ok", 2)), b"ok".as_slice())
            .unwrap();
        t.finish().unwrap();
    }
    let mut enc = GzEncoder::new(Vec::new(), Compression::fast());
    enc.write_all(&raw).unwrap();
    io::copy(&mut io::repeat(0).take(size), &mut enc).unwrap();
    let gz = enc.finish().unwrap();
    let out = tempfile::tempdir().unwrap();
    let s = untar_gz(gz.as_slice(), out.path(), &limits).unwrap();
    assert_eq!(s.files, 1);
}

#[test]
fn untar_rejects_garbage() {
    let (err, _p) = untar_err(b"not gzip at all", &UntarLimits::default());
    assert!(matches!(err, UntarError::Read(_)), "{err}");
}

/// The trees of the comparison with Flux: `with_sourceignore` adds `sub/.sourceignore`.
fn flux_comparison_tree(root: &Path, with_sourceignore: bool) {
    sample_tree(root);
    fs::create_dir(root.join("emptydir")).unwrap();
    write(root, &format!("{}/file.yaml", "d".repeat(120)), "u");
    write(root, &format!("{}.yaml", "e".repeat(120)), "l");
    write(root, "ünïcode.yaml", "p");
    write(root, "x.tmp", "t");
    write(root, "sub/inner.yaml", "i");
    write(root, "sub/outer.yaml", "o");
    write(root, "big.txt", &"z".repeat(3000));
    if with_sourceignore {
        write(root, "sub/.sourceignore", "inner.yaml\n");
    }
}

/// The uncompressed tar stream is byte for byte the one Flux's `storage.Archive`
/// (`fluxcd/pkg/artifact` v0.18.0, Go 1.26, with source-controller's `SourceIgnoreFilter`) wrote
/// for the same trees: the sha256 below are of `zcat` of Flux's artifacts. Covered: the `.` root,
/// sorting, skipped symlinks, exe and plain modes, an empty directory, the USTAR prefix split, a
/// PAX `path` for a 125-byte and a non-ASCII name, the defaults (tree A), and a nested
/// `.sourceignore` with `spec.ignore` that drops a directory entry but keeps a re-included
/// subdirectory (tree B). The gzip bytes differ (Go's deflate is not flate2's). How to recompute:
/// `tests/fixtures/flux_archive/README.md`.
#[test]
fn tar_stream_is_byte_identical_to_fluxs() {
    let cases = [
        (
            false,
            None,
            "dff3c6093638eef0ae60b83f5c7a228c083f3f1ea06b336b8c7ee76d483666af",
        ),
        (
            true,
            Some("*.tmp\ndeploy/\n!deploy/base/"),
            "94a3c55bc7c0abf9de8ea001597e0e66a6c7562ea897eced404c184792e75b6b",
        ),
    ];
    for (with_sourceignore, spec, want) in cases {
        let tmp = tempfile::tempdir().unwrap();
        flux_comparison_tree(tmp.path(), with_sourceignore);
        let rules = IgnoreRules::load(tmp.path(), spec).unwrap();
        let tar_bytes = gunzip(&archive(tmp.path(), &rules).0);
        let got = sha256_digest(tar_bytes.as_slice()).unwrap();
        if got != format!("sha256:{want}") {
            let dump = std::env::temp_dir().join(format!("pennant-{with_sourceignore}.tar"));
            fs::write(&dump, &tar_bytes).unwrap();
            panic!(
                "tar stream differs from Flux's (ours in {})",
                dump.display()
            );
        }
    }
}

#[test]
fn untar_reads_plain_tar_streams_with_the_same_checks() {
    let mut raw = vec![];
    {
        let mut t = tar::Builder::new(&mut raw);
        t.append(&header(file_block("layer/ok.yaml", 2)), b"ok".as_slice())
            .unwrap();
        t.finish().unwrap();
    }
    let out = tempfile::tempdir().unwrap();
    let s = untar(raw.as_slice(), out.path(), &UntarLimits::default()).unwrap();
    assert_eq!(s.files, 1);
    assert_eq!(fs::read(out.path().join("layer/ok.yaml")).unwrap(), b"ok");
    let mut evil_raw = vec![];
    {
        let mut t = tar::Builder::new(&mut evil_raw);
        t.append(&header(file_block("../x", 1)), b"x".as_slice())
            .unwrap();
        t.finish().unwrap();
    }
    let err = untar(evil_raw.as_slice(), out.path(), &UntarLimits::default()).unwrap_err();
    assert!(matches!(err, UntarError::UnsafePath(_)), "{err}");
}
