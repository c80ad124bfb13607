//! What a source shard does with the artifacts of an object that left it (relabelled out of
//! `--watch-label-selector`, Flux's `sharding.fluxcd.io/key`), fixing Flux's
//! source-controller#2150: there, the old shard serves the file forever (a consumer keeps
//! running off a stale artifact) until it restarts and the file, on an `emptyDir`, is gone.
//!
//! pennant's rule, one per storage directory `<kind>/<ns>/<name>` this shard no longer owns:
//! - the watch's delete event drops the object from the cache, so no queued reconcile, no
//!   finalizer and no GC of this shard touches it again ([`kind::watch_counted`]);
//! - the files stay served for a grace period (`--artifact-retention-ttl`, as an old artifact
//!   of Flux's GC), so consumers reading `status.artifact.url` while the new shard takes over do
//!   not see a 404;
//! - after it the object is read from the API ([`departure`]): gone, or its artifact URL now
//!   names another server (the new shard rebuilt it; it never reuses our file: see
//!   `kept_artifact`), the directory is removed; back in this shard, kept; still naming this
//!   shard's address (no shard took it: a typo in the label) it stays served, a Warning says
//!   so on the object (`ShardOrphaned`, once), and the check repeats.
//! - at start, every storage directory whose object is not this shard's goes through the same
//!   check ([`sweep`]): a shard restarted on a persistent volume does not serve what it gave
//!   away, and a shard on an `emptyDir` rebuilds its own objects' artifacts (`kept_artifact`
//!   finds no file).
//!
//! [`kind::watch_counted`]: super::kind::watch_counted

use std::time::Duration;

use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, ListParams};
use kube::{Client, ResourceExt};
use tracing::{info, warn};

use crate::source::storage::Storage;

/// An object whose storage directory this shard holds, named as in storage.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Departed {
    /// The Rust kind name (`GitRepository`, ... , `ArtifactGenerator`).
    pub kind: String,
    pub namespace: String,
    pub name: String,
}

/// What the API says of a departed object, as [`departure`] reads it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Seen {
    /// The object exists.
    pub exists: bool,
    /// It matches this shard's selector again.
    pub ours: bool,
    /// The artifact URLs consumers read for it (`status.artifact.url`; a generator's
    /// ExternalArtifacts').
    pub urls: Vec<String>,
}

/// What to do with a departed object's files.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Departure {
    /// Back in this shard (or never left): its reconciles own the files again.
    Keep,
    /// Nobody reads them from here any more: remove the directory.
    Remove,
    /// Consumers still read them from here and no shard took the object: keep serving, warn,
    /// look again later.
    Orphaned,
}

/// The pure rule (module docs): `own_prefix` is this shard's artifact URL prefix
/// (`Storage::url_for("")`).
pub fn departure(seen: &Seen, own_prefix: &str) -> Departure {
    if !seen.exists {
        Departure::Remove
    } else if seen.ours {
        Departure::Keep
    } else if seen.urls.iter().any(|u| u.starts_with(own_prefix)) {
        Departure::Orphaned
    } else {
        Departure::Remove
    }
}

fn resource(kind: &str) -> Option<ApiResource> {
    let (group, version, plural) = match kind {
        "GitRepository" => (crate::api::source::GROUP, "v1", "gitrepositories"),
        "OCIRepository" => (crate::api::source::GROUP, "v1", "ocirepositories"),
        "HelmRepository" => (crate::api::source::GROUP, "v1", "helmrepositories"),
        "HelmChart" => (crate::api::source::GROUP, "v1", "helmcharts"),
        "ExternalArtifact" => (crate::api::source::GROUP, "v1", "externalartifacts"),
        "ArtifactGenerator" => (
            crate::api::source::EXTENSIONS_GROUP,
            "v1beta1",
            "artifactgenerators",
        ),
        _ => return None,
    };
    Some(ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk(group, version, kind),
        plural,
    ))
}

/// The storage directory's kind (lower case) as the Rust kind name.
fn kind_of_dir(dir: &str) -> Option<&'static str> {
    [
        "GitRepository",
        "OCIRepository",
        "HelmRepository",
        "HelmChart",
        "ArtifactGenerator",
    ]
    .into_iter()
    .find(|k| k.to_lowercase() == dir)
}

