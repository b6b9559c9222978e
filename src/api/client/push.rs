//! Push rules, pushers and the notification list.

use axum::extract::State;
use http::StatusCode;
use ruma::{
    api::{
        client::push::{
            PushRule, delete_pushrule, get_notifications, get_pushers, get_pushrule,
            get_pushrule_actions, get_pushrule_enabled, get_pushrules_all,
            get_pushrules_global_scope, set_pusher, set_pushrule, set_pushrule_actions,
            set_pushrule_enabled,
        },
        error::ErrorKind,
    },
    push::{InsertPushRuleError, RemovePushRuleError, RuleKind, Ruleset},
};

use crate::{
    api::{
        AppState,
        ruma::{Ruma, RumaResponse},
    },
    error::{Error, Result},
};

/// Notifications per page when the client does not say.
const DEFAULT_NOTIFICATIONS: usize = 50;
/// Most notifications per page.
const MAX_NOTIFICATIONS: usize = 100;

fn rule_not_found(kind: &RuleKind, rule_id: &str) -> Error {
    Error::not_found(format!("There is no {kind} push rule {rule_id:?}"))
}

/// Kinds outside the spec's five are refused rather than reported missing.
fn check_kind(kind: &RuleKind) -> Result<()> {
    match kind {
        RuleKind::Override
        | RuleKind::Underride
        | RuleKind::Sender
        | RuleKind::Room
        | RuleKind::Content => Ok(()),
        other => Err(Error::invalid_param(format!(
            "Unknown push rule kind {:?}",
            other.as_str()
        ))),
    }
}

fn find(rules: &Ruleset, kind: &RuleKind, rule_id: &str) -> Result<PushRule> {
    check_kind(kind)?;
    rules
        .get(kind.clone(), rule_id)
        .map(PushRule::from)
        .ok_or_else(|| rule_not_found(kind, rule_id))
}

pub async fn all(
    State(s): State<AppState>,
    req: Ruma<get_pushrules_all::v3::Request>,
) -> Result<RumaResponse<get_pushrules_all::v3::Response>> {
    let me = req.identity()?;
    let rules = s.push.rules.get(&me.user_id)?;
    Ok(get_pushrules_all::v3::Response::new((*rules).clone()).into())
}

pub async fn global(
    State(s): State<AppState>,
    req: Ruma<get_pushrules_global_scope::v3::Request>,
) -> Result<RumaResponse<get_pushrules_global_scope::v3::Response>> {
    let me = req.identity()?;
    let rules = s.push.rules.get(&me.user_id)?;
    Ok(get_pushrules_global_scope::v3::Response::new((*rules).clone()).into())
}

pub async fn get_rule(
    State(s): State<AppState>,
    req: Ruma<get_pushrule::v3::Request>,
) -> Result<RumaResponse<get_pushrule::v3::Response>> {
    let me = req.identity()?;
    let b = &req.body;
    let rules = s.push.rules.get(&me.user_id)?;
    let rule = find(&rules, &b.kind, &b.rule_id)?;
    Ok(get_pushrule::v3::Response::new(rule).into())
}

pub async fn set_rule(
    State(s): State<AppState>,
    req: Ruma<set_pushrule::v3::Request>,
) -> Result<RumaResponse<set_pushrule::v3::Response>> {
    let me = req.identity()?;
    let b = &req.body;
    check_kind(&b.rule.kind())?;
    s.push.rules.update(&me.user_id, |rules| {
        rules
            .insert(b.rule.clone(), b.after.as_deref(), b.before.as_deref())
            .map_err(insert_error)
    })?;
    Ok(set_pushrule::v3::Response::new().into())
}

fn insert_error(e: InsertPushRuleError) -> Error {
    match e {
        InsertPushRuleError::UnknownRuleId => {
            Error::not_found("The rule named by before or after does not exist")
        }
        InsertPushRuleError::ServerDefaultRuleId => {
            Error::invalid_param("Rule ids starting with '.' are reserved for server-default rules")
        }
        InsertPushRuleError::InvalidRuleId => {
            Error::invalid_param("A rule id may not contain '/' or '\\'")
        }
        InsertPushRuleError::RelativeToServerDefaultRule => {
            Error::invalid_param("A rule cannot be placed relative to a server-default rule")
        }
        InsertPushRuleError::BeforeHigherThanAfter => {
            Error::invalid_param("The before rule has a higher priority than the after rule")
        }
        other => Error::invalid_param(other.to_string()),
    }
}

