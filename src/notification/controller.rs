//! Wiring of the `notification` controller: caches of Alerts and Providers, the event loop
//! over the process's event bus, the reads its decisions need (Provider Secrets, the live
//! object's labels for `matchLabels`) and the Warning Events on Alerts. The decisions are
//! [`super::matching`]'s.

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::jiff::Timestamp;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind, PostParams};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, ResourceExt};
use tokio::sync::broadcast::error::RecvError;
use tracing::{debug, info, warn};

use super::matching::{self, Dedup, Problem};
use crate::api::notification::{Alert, Event, GROUP, Provider};
use crate::gitops::events::{self, Note, Reporter};
use crate::notify::DeliveryPolicy;
use crate::notify::flux::flux_notifier_for;

/// `source.component` of the Events on Alerts, as Flux's.
pub const EVENT_SOURCE: &str = "notification-controller";
/// Field manager of the Events pennant records on Alerts.
pub const FIELD_MANAGER: &str = "pennant";
/// Reason of a failed delivery, as Flux's.
pub const DISPATCH_FAILED: &str = "NotificationDispatchFailed";
/// Reason of an accepted Provider type or field pennant does not act on.
pub const NOT_IMPLEMENTED: &str = "NotImplemented";

/// Settings of the notification controller.
#[derive(Clone, Debug, Default)]
pub struct Settings {
    /// Retries of each delivery (the per-attempt timeout is the Provider's `spec.timeout`).
    pub policy: DeliveryPolicy,
}

struct Ctx {
    client: Client,
    http: reqwest::Client,
    alerts: Store<Alert>,
    providers: Store<Provider>,
    instance: String,
    policy: DeliveryPolicy,
    dedup: Mutex<Dedup>,
    /// Configuration warnings already recorded (Alert uid + message): reported once per
    /// process, not once per event.
    warned: Mutex<HashSet<String>>,
}

/// Consume the process's events and deliver them to the matching Alerts' Providers until the
/// process's shutdown.
pub async fn run(process: crate::runtime::Process, settings: Settings) -> anyhow::Result<()> {
    // subscribe first: events published while the caches fill wait in the bus
    let mut bus = events::subscribe();
    let client = process.client.clone();
    let scope = process.scope.clone();
    let (alerts, alert_writer) = reflector::store::<Alert>();
    let (providers, provider_writer) = reflector::store::<Provider>();
    let any = || watcher::Config::default().any_semantic();
    tokio::spawn(
        reflector::reflector(alert_writer, watcher(scope.api::<Alert>(&client), any()))
            .backoff(crate::runtime::watch_backoff())
            .for_each(|_| async {}),
    );
    tokio::spawn(
        reflector::reflector(
            provider_writer,
            watcher(scope.api::<Provider>(&client), any()),
        )
        .backoff(crate::runtime::watch_backoff())
        .for_each(|_| async {}),
    );
    let shutdown = process.shutdown.clone();
    tokio::select! {
        r = async { tokio::try_join!(alerts.wait_until_ready(), providers.wait_until_ready()) } => {
            r.map_err(|e| anyhow::anyhow!("notification caches: {e}"))?;
        }
        _ = shutdown.signalled() => return Ok(()),
    }
    process.synced();
    info!("notification controller: caches synced");
    let http = reqwest::Client::builder()
        .build()
        .map_err(|e| anyhow::anyhow!("http client: {e}"))?;
    let ctx = Arc::new(Ctx {
        client,
        http,
        alerts,
        providers,
        instance: std::env::var("POD_NAME")
            .or_else(|_| std::env::var("HOSTNAME"))
            .unwrap_or_else(|_| "pennant".into()),
        policy: settings.policy,
        dedup: Mutex::default(),
        warned: Mutex::default(),
    });
    loop {
        tokio::select! {
            _ = shutdown.signalled() => return Ok(()),
            received = bus.recv() => match received {
                Ok(event) => handle(&ctx, event).await,
                Err(RecvError::Lagged(n)) => {
                    warn!("notification controller: {n} events dropped (the bus was full)");
                }
                Err(RecvError::Closed) => return Ok(()),
            },
        }
    }
}

/// One event: de-duplicate, match every Alert, deliver in the background.
async fn handle(ctx: &Arc<Ctx>, event: Event) {
    let object = event.object_string();
    let admitted = matching::admit(
        &mut ctx.dedup.lock().unwrap_or_else(|e| e.into_inner()),
        event,
        Timestamp::now(),
    );
    let Some(event) = admitted else {
        debug!(object = %object, "notification: duplicate event dropped");
        return;
    };
    let alerts = ctx.alerts.state();
    if alerts.is_empty() {
        return;
    }
    // the live object's labels, read once and only when a `matchLabels` source could need them
    let kind = event.involved_object.kind.clone().unwrap_or_default();
    let needs_labels = alerts.iter().any(|a| {
        a.spec
            .event_sources
            .iter()
            .any(|s| s.kind == kind && !s.match_labels.is_empty())
    });
    let labels = if needs_labels {
        live_labels(&ctx.client, &event).await
    } else {
        None
    };
    for alert in alerts {
        let ns = alert.namespace().unwrap_or_default();
        let (matched, problems) =
            matching::alert_matches(&ns, &alert.spec, &event, &mut || labels.clone());
        for p in problems {
            warn_once(ctx, &alert, &p).await;
        }
        if matched {
            dispatch(ctx, &alert, &event).await;
        }
    }
}

