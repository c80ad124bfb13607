//! Who may act from the dashboard: the caller's bearer token is authenticated by the API server
//! (a `TokenReview`, authentication.k8s.io/v1), and the user it names must be allowed to
//! `patch` the object (a `SubjectAccessReview`, authorization.k8s.io/v1), as `kubectl
//! annotate` would need. The same two reviews the API server's delegated authentication and
//! authorization use (`kube-rbac-proxy`, aggregated API servers). The token is never logged.

use std::collections::BTreeMap;

use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec, UserInfo};
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
};
use kube::api::PostParams;
use kube::{Api, Client};

/// The object an action patches, as RBAC names it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    /// API group: `flagger.app`, `kustomize.toolkit.fluxcd.io`, `helm.toolkit.fluxcd.io`.
    pub group: &'static str,
    /// Plural resource: `canaries`, `kustomizations`, `helmreleases`.
    pub resource: &'static str,
    pub namespace: String,
    pub name: String,
}

/// The token of an `Authorization: Bearer <token>` header value (scheme any case); `None`
/// for another scheme or an empty token.
pub fn bearer(header: Option<&str>) -> Option<&str> {
    let (scheme, token) = header?.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// The `TokenReview` asking the API server who `token` is.
pub fn token_review(token: &str) -> TokenReview {
    TokenReview {
        spec: TokenReviewSpec {
            token: token.to_string(),
            audiences: None,
        },
        ..Default::default()
    }
}

/// The `SubjectAccessReview` asking whether `user` may `patch` `target`.
pub fn access_review(user: &UserInfo, target: &Target) -> SubjectAccessReview {
    let extra = user.extra.as_ref().map(|e| {
        e.iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect::<BTreeMap<_, _>>()
    });
    SubjectAccessReview {
        spec: SubjectAccessReviewSpec {
            user: user.username.clone(),
            groups: user.groups.clone(),
            uid: user.uid.clone(),
            extra,
            resource_attributes: Some(ResourceAttributes {
                group: Some(target.group.to_string()),
                resource: Some(target.resource.to_string()),
                namespace: Some(target.namespace.clone()),
                name: Some(target.name.clone()),
                verb: Some("patch".into()),
                ..Default::default()
            }),
            ..Default::default()
        },
        ..Default::default()
    }
}

/// Why an action was refused (the dashboard answers 403 with this text).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Denied {
    #[error("no bearer token: send Authorization: Bearer <token>")]
    NoToken,
    #[error("the token was not accepted by the API server")]
    NotAuthenticated,
    #[error("{user} may not patch {resource} {namespace}/{name}{why}")]
    NotAllowed {
        user: String,
        resource: &'static str,
        namespace: String,
        name: String,
        why: String,
    },
    /// A review could not be made (the controller's own RBAC, the API unreachable).
    #[error("the access review failed: {0}")]
    ReviewFailed(String),
}

/// Authenticates the `Authorization` header value and authorizes `patch` on `target`: the
/// user's name, or why not.
pub async fn authorize(
    client: &Client,
    authorization: Option<&str>,
    target: &Target,
) -> Result<String, Denied> {
    let token = bearer(authorization).ok_or(Denied::NoToken)?;
    let reviews: Api<TokenReview> = Api::all(client.clone());
    let review = reviews
        .create(&PostParams::default(), &token_review(token))
        .await
        .map_err(|e| Denied::ReviewFailed(e.to_string()))?;
    let status = review.status.unwrap_or_default();
    let user = match (status.authenticated, status.user) {
        (Some(true), Some(u)) => u,
        _ => return Err(Denied::NotAuthenticated),
    };
    let sars: Api<SubjectAccessReview> = Api::all(client.clone());
    let answer = sars
        .create(&PostParams::default(), &access_review(&user, target))
        .await
        .map_err(|e| Denied::ReviewFailed(e.to_string()))?;
    let name = user.username.clone().unwrap_or_default();
    match answer.status {
        Some(s) if s.allowed => Ok(name),
        s => Err(Denied::NotAllowed {
            user: name,
            resource: target.resource,
            namespace: target.namespace.clone(),
            name: target.name.clone(),
            why: s
                .and_then(|s| s.reason)
                .filter(|r| !r.is_empty())
                .map(|r| format!(": {r}"))
                .unwrap_or_default(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_tokens_are_read_from_the_header() {
        assert_eq!(bearer(Some("Bearer abc.def")), Some("abc.def"));
        assert_eq!(bearer(Some("bearer  abc ")), Some("abc"));
        assert_eq!(bearer(Some("Basic dXNlcjpw")), None);
        assert_eq!(bearer(Some("Bearer ")), None);
        assert_eq!(bearer(Some("Bearer")), None);
        assert_eq!(bearer(None), None);
    }

    #[test]
    fn the_access_review_asks_for_patch_on_the_one_object_as_the_user() {
        let user = UserInfo {
            username: Some("system:serviceaccount:ui-1:deployer".into()),
            groups: Some(vec!["system:serviceaccounts".into()]),
            uid: Some("u-1".into()),
            extra: None,
        };
        let t = Target {
            group: "flagger.app",
            resource: "canaries",
            namespace: "ui-1".into(),
            name: "podinfo".into(),
        };
        let sar = serde_json::to_value(access_review(&user, &t)).unwrap();
        assert_eq!(
            sar["spec"],
            serde_json::json!({
                "user": "system:serviceaccount:ui-1:deployer",
                "groups": ["system:serviceaccounts"],
                "uid": "u-1",
                "resourceAttributes": {"group": "flagger.app", "resource": "canaries",
                    "namespace": "ui-1", "name": "podinfo", "verb": "patch"}
            })
        );
        let tr = serde_json::to_value(token_review("t0k")).unwrap();
        assert_eq!(tr["spec"], serde_json::json!({"token": "t0k"}));
    }

    #[test]
    fn refusals_name_the_user_and_object_never_the_token() {
        let d = Denied::NotAllowed {
            user: "alice".into(),
            resource: "canaries",
            namespace: "ns".into(),
            name: "web".into(),
            why: String::new(),
        };
        assert_eq!(d.to_string(), "alice may not patch canaries ns/web");
    }
}