pub async fn delete_rule(
    State(s): State<AppState>,
    req: Ruma<delete_pushrule::v3::Request>,
) -> Result<RumaResponse<delete_pushrule::v3::Response>> {
    let me = req.identity()?;
    let b = &req.body;
    check_kind(&b.kind)?;
    s.push.rules.update(&me.user_id, |rules| {
        rules
            .remove(b.kind.clone(), &b.rule_id)
            .map_err(|e| match e {
                RemovePushRuleError::ServerDefault => Error::new(
                    StatusCode::BAD_REQUEST,
                    ErrorKind::InvalidParam,
                    "Server-default rules cannot be deleted; disable them instead",
                ),
                _ => rule_not_found(&b.kind, &b.rule_id),
            })
    })?;
    Ok(delete_pushrule::v3::Response::new().into())
}

pub async fn get_enabled(
    State(s): State<AppState>,
    req: Ruma<get_pushrule_enabled::v3::Request>,
) -> Result<RumaResponse<get_pushrule_enabled::v3::Response>> {
    let me = req.identity()?;
    let b = &req.body;
    let rules = s.push.rules.get(&me.user_id)?;
    let rule = find(&rules, &b.kind, &b.rule_id)?;
    Ok(get_pushrule_enabled::v3::Response::new(rule.enabled).into())
}

pub async fn set_enabled(
    State(s): State<AppState>,
    req: Ruma<set_pushrule_enabled::v3::Request>,
) -> Result<RumaResponse<set_pushrule_enabled::v3::Response>> {
    let me = req.identity()?;
    let b = &req.body;
    check_kind(&b.kind)?;
    s.push.rules.update(&me.user_id, |rules| {
        rules
            .set_enabled(b.kind.clone(), &b.rule_id, b.enabled)
            .map_err(|_| rule_not_found(&b.kind, &b.rule_id))
    })?;
    Ok(set_pushrule_enabled::v3::Response::new().into())
}

pub async fn get_actions(
    State(s): State<AppState>,
    req: Ruma<get_pushrule_actions::v3::Request>,
) -> Result<RumaResponse<get_pushrule_actions::v3::Response>> {
    let me = req.identity()?;
    let b = &req.body;
    let rules = s.push.rules.get(&me.user_id)?;
    let rule = find(&rules, &b.kind, &b.rule_id)?;
    Ok(get_pushrule_actions::v3::Response::new(rule.actions).into())
}

pub async fn set_actions(
    State(s): State<AppState>,
    req: Ruma<set_pushrule_actions::v3::Request>,
) -> Result<RumaResponse<set_pushrule_actions::v3::Response>> {
    let me = req.identity()?;
    let b = &req.body;
    check_kind(&b.kind)?;
    s.push.rules.update(&me.user_id, |rules| {
        rules
            .set_actions(b.kind.clone(), &b.rule_id, b.actions.clone())
            .map_err(|_| rule_not_found(&b.kind, &b.rule_id))
    })?;
    Ok(set_pushrule_actions::v3::Response::new().into())
}

pub async fn pushers(
    State(s): State<AppState>,
    req: Ruma<get_pushers::v3::Request>,
) -> Result<RumaResponse<get_pushers::v3::Response>> {
    let me = req.identity()?;
    let list = s.push.pushers.list(&me.user_id)?;
    let pushers = list.into_iter().map(|r| r.pusher).collect();
    Ok(get_pushers::v3::Response::new(pushers).into())
}

pub async fn set_pusher(
    State(s): State<AppState>,
    req: Ruma<set_pusher::v3::Request>,
) -> Result<RumaResponse<set_pusher::v3::Response>> {
    let me = req.identity()?;
    match &req.body.action {
        set_pusher::v3::PusherAction::Post(post) => s.push.pushers.set(
            &me.user_id,
            Some(&me.device_id),
            post.pusher.clone(),
            post.append,
        )?,
        set_pusher::v3::PusherAction::Delete(ids) => {
            s.push
                .pushers
                .delete(&me.user_id, &ids.app_id, &ids.pushkey)?
        }
        _ => return Err(Error::invalid_param("Unknown pusher action")),
    }
    Ok(set_pusher::v3::Response::new().into())
}

pub async fn notifications(
    State(s): State<AppState>,
    req: Ruma<get_notifications::v3::Request>,
) -> Result<RumaResponse<get_notifications::v3::Response>> {
    let me = req.identity()?;
    let b = &req.body;
    let limit = b
        .limit
        .map_or(DEFAULT_NOTIFICATIONS, |l| u64::from(l) as usize)
        .clamp(1, MAX_NOTIFICATIONS);
    let only_highlight = b.only.as_deref() == Some("highlight");
    let page = s.push.notifications(
        &s.rooms,
        &me.user_id,
        b.from.as_deref(),
        limit,
        only_highlight,
    )?;
    let notifications = serde_json::from_value(serde_json::Value::Array(page.notifications))?;
    let mut response = get_notifications::v3::Response::new(notifications);
    response.next_token = page.next_token;
    Ok(response.into())
}