/// Deliver `event` for `alert` to its Provider, in the background; problems become Warning
/// Events on the Alert.
async fn dispatch(ctx: &Arc<Ctx>, alert: &Arc<Alert>, event: &Event) {
    let ns = alert.namespace().unwrap_or_default();
    let provider_name = alert.spec.provider_ref.name.clone();
    let provider_id = format!("Provider {ns}/{provider_name}");
    let Some(provider) = ctx
        .providers
        .get(&ObjectRef::new(&provider_name).within(&ns))
    else {
        let message = format!(
            "failed to dispatch notification for {}: {provider_id} does not exist",
            event.object_string()
        );
        record(ctx, alert, DISPATCH_FAILED, &message).await;
        return;
    };
    if provider.spec.suspended() {
        return;
    }
    if !provider.spec.implemented() {
        let p = Problem {
            reason: NOT_IMPLEMENTED,
            message: format!(
                "{provider_id} has type {:?}, which pennant accepts but does not deliver to",
                provider.spec.type_
            ),
        };
        warn_once(ctx, alert, &p).await;
        return;
    }
    for field in provider.spec.unimplemented_fields() {
        let p = Problem {
            reason: NOT_IMPLEMENTED,
            message: format!("{provider_id} sets {field}, which pennant accepts but ignores"),
        };
        warn_once(ctx, alert, &p).await;
    }
    if !matching::provider_wants(&provider.spec.type_, event) {
        return;
    }
    let (metadata, conflict) = matching::combine_metadata(event, &alert.spec);
    if let Some(p) = conflict {
        warn_once(ctx, alert, &p).await;
    }
    let mut notification = event.clone();
    notification.metadata = metadata;
    // a Secret that does not exist is `None` for the notifier, which names it
    let secret = match &provider.spec.secret_ref {
        Some(r) => match Api::<Secret>::namespaced(ctx.client.clone(), &ns)
            .get_opt(&r.name)
            .await
        {
            Ok(s) => s.map(|s| s.data.unwrap_or_default()),
            Err(e) => {
                let message = format!(
                    "failed to dispatch notification for {}: {provider_id}: reading its Secret: {e}",
                    event.object_string()
                );
                record(ctx, alert, DISPATCH_FAILED, &message).await;
                return;
            }
        },
        None => None,
    };
    let notifier = match flux_notifier_for(&provider, secret.as_ref(), &ctx.http, &ctx.policy) {
        Ok(n) => n,
        Err(e) => {
            let message = format!(
                "failed to dispatch notification for {}: {e}",
                event.object_string()
            );
            record(ctx, alert, DISPATCH_FAILED, &message).await;
            return;
        }
    };
    let (ctx, alert) = (ctx.clone(), alert.clone());
    tokio::spawn(async move {
        match notifier.post(&notification).await {
            Ok(true) => debug!(
                object = %notification.object_string(),
                provider = %notifier.describe(),
                "notification sent"
            ),
            Ok(false) => debug!(
                object = %notification.object_string(),
                provider = %notifier.describe(),
                "nothing to send for this event"
            ),
            Err(e) => {
                let message = format!(
                    "failed to dispatch notification for {} to {provider_id}: {e}",
                    notification.object_string()
                );
                record(&ctx, &alert, DISPATCH_FAILED, &message).await;
            }
        }
    });
}

/// The labels of the event's live object (`None` when it cannot be read).
async fn live_labels(client: &Client, event: &Event) -> Option<BTreeMap<String, String>> {
    let o = &event.involved_object;
    let (group, version) = match o.api_version.as_deref()?.rsplit_once('/') {
        Some((g, v)) => (g.to_string(), v.to_string()),
        None => (String::new(), o.api_version.clone()?),
    };
    let gvk = GroupVersionKind::gvk(&group, &version, o.kind.as_deref()?);
    let ar = ApiResource::from_gvk(&gvk);
    let api: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), o.namespace.as_deref()?, &ar);
    match api.get_metadata_opt(o.name.as_deref()?).await {
        Ok(Some(m)) => Some(m.metadata.labels.unwrap_or_default()),
        Ok(None) => None,
        Err(e) => {
            warn!(object = %event.object_string(), "notification: reading labels: {e}");
            None
        }
    }
}

/// Record `p` on `alert` once per process (configuration problems repeat with every event).
async fn warn_once(ctx: &Ctx, alert: &Alert, p: &Problem) {
    let key = format!("{}/{}", alert.uid().unwrap_or_default(), p.message);
    let first = ctx
        .warned
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(key);
    if first {
        record(ctx, alert, p.reason, &p.message).await;
    }
}

/// A Warning Event on `alert` (Flux's recorder shape, `source.component:
/// notification-controller`), also logged. Not published on the bus: notifications about
/// notifications would loop.
async fn record(ctx: &Ctx, alert: &Alert, reason: &str, message: &str) {
    warn!(alert = %alert.name_any(), reason, "{message}");
    let empty = BTreeMap::new();
    let note = Note {
        warning: true,
        reason,
        message,
        annotations: &empty,
    };
    let reporter = Reporter {
        component: EVENT_SOURCE,
        reporting_component: "pennant.dev/notification",
        instance: &ctx.instance,
        group: GROUP,
        field_manager: FIELD_MANAGER,
    };
    let ev = events::event(alert, &note, &reporter, Timestamp::now());
    let ns = alert.namespace().unwrap_or_default();
    let api: Api<k8s_openapi::api::core::v1::Event> = Api::namespaced(ctx.client.clone(), &ns);
    let pp = PostParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..Default::default()
    };
    if let Err(e) = api.create(&pp, &ev).await {
        warn!("event: {e}");
    }
}
