//! The writes every GitOps controller makes to its own objects: the `/status` merge patch (sent
//! only when the status changed) and resourceVersion-guarded JSON patches of the metadata (the
//! finalizer). Thin I/O over [`status_patch`], which is pure.

use kube::api::{Patch, PatchParams};
use kube::{Api, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

/// The merge patch taking `/status` from `old` to `new`: `new`'s top-level fields, and `null`
/// for each field `old` had and `new` lacks (a merge patch keeps what it does not name). PURE.
pub fn status_patch<S: Serialize>(old: &S, new: &S) -> Value {
    let mut st = serde_json::to_value(new)
        .unwrap_or_default()
        .as_object()
        .cloned()
        .unwrap_or_default();
    if let Value::Object(o) = serde_json::to_value(old).unwrap_or_default() {
        for k in o.keys() {
            st.entry(k.clone()).or_insert(Value::Null);
        }
    }
    json!({ "status": st })
}

/// Merge-patch the `/status` of the object `name` when `status` differs from `old` (no write
/// otherwise), as `field_manager`.
pub async fn write_status<K, S>(
    api: &Api<K>,
    name: &str,
    old: &S,
    status: &S,
    field_manager: &str,
) -> Result<(), kube::Error>
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug,
    S: Serialize + PartialEq,
{
    if status == old {
        return Ok(());
    }
    let pp = PatchParams {
        field_manager: Some(field_manager.into()),
        ..Default::default()
    };
    api.patch_status(name, &pp, &Patch::Merge(&status_patch(old, status)))
        .await?;
    Ok(())
}

/// Apply the JSON-patch operation `op` to `obj`, guarded by a `test` of its resourceVersion
/// (a concurrent change fails the patch instead of being overwritten).
pub async fn patch_json<K>(
    api: &Api<K>,
    obj: &K,
    op: Value,
    field_manager: &str,
) -> Result<K, kube::Error>
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug,
{
    let ops = json!([
        {"op": "test", "path": "/metadata/resourceVersion", "value": obj.resource_version()},
        op
    ]);
    let patch: json_patch::Patch = serde_json::from_value(ops).map_err(kube::Error::SerdeError)?;
    let pp = PatchParams {
        field_manager: Some(field_manager.into()),
        ..Default::default()
    };
    api.patch(&obj.name_any(), &pp, &Patch::<()>::Json(patch))
        .await
}

/// Remove `finalizer` from `obj`; an object or finalizer already gone is fine.
pub async fn remove_finalizer<K>(
    api: &Api<K>,
    obj: &K,
    finalizer: &str,
    field_manager: &str,
) -> Result<(), kube::Error>
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug,
{
    let Some(i) = obj.finalizers().iter().position(|f| f == finalizer) else {
        return Ok(());
    };
    let op = json!({"op": "remove", "path": format!("/metadata/finalizers/{i}")});
    match patch_json(api, obj, op, field_manager).await {
        Err(kube::Error::Api(a)) if a.code == 404 => Ok(()),
        r => r.map(|_| ()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Serialize, PartialEq)]
    struct St {
        #[serde(skip_serializing_if = "Option::is_none")]
        a: Option<i64>,
        #[serde(skip_serializing_if = "Option::is_none")]
        b: Option<String>,
    }

    #[test]
    fn a_field_gone_is_sent_as_null_and_the_others_as_they_are() {
        let old = St {
            a: Some(1),
            b: Some("x".into()),
        };
        let new = St {
            a: Some(2),
            b: None,
        };
        assert_eq!(
            status_patch(&old, &new),
            json!({"status": {"a": 2, "b": null}})
        );
        assert_eq!(status_patch(&new, &new), json!({"status": {"a": 2}}));
    }
}