/// Reads what [`departure`] needs from the API (not the shard's filtered cache).
async fn see(client: &Client, selector: Option<&str>, d: &Departed) -> Result<Seen, kube::Error> {
    let Some(ar) = resource(&d.kind) else {
        return Ok(Seen::default());
    };
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), &d.namespace, &ar);
    let Some(obj) = api.get_opt(&d.name).await? else {
        return Ok(Seen::default());
    };
    let ours = match selector {
        None => true,
        Some(sel) => {
            let lp = ListParams::default()
                .labels(sel)
                .fields(&format!("metadata.name={}", d.name));
            !api.list_metadata(&lp).await?.items.is_empty()
        }
    };
    let url = |o: &DynamicObject| {
        o.data["status"]["artifact"]["url"]
            .as_str()
            .map(str::to_string)
    };
    let urls = if d.kind == "ArtifactGenerator" {
        let ea = resource("ExternalArtifact").expect("known");
        let eas: Api<DynamicObject> = Api::namespaced_with(client.clone(), &d.namespace, &ea);
        let uid = obj.uid().unwrap_or_default();
        let lp =
            ListParams::default().labels(&format!("{}={uid}", crate::api::source::GENERATOR_LABEL));
        eas.list(&lp).await?.items.iter().filter_map(url).collect()
    } else {
        url(&obj).into_iter().collect()
    };
    Ok(Seen {
        exists: true,
        ours,
        urls,
    })
}

/// Follows one departed object until its files are removed or it is back (module docs):
/// first after `grace`, then every `grace` (at least 10 s) while orphaned.
pub async fn follow(
    client: Client,
    storage: Storage,
    selector: Option<String>,
    grace: Duration,
    d: Departed,
    shutdown: crate::runtime::Shutdown,
) {
    let own_prefix = storage.url_for("");
    let mut warned = false;
    let mut wait = grace;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = shutdown.signalled() => return,
        }
        wait = grace.max(Duration::from_secs(10));
        let seen = match see(&client, selector.as_deref(), &d).await {
            Ok(s) => s,
            Err(e) => {
                warn!(kind = %d.kind, namespace = %d.namespace, name = %d.name, "shard hand-over: {e}");
                continue;
            }
        };
        match departure(&seen, &own_prefix) {
            Departure::Keep => return,
            Departure::Remove => {
                let (st, d2) = (storage.clone(), d.clone());
                let r = tokio::task::spawn_blocking(move || {
                    st.remove_all(&d2.kind, &d2.namespace, &d2.name)
                })
                .await;
                match r {
                    Ok(Ok(_)) => info!(
                        kind = %d.kind, namespace = %d.namespace, name = %d.name,
                        "left this shard: artifacts removed (no consumer reads them from here)"
                    ),
                    Ok(Err(e)) => warn!(kind = %d.kind, name = %d.name, "shard hand-over: {e}"),
                    Err(e) => warn!(kind = %d.kind, name = %d.name, "shard hand-over: {e}"),
                }
                return;
            }
            Departure::Orphaned => {
                if !warned {
                    warned = true;
                    orphaned_event(&client, &d, selector.as_deref()).await;
                }
            }
        }
    }
}

/// The `ShardOrphaned` Warning on the object (and in the log, and to the notification
/// controller's Alerts, as every source Event).
async fn orphaned_event(client: &Client, d: &Departed, selector: Option<&str>) {
    use crate::api::source::{
        ArtifactGenerator, GitRepository, HelmChart, HelmRepository, OCIRepository,
    };
    let message = format!(
        "{} {}/{} left the shard selecting '{}' but no shard took it over: its last artifact \
         is still served from here; check its sharding.fluxcd.io/key label",
        d.kind,
        d.namespace,
        d.name,
        selector.unwrap_or("")
    );
    let note = super::Notice {
        warning: true,
        reason: "ShardOrphaned".into(),
        message,
        annotations: Default::default(),
    };
    let instance = std::env::var("POD_NAME")
        .or_else(|_| std::env::var("HOSTNAME"))
        .unwrap_or_else(|_| "pennant".into());
    async fn on<K: super::Kind + kube::Resource<Scope = kube::core::NamespaceResourceScope>>(
        client: &Client,
        d: &Departed,
        note: &super::Notice,
        instance: &str,
    ) {
        let api: Api<K> = Api::namespaced(client.clone(), &d.namespace);
        match api.get_opt(&d.name).await {
            Ok(Some(obj)) => super::emit_event(&obj, note, client, instance).await,
            _ => warn!(kind = %d.kind, name = %d.name, "{}", note.message),
        }
    }
    match d.kind.as_str() {
        "GitRepository" => on::<GitRepository>(client, d, &note, &instance).await,
        "OCIRepository" => on::<OCIRepository>(client, d, &note, &instance).await,
        "HelmRepository" => on::<HelmRepository>(client, d, &note, &instance).await,
        "HelmChart" => on::<HelmChart>(client, d, &note, &instance).await,
        "ArtifactGenerator" => on::<ArtifactGenerator>(client, d, &note, &instance).await,
        _ => warn!(kind = %d.kind, name = %d.name, "{}", note.message),
    }
}

/// The storage directories `<kind>/<ns>/<name>` under `storage`'s root.
pub fn stored(storage: &Storage) -> Vec<Departed> {
    let mut out = vec![];
    let read = |p: &std::path::Path| -> Vec<String> {
        std::fs::read_dir(p)
            .map(|it| {
                it.flatten()
                    .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                    .filter_map(|e| e.file_name().into_string().ok())
                    .collect()
            })
            .unwrap_or_default()
    };
    for k in read(&storage.root) {
        let Some(kind) = kind_of_dir(&k) else {
            continue;
        };
        for ns in read(&storage.root.join(&k)) {
            for name in read(&storage.root.join(&k).join(&ns)) {
                out.push(Departed {
                    kind: kind.to_string(),
                    namespace: ns.clone(),
                    name,
                });
            }
        }
    }
    out
}

/// At start (caches listed): every stored object that is not this shard's is followed as a
/// departure (module docs). Without a selector there is nothing to hand over.
pub async fn sweep(
    client: Client,
    storage: Storage,
    selector: Option<String>,
    grace: Duration,
    shutdown: crate::runtime::Shutdown,
) {
    let Some(sel) = selector else { return };
    let dirs = {
        let st = storage.clone();
        tokio::task::spawn_blocking(move || stored(&st))
            .await
            .unwrap_or_default()
    };
    for d in dirs {
        match see(&client, Some(&sel), &d).await {
            Ok(s) if s.exists && s.ours => continue,
            Ok(_) => {}
            Err(e) => {
                warn!(kind = %d.kind, name = %d.name, "shard sweep: {e}");
                continue;
            }
        }
        tokio::spawn(follow(
            client.clone(),
            storage.clone(),
            Some(sel.clone()),
            grace,
            d,
            shutdown.clone(),
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_departed_objects_files_go_only_once_no_consumer_reads_them_here() {
        let own = "http://pennant-shard1.flux-system.svc.cluster.local.:8080/";
        let mine = format!("{own}gitrepository/apps/podinfo/abc.tar.gz");
        let theirs = "http://pennant-shard2.flux-system.svc.cluster.local.:8080/gitrepository/apps/podinfo/abc.tar.gz";
        let seen = |exists, ours, urls: &[&str]| Seen {
            exists,
            ours,
            urls: urls.iter().map(|u| u.to_string()).collect(),
        };
        for (case, s, want) in [
            ("deleted", seen(false, false, &[]), Departure::Remove),
            ("moved back", seen(true, true, &[&mine]), Departure::Keep),
            (
                "taken over",
                seen(true, false, &[theirs]),
                Departure::Remove,
            ),
            ("no artifact", seen(true, false, &[]), Departure::Remove),
            (
                "nobody took it",
                seen(true, false, &[&mine]),
                Departure::Orphaned,
            ),
            (
                "a generator with one artifact still here",
                seen(true, false, &[theirs, &mine]),
                Departure::Orphaned,
            ),
        ] {
            assert_eq!(departure(&s, own), want, "{case}");
        }
    }

    #[test]
    fn storage_dirs_name_their_objects() {
        let dir = tempfile::tempdir().unwrap();
        let st = Storage::new(dir.path(), "x:1", Default::default());
        for p in [
            "gitrepository/apps/podinfo/a.tar.gz",
            "helmchart/apps/app-chart/a.tgz",
            "artifactgenerator/ns/gen/x.tar.gz",
            "bucket/apps/b/x.tar.gz",
        ] {
            let f = dir.path().join(p);
            std::fs::create_dir_all(f.parent().unwrap()).unwrap();
            std::fs::write(f, b"x").unwrap();
        }
        let mut got: Vec<_> = stored(&st)
            .into_iter()
            .map(|d| format!("{}/{}/{}", d.kind, d.namespace, d.name))
            .collect();
        got.sort();
        assert_eq!(
            got,
            [
                "ArtifactGenerator/ns/gen",
                "GitRepository/apps/podinfo",
                "HelmChart/apps/app-chart"
            ],
            "kinds this controller does not serve are left alone"
        );
    }
}
